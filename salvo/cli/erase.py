"""``salvo erase ADDRESS...``: erase addresses from a data dir (the node may run).

The spool's records are rewritten here, in short transactions beside the running node.
The event logs and the old copies LMDB keeps in its file are the owner's to clean: a
running node does it within a second (it finds the scrub request in the spool) and this
command waits for it; with no node running, this command takes the data dir's lock and
does it itself. See docs/privacy.md.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from salvo.core import erasure, host
from salvo.core.errors import InvalidAddressError, StartupError
from salvo.core.spool import Spool
from salvo.core.spool_env import STORE_SUBDIR, Store


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "erase",
        help="erase addresses from the data dir (they stay suppressed, by hash only)",
        description=(
            "Remove every occurrence of the addresses from the spool and the event logs; "
            "queued mail to them is cancelled; they stay suppressed through a keyed hash "
            "only. Works while a node runs. Cannot be undone."
        ),
    )
    p.add_argument("addresses", nargs="+", metavar="ADDRESS")
    p.add_argument("--data", default=None, help="data directory (default: salvo-data)")
    p.add_argument("--config", metavar="FILE", help="the node's config: its data directory")
    p.add_argument("--tenant", default="", help="erase from this tenant's data only")
    p.add_argument(
        "--dry-run", action="store_true", help="only say where each address is (an access request)"
    )
    p.add_argument(
        "--wait",
        type=float,
        default=120.0,
        help="seconds to wait for a running node to scrub its event logs (default 120)",
    )
    p.set_defaults(func=_erase)


def _data_dir(args: argparse.Namespace) -> tuple[Path, bool]:
    """The data dir and whether its event logs are on."""
    if args.config is None:
        return Path(args.data or "salvo-data"), True
    if args.data is not None:
        raise SystemExit("salvo erase: give --config or --data, not both")
    from salvo.core.config import load_config

    config = load_config(args.config)
    return Path(config.data_dir), config.events.log


def _erase(args: argparse.Namespace) -> int:
    data, logs = _data_dir(args)
    if not (data / STORE_SUBDIR / "data.mdb").exists():
        print(f"salvo erase: error: {data} holds no salvo spool", file=sys.stderr)
        return 2
    spool = Spool(Store(data), random_bytes=host.random_bytes)  # no recovery: a node may run
    try:
        erasers = [erasure.Eraser(spool, a, tenant=args.tenant) for a in args.addresses]
    except InvalidAddressError as exc:
        print(f"salvo erase: error: {exc}", file=sys.stderr)
        spool.close()
        return 2
    try:
        return _run(args, data, logs, spool, erasers)
    finally:
        spool.close()


def _run(args, data: Path, logs: bool, spool: Spool, erasers: list) -> int:
    from salvo.actors.log_scrub import log_files

    now = time.time()
    requests = []
    for address, eraser in zip(args.addresses, erasers, strict=True):
        report = eraser.run(now, dry_run=args.dry_run)
        where = ", ".join(f"{n} in {db}" for db, n in report.address_found.items()) or "nothing"
        if args.dry_run:
            lines = sum(
                len(eraser.pattern.findall(p.read_bytes())) for p in log_files(data / "events")
            )
            print(f"{address}: spool: {where}; event logs: {lines} occurrence(s)")
            continue
        requests.append(report.scrub_request)
        print(
            f"{address}: spool: {where}; {report.cancelled} queued recipient(s) cancelled, "
            f"{report.rewritten} record(s) rewritten; suppressed by hash"
        )
    if args.dry_run:
        return 0
    if not _clean(data, logs, spool, requests, args.wait):
        return 1
    pattern = re.compile(b"|".join(e.pattern.pattern for e in erasers), re.IGNORECASE)
    left = spool.store.count_in_file(pattern)
    if left:
        print(
            f"{left} old cop(ies) still in the spool file (pages a reader still held); "
            "run salvo erase again later",
            file=sys.stderr,
        )
        return 1
    print("event logs scrubbed; no copy left in the spool file")
    return 0


def _clean(data: Path, logs: bool, spool: Spool, requests: list[bytes], wait: float) -> bool:
    """Scrub the logs and the file ourselves when no node runs, else wait for the node."""
    from salvo.actors.datadir_lock import DataDirLock

    lock = DataDirLock(data)
    try:
        lock.acquire()
    except StartupError:
        return _wait_for_node(spool, requests, wait)
    try:
        from salvo.actors.log_scrub import HashMatcher, scrub_logs

        store = spool.store
        pending = store.read(lambda txn: erasure.scrub_requests_in(txn, store.dbs))
        if pending and logs:
            secret = store.read(spool.suppression.secret_in)
            scrub_logs(data / "events", HashMatcher(secret, [req for _, req in pending]))
        erasure.clean_file(store)
        keys = [key for key, _ in pending]
        store.write(lambda txn: erasure.scrub_done_in(txn, store.dbs, keys))
    finally:
        lock.release()
    return True


def _wait_for_node(spool: Spool, requests: list[bytes], wait: float) -> bool:
    store = spool.store
    deadline = time.monotonic() + wait
    print("a node runs on this data dir: waiting for it to scrub its event logs", file=sys.stderr)
    while time.monotonic() < deadline:
        left = store.read(lambda txn: [k for k in requests if txn.get(k, db=store.dbs["erase"])])
        if not left:
            return True
        time.sleep(0.2)
    print(
        f"the node has not scrubbed its event logs within {wait:g} s; it will when it can "
        "(the request stays in the spool)",
        file=sys.stderr,
    )
    return False
