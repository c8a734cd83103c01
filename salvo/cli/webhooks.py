"""``salvo webhooks status``: each webhook's outbox and deliveries, over the admin API.

The node is found as for ``salvo pause`` (salvo.cli.control): ``--config FILE`` or
``--url URL`` with the token in ``SALVO_TOKEN``. See docs/webhooks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from salvo.cli.control import ControlError, call, endpoint


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "webhooks",
        help="webhooks: pending events, last success and error",
        description="The node's webhooks (docs/webhooks.md).",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = sub.add_parser(
        "status",
        help="per webhook: pending events, oldest age, last success and error, next try",
        description="Per webhook: pending events, the oldest one's age, the last success "
        "and error, consecutive failures, the next try, events delivered and expired.",
    )
    status.add_argument("--config", type=Path, help="the node's TOML config (its [http])")
    status.add_argument("--url", help="the admin API, e.g. http://127.0.0.1:8080 (SALVO_TOKEN)")
    status.add_argument("--json", action="store_true", help="print the node's JSON answer")
    status.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    try:
        host, port, token = endpoint(args)
        answer = call(host, port, token, "/api/webhooks", None)
    except ControlError as exc:
        print(f"salvo webhooks: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, sort_keys=True))
        return 0
    print(render(answer))
    return 0


def render(answer: dict) -> str:
    """The status as one block per webhook."""
    now = answer.get("now") or time.time()
    hooks = answer.get("webhooks", [])
    if not hooks:
        return "no webhooks configured"
    blocks = []
    for h in hooks:
        lines = [f"{h['name']}  {h.get('url', '(not configured any more)')}"]
        oldest = h.get("oldest_pending_age_s")
        age = f" (oldest {_span(oldest)} old)" if oldest is not None else ""
        lines.append(f"  pending     {h['pending']}{age}")
        lines.append(f"  delivered   {h['delivered']}   expired {h['expired']}")
        if h.get("configured", True):
            lines.append(f"  last ok     {_when(h['last_success'], now)}")
            if h["last_error"]:
                lines.append(f"  last error  {h['last_error']} ({_when(h['last_error_at'], now)})")
            failures = h["consecutive_failures"]
            if failures:
                nxt = h["next_try"]
                wait = f", next try in {_span(max(0.0, nxt - now))}" if nxt else ""
                lines.append(f"  failing     {failures} in a row{wait}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _when(at: float | None, now: float) -> str:
    return "never (since start)" if at is None else f"{_span(max(0.0, now - at))} ago"
