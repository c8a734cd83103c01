"""``salvo feedback``: bounces, complaints and auto-replies that came back.

``salvo feedback parse FILE... [--json]`` parses report files (one message per file) and
prints what each says: with ``--json`` one JSON object per file per line, otherwise one
line per recipient.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from salvo.core.feedback.parse import parse_report
from salvo.core.feedback.report import Report


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``salvo feedback`` and its subcommands."""
    p = subparsers.add_parser(
        "feedback",
        help="parse bounces, complaints and auto-replies",
        description="Non-delivery reports (DSN), complaints (ARF) and auto-replies.",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    parse = sub.add_parser("parse", help="parse report files and print what they say")
    parse.add_argument("files", nargs="+", metavar="FILE")
    parse.add_argument("--json", action="store_true", help="one JSON object per file per line")
    parse.set_defaults(func=_parse)


def as_dict(name: str, report: Report) -> dict:
    """The JSON form of one parsed file."""
    return {
        "file": name,
        "kind": report.kind.value,
        "feedback_type": report.feedback_type,
        "original_message_id": report.original_message_id,
        "recipients": [
            {
                "address": r.address,
                "status": r.status,
                "code": r.code,
                "reason": r.reason,
                "hard": r.hard,
                "diagnostic": r.diagnostic,
            }
            for r in report.recipients
        ],
    }


def _parse(args: argparse.Namespace) -> int:
    status = 0
    for name in args.files:
        try:
            raw = Path(name).read_bytes()
        except OSError as exc:
            print(f"salvo feedback parse: {name}: {exc.strerror or exc}", file=sys.stderr)
            status = 2
            continue
        report = parse_report(raw)
        if args.json:
            print(json.dumps(as_dict(name, report), ensure_ascii=False))
            continue
        head = f"{name}: {report.kind.value}"
        if report.feedback_type:
            head += f" ({report.feedback_type})"
        if report.original_message_id:
            head += f" {report.original_message_id}"
        if not report.recipients:
            print(head)
        for r in report.recipients:
            hard = "hard" if r.hard else "soft"
            code = f" {r.code}" if r.code else ""
            status_code = f" {r.status}" if r.status else ""
            print(
                f"{head}  {r.address or '-'}  {r.reason} {hard}{code}{status_code}  {r.diagnostic}"
            )
    return status
