"""``salvo render``: render a template for one recipient and print the message."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from salvo.ext.errors import TemplateError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "render",
        help="render a template for one recipient",
        description=(
            "Render a TOML template (see docs/templates.md) with the variables of a JSON file "
            'and print the message. The JSON file is {"to": ADDRESS, "vars": {...}} or just '
            "the variables, with --to."
        ),
    )
    parser.add_argument("--template", required=True, type=Path, help="template file (TOML)")
    parser.add_argument("--vars", type=Path, help="variables file (JSON)")
    parser.add_argument("--to", help="recipient (overrides the file's 'to')")
    parser.add_argument("--message-id", help="Message-ID to use (default: a new one)")
    parser.set_defaults(func=_render)


def _render(args: argparse.Namespace) -> int:
    from salvo.core.templates import load_template

    to, variables = read_vars(args.vars, args.to)
    if not to:
        raise TemplateError("no recipient: give --to or a 'to' field in the variables file")
    template = load_template(args.template)
    sys.stdout.buffer.write(template.render(to, variables, message_id=args.message_id))
    return 0


def read_vars(path: Path | None, to: str | None) -> tuple[str | None, dict]:
    """(recipient, variables) from a variables file (``{"to": ..., "vars": {...}}`` or just
    the variables) and ``--to``, which wins."""
    data = {}
    if path is not None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise TemplateError(f"{path}: not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise TemplateError(f"{path}: expected a JSON object")
    if "to" in data or "vars" in data:
        found, variables = data.get("to"), data.get("vars", {})
    else:
        found, variables = None, data
    if not isinstance(variables, dict):
        raise TemplateError(f"{path}: 'vars' must be a JSON object")
    return to or found, variables
