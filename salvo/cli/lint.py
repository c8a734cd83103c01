"""``salvo lint``: score one rendered message with the node's spamd, as intake would."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

from salvo.ext.errors import SalvoError, TemplateError

DEFAULT_TO = "recipient@example.org"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "lint",
        help="score a template with SpamAssassin (the node's [content] spamd)",
        description=(
            "Render a TOML template (docs/templates.md) for one recipient and ask the spamd "
            "of the config's [content] section for its score. Prints the score and the "
            "rules that fired with their descriptions. Exit 0 below warn_at, 1 at or above "
            "warn_at (the verdict says whether a node would reject it), 2 on errors."
        ),
    )
    parser.add_argument("--config", required=True, type=Path, help="the node's config file")
    parser.add_argument("--template", required=True, type=Path, help="template file (TOML)")
    parser.add_argument("--vars", type=Path, help="variables file (JSON), as for render")
    parser.add_argument("--to", help=f"recipient (default: the file's 'to', or {DEFAULT_TO})")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=_lint)


def _lint(args: argparse.Namespace) -> int:
    import trio

    from salvo.actors.content import ask_spamd
    from salvo.cli.render import read_vars
    from salvo.core.config import load_config, parse_duration, parse_size
    from salvo.core.content.screen import ContentPolicy
    from salvo.core.templates import load_template

    config = load_config(args.config)
    section = config.content
    if not section.spamassassin:
        raise SalvoError(f"{args.config}: [content] spamassassin is not set: no spamd to ask")
    to, variables = read_vars(args.vars, args.to)
    template = load_template(args.template)
    try:
        message = template.render(to or DEFAULT_TO, variables, date=datetime.now(UTC))
    except TemplateError as exc:
        raise TemplateError(f"{args.template}: {exc}") from exc
    message = message[: parse_size(section.max_size)]
    score = trio.run(
        ask_spamd, section.address(), "REPORT", message, parse_duration(section.timeout)
    )
    policy = ContentPolicy(reject_at=section.reject_at, warn_at=section.warn_at)
    verdict = policy.verdict(score)
    if args.json:
        print(
            json.dumps(
                {
                    "score": score.score,
                    "verdict": verdict,
                    "reject_at": section.reject_at,
                    "warn_at": section.warn_at,
                    "rules": [
                        {"name": r.name, "points": r.points, "description": r.description}
                        for r in score.rules
                    ],
                }
            )
        )
    else:
        said = {"pass": "passes", "warn": "warning", "reject": "would be rejected"}[verdict]
        print(
            f"score {score.score:.1f}: {said} "
            f"(reject_at {section.reject_at:g}, warn_at {section.warn_at:g})"
        )
        rules = sorted(score.rules, key=lambda r: -(r.points or 0.0))
        for rule in rules:
            points = "" if rule.points is None else f"{rule.points:6.1f}"
            print(f"{points:>6}  {rule.name:<24} {rule.description}".rstrip())
    return 0 if verdict == "pass" else 1
