"""``salvo feedback``: bounces, complaints and auto-replies that came back.

``salvo feedback parse FILE... [--json]`` parses report files (one message per file) and
prints what each says: with ``--json`` one JSON object per file per line, otherwise one
line per recipient. ``salvo feedback ingest --data DIR FILE...`` applies reports to a data
dir as if the node's listener had received them (reports fetched from a mailbox).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from salvo.core import host
from salvo.core.config import load_config
from salvo.core.events import encode_events
from salvo.core.feedback import apply as fb_apply
from salvo.core.feedback.parse import parse_report
from salvo.core.feedback.policy import FeedbackPolicy
from salvo.core.feedback.report import Kind, Report
from salvo.core.feedback.store import RawReport
from salvo.core.spool import Spool
from salvo.core.spool_env import Store


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``salvo feedback`` and its subcommands."""
    p = subparsers.add_parser(
        "feedback",
        help="bounces, complaints and unsubscribes: parse and ingest reports",
        description="The feedback loop's reports (docs/feedback.md).",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    parse = sub.add_parser("parse", help="parse report files and print what they say")
    parse.add_argument("files", nargs="+", metavar="FILE")
    parse.add_argument("--json", action="store_true", help="one JSON object per file per line")
    parse.set_defaults(func=_parse)
    _register_ingest(sub)


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


def _register_ingest(sub: argparse._SubParsersAction) -> None:
    ingest = sub.add_parser(
        "ingest",
        help="apply report files to a data dir as if they had arrived (node may run)",
        description=(
            "Apply reports (DSNs, ARF complaints; one message per file) to a data dir as if "
            "the node's listener had received them: a recipient tied to a message this node "
            "sent (VERP token or Message-ID) is suppressed or counted by the policy. Prints "
            "the events made, one JSON object per line (they are not published: the node "
            "is not involved). Works while a node runs."
        ),
    )
    ingest.add_argument("files", nargs="+", metavar="FILE")
    ingest.add_argument("--data", default="salvo-data", help="data directory (default: salvo-data)")
    ingest.add_argument(
        "--config", help="the node's config: its [feedback] policy and secret_file (for VERP)"
    )
    ingest.add_argument(
        "--trust",
        action="store_true",
        help="also suppress the addresses of reports not tied to a message this node sent "
        "(the operator vouches for these reports)",
    )
    ingest.add_argument("--tenant", default="", help="with --trust: the tenant (default: global)")
    ingest.set_defaults(func=_ingest)


def _ingest(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    fb = config.feedback
    policy = FeedbackPolicy.from_config(config)
    secret_path = config.path(fb.secret_file)
    secret = host.read_bytes(secret_path) if args.config and host.is_file(secret_path) else None
    reports = []
    for name in args.files:
        data = host.read_bytes(Path(name))
        try:
            report = parse_report(data)
        except Exception as exc:  # the parser must not stop the others
            print(f"{name}: not parsed ({type(exc).__name__}: {exc})", file=sys.stderr)
            report = Report(kind=Kind.NONE)
        raw = RawReport(
            received=time.time(),
            peer=f"file:{name}"[:200],
            mail_from="",
            rcpts=(),
            data=b"",
            trusted=args.trust,
            tenant=args.tenant,
        )
        reports.append((name, raw, report))
    spool = Spool(Store(args.data))
    try:
        status = 0
        for name, raw, report in reports:
            now = time.time()

            def fn(txn, raw=raw, report=report, now=now):
                applied = fb_apply.apply_report_in(
                    spool, txn, raw, report, secret=secret, policy=policy, now=now
                )
                fb_apply.count_report_in(spool, txn, report, applied)
                return applied

            applied = spool.store.write(fn)
            sys.stdout.buffer.write(encode_events(applied.events))
            print(
                f"{name}: {report.kind.value}, {applied.tied} tied, {applied.untied} not tied, "
                f"{len(applied.events)} events",
                file=sys.stderr,
            )
        sys.stdout.flush()
        return status
    finally:
        spool.close()
