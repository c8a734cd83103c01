"""``salvo submit``: send jobs to a node and print one JSON reply per job.

Each refused recipient (with its reason and the missing variables, if any) and each job
error is also told on stderr, one line each, at most :data:`SHOWN` per job.

Exit status: 0 when every job was accepted, 1 when a job was rejected or partly rejected,
2 on errors (a malformed line, an "error" reply, no reply, or ``retry`` until the end).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import msgspec

from salvo.ext.errors import SalvoError
from salvo.progress import progress_bar

_EXIT = {"accepted": 0, "partial": 1, "rejected": 1}  # anything else: 2
SHOWN = 10  # refused recipients told on stderr per job


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "submit",
        help="submit jobs to a node",
        description=(
            "Submit jobs to a salvo node (protocol: docs/protocol.md) and print one JSON reply "
            'per job on stdout, with the job\'s input line number as "line". Either --jobs '
            "FILE.jsonl (one job per line, '-' for stdin; a job without an id gets a uuid4), "
            "or one message given by --from, --to, --subject and --text/--html. "
            "Exit status: 0 all accepted, 1 something rejected, 2 errors."
        ),
    )
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5557", help="the node's ingress")
    parser.add_argument("--jobs", type=Path, metavar="FILE", help="JSON Lines file of jobs")
    parser.add_argument("--from", dest="from_", metavar="ADDRESS", help="From header")
    parser.add_argument("--to", action="append", default=[], help="recipient (repeatable)")
    parser.add_argument("--subject", help="Subject")
    parser.add_argument("--text", type=Path, metavar="FILE", help="plain-text body file")
    parser.add_argument("--html", type=Path, metavar="FILE", help="HTML body file")
    parser.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'")
    parser.add_argument("--id", help="job id (default: a new uuid4)")
    parser.add_argument("--tenant", help='the job\'s tenant (default: "default")')
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per attempt")
    parser.add_argument("--attempts", type=int, default=5, help="sends per job at most")
    parser.add_argument(
        "--curve-server-key",
        type=Path,
        metavar="FILE",
        help="the node's CURVE public key file (node.key), for a node with [ingress] curve",
    )
    parser.add_argument(
        "--curve-key",
        type=Path,
        metavar="FILE",
        help="this producer's CURVE key pair (NAME.key_secret of salvo keys generate)",
    )
    parser.set_defaults(func=_submit)


def _submit(args: argparse.Namespace) -> int:
    from salvo.client import Producer

    if (args.curve_server_key is None) != (args.curve_key is None):
        raise SalvoError("give both --curve-server-key and --curve-key, or neither")
    curve = {}
    if args.curve_key is not None:
        curve = {"curve_server_key": args.curve_server_key, "curve_key": args.curve_key}
    flags = (args.from_, args.to, args.subject, args.text, args.html, args.header, args.id)
    flags += (args.tenant,)
    if args.jobs is None:
        source, numbered = None, [(1, _job_from_flags(args))]
    elif any(flags):
        raise SalvoError("give either --jobs or --from/--to/--subject/..., not both")
    elif str(args.jobs) == "-":
        source = sys.stdin
    else:
        source = args.jobs.open(encoding="utf-8")
    report = _Report(source)
    if source is not None:
        numbered = _read_jobs(source, report)
    lines: dict[str, list[int]] = {}  # job id -> input line numbers, to label replies
    try:
        with Producer(
            args.endpoint, timeout=args.timeout, attempts=args.attempts, **curve
        ) as producer:
            for reply in producer.submit_many(_label(numbered, lines)):
                report.reply(msgspec.to_builtins(reply), lines[reply.id].pop(0))
    finally:
        if source not in (None, sys.stdin):
            source.close()
    report.done()
    return report.status


def _label(numbered: Iterable[tuple[int, dict[str, Any]]], lines: dict[str, list[int]]):
    """The jobs, each with an id, remembering which line each id came from."""
    for number, job in numbered:
        if job.get("id") is None:
            job["id"] = uuid.uuid4().hex
        if isinstance(job["id"], str):
            lines.setdefault(job["id"], []).append(number)
        yield job


def _job_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    given = (("--from", args.from_), ("--to", args.to), ("--subject", args.subject))
    missing = [name for name, value in given if not value]
    if missing:
        raise SalvoError(f"missing {', '.join(missing)} (or give --jobs FILE)")
    if args.text is None and args.html is None:
        raise SalvoError("give --text FILE, --html FILE or both")
    job: dict[str, Any] = {
        "id": args.id,
        "from": args.from_,
        "subject": args.subject,
        "recipients": [{"to": to} for to in args.to],
    }
    if args.tenant:
        job["tenant"] = args.tenant
    if args.header:
        job["headers"] = dict(_header(h) for h in args.header)
    for key in ("text", "html"):
        path = getattr(args, key)
        if path is not None:
            job[key] = path.read_text(encoding="utf-8")
    return job


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise SalvoError(f"--header {text!r}: expected 'Name: value'")
    return name.strip(), value.strip()


def _read_jobs(source: IO[str], report: _Report) -> Iterator[tuple[int, dict[str, Any]]]:
    """The jobs of a JSON Lines stream; a bad line is reported and skipped."""
    for number, text in enumerate(source, 1):
        report.read(len(text.encode("utf-8")))
        if not text.strip():
            continue
        try:
            job = json.loads(text)
        except json.JSONDecodeError as exc:
            report.malformed(number, f"not valid JSON: {exc}")
            continue
        if not isinstance(job, dict):
            report.malformed(number, f"a job is a JSON object, not {type(job).__name__}")
        elif job.get("id") is not None and not isinstance(job["id"], str):
            report.malformed(number, "id: must be a string")
        else:
            yield number, job


class _Report:
    """Prints replies (stdout) and progress (stderr, if a terminal); keeps the exit status."""

    def __init__(self, source: IO[str] | None) -> None:
        self.status = 0
        self._counts = dict.fromkeys(("accepted", "partial", "rejected", "retry", "error"), 0)
        # Progress is the input read: with a window of jobs in flight, replies follow it.
        self._bar = progress_bar("jobs read", total=_file_size(source), unit="B")

    def read(self, n: int) -> None:
        self._bar.update(n)

    def reply(self, reply: dict[str, Any], line: int) -> None:
        self._emit({**reply, "line": line})
        self._tell(reply, line)

    def _tell(self, reply: dict[str, Any], line: int) -> None:
        """One line on stderr per refused recipient (the first SHOWN) and per job error."""
        rejected = reply.get("rejected") or []
        if reply["status"] not in ("error", "rejected") and not rejected:
            return
        where = f"line {line}, job {reply['id']}"
        out = []
        if reply["status"] == "rejected" and reply.get("error"):
            out.append(f"{where}: rejected: {reply['error']}")
        if reply["status"] == "error":
            out.append(f"{where}: error: {reply.get('error') or 'no reason given'}")
        for r in rejected[:SHOWN]:
            why = f"{r['reason']}: {r['text']}" if r.get("text") else r["reason"]
            out.append(f"{where}: {r['to']} rejected ({why})")
        if len(rejected) > SHOWN:
            out.append(f"{where}: ... and {len(rejected) - SHOWN} more rejected recipients")
        if not out:
            return
        self._bar.write("\n".join(out), file=sys.stderr)

    def malformed(self, line: int, why: str) -> None:
        error = f"line {line}: {why}; this job was not sent"
        self._emit(
            {
                "id": "",
                "status": "error",
                "accepted": [],
                "rejected": [],
                "error": error,
                "line": line,
            }
        )

    def done(self) -> None:
        self._bar.close()

    def _emit(self, record: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        status = record["status"]
        self._counts[status] = self._counts.get(status, 0) + 1
        self.status = max(self.status, _EXIT.get(status, 2))
        self._bar.set_postfix_str(
            ", ".join(f"{n} {status}" for status, n in self._counts.items() if n), refresh=False
        )


def _file_size(source: IO[str] | None) -> int:
    try:
        return os.fstat(source.fileno()).st_size if source is not None else 0
    except (OSError, ValueError):
        return 0
