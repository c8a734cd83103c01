"""``salvo queue``: look into a node's spool (read transactions: safe while it runs)."""

from __future__ import annotations

import argparse
import time

from salvo.core.spool import Spool
from salvo.core.spool_env import MIB, Store
from salvo.core.suppression_csv import format_time


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``salvo queue summary`` and ``salvo queue show``."""
    p = subparsers.add_parser(
        "queue", help="inspect the spool", description="Inspect the spool of a data directory."
    )
    p.add_argument("--data", default="salvo-data", help="data directory (default: salvo-data)")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = sub.add_parser("summary", help="counts by state, tenant, campaign, domain and age")
    s.add_argument("--top", type=int, default=20, help="domains and campaigns shown")
    s.set_defaults(func=_summary)
    show = sub.add_parser("show", help="one job (by id) or recipient (by <message-id>)")
    show.add_argument("id", metavar="ID")
    show.add_argument("--tenant", help="the job's tenant, when ids repeat across tenants")
    show.set_defaults(func=_show)


def _open(args: argparse.Namespace) -> Spool:
    # No recover(): that is the node's job on start; this only reads.
    return Spool(Store(args.data))


def _table(title: str, rows: dict[str, dict[str, int]], top: int) -> None:
    print(f"\n{title}")
    for name, counts in list(rows.items())[:top]:
        detail = "  ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        print(f"  {name or '(none)':<32} {sum(counts.values()):>9}  {detail}")
    if len(rows) > top:
        print(f"  ... and {len(rows) - top} more")


def _summary(args: argparse.Namespace) -> int:
    s = _open(args).summary(time.time())
    print(f"jobs {s.jobs}   recipients {s.recipients}   suppressions {s.suppressions}")
    print("states      " + "  ".join(f"{k} {v}" for k, v in s.states.items()))
    print("not final by age  " + "  ".join(f"{k} {v}" for k, v in s.pending_age.items()))
    print(
        f"space       used {s.used_bytes / MIB:.1f} MiB   map {s.map_size / MIB:.0f} MiB   "
        f"file {s.file_size / MIB:.1f} MiB"
    )
    _table("tenants", s.tenants, args.top)
    _table("campaigns (tenant/campaign)", s.campaigns, args.top)
    _table("destination domains", s.domains, args.top)
    return 0


def _show(args: argparse.Namespace) -> int:
    spool = _open(args)
    seqs = spool.find_jobs(args.id, args.tenant)
    if not seqs and args.id.startswith("<"):
        found = spool.find_message(args.id)
        if found is not None:
            seq, idx, _ = found
            _print_job(spool, seq, only=idx)
            return 0
    if not seqs:
        print(f"no job or message {args.id!r} in the spool (purged, or never accepted)")
        return 1
    for seq in seqs:
        _print_job(spool, seq)
    return 0


def _print_job(spool: Spool, seq: int, only: int | None = None) -> None:
    job = spool.get_job(seq)
    if job is None:
        return
    print(
        f"job {job.id}  tenant {job.tenant or '-'}  campaign {job.campaign or '-'}  "
        f"traffic {job.traffic or '-'}  (#{seq})"
    )
    print(f"  from {job.from_}  return-path {job.return_path or '-'}")
    print(
        f"  submitted {format_time(job.submitted)}  expires {format_time(job.expires_at)}  "
        f"finished {format_time(job.finished) or '-'}  status {job.status}"
    )
    if job.sealed is not None:
        print(f"  content encrypted ({len(job.sealed)} bytes)")
    elif job.finished is None:
        print(f"  subject {job.subject!r}" if job.raw is None else f"  raw {len(job.raw)} chars")
    for rej in job.rejected:
        print(f"  rejected {rej.to}: {rej.reason}")
    for idx, rec in spool.recipients(seq):
        if only is not None and idx != only:
            continue
        print(
            f"  [{idx}] {rec.to}  {rec.state}  attempts {rec.attempts}  "
            f"next {format_time(rec.next_attempt)}  {rec.message_id}"
        )
        for h in rec.history:
            reply = f"{h.code} {h.enhanced} {h.text}".strip() if h.code else h.text
            print(f"        {format_time(h.at)}  {h.state:<10} {h.host or '-'}  {reply}")
