"""``salvo suppress``: manage the suppression list of a data directory (node may run)."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

from salvo.core.address import parse_address
from salvo.core.errors import InvalidAddressError
from salvo.core.spool_env import Store
from salvo.core.suppression import SuppressionStore
from salvo.core.suppression_csv import export_csv, format_time, import_csv
from salvo.progress import progress_bar

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``12h``, ``30d``, ``2w`` to seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (examples: 12h, 30d, 2w)")
    return float(match[1]) * _UNITS[match[2] or "s"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``salvo suppress`` and its subcommands."""
    p = subparsers.add_parser(
        "suppress",
        help="manage the suppression list",
        description="Addresses and domains that are never mailed. Works while a node runs.",
    )
    p.add_argument("--data", default=None, help="data directory (default: salvo-data)")
    p.add_argument(
        "--config",
        metavar="FILE",
        help="the node's config: its data directory, and in a cluster ([cluster] redis) "
        "changes are published to every node",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = sub.add_parser("add", help="suppress addresses or domains (example.org)")
    add.add_argument("targets", nargs="+", metavar="ADDRESS")
    add.add_argument("--reason", default="manual", help="hard-bounce, complaint, unsubscribe...")
    add.add_argument("--tenant", default="", help="scope to one tenant (default: global)")
    add.add_argument("--source", default="cli")
    add.add_argument("--expires", type=parse_duration, help="lift after this long (e.g. 30d)")
    add.set_defaults(func=_add)

    rm = sub.add_parser("remove", help="lift suppressions")
    rm.add_argument("targets", nargs="+", metavar="ADDRESS")
    rm.add_argument("--tenant", default="", help="the entry's tenant (default: global)")
    rm.set_defaults(func=_remove)

    check = sub.add_parser("check", help="exit 0 when every address is clean, 1 otherwise")
    check.add_argument("addresses", nargs="+", metavar="ADDRESS")
    check.add_argument("--tenant", default="", help="check as this tenant's job would be")
    check.set_defaults(func=_check)

    ls = sub.add_parser("list", help="list entries")
    ls.add_argument("--reason")
    ls.add_argument("--tenant", help="only this tenant's entries ('' = global ones)")
    ls.add_argument("--limit", type=int, default=None)
    ls.set_defaults(func=_list)

    imp = sub.add_parser("import", help="import a CSV file (all lines or none)")
    imp.add_argument("file", metavar="FILE.csv")
    imp.set_defaults(func=_import)

    exp = sub.add_parser("export", help="export every entry to a CSV file")
    exp.add_argument("file", metavar="FILE.csv")
    exp.set_defaults(func=_export)


def _open(args: argparse.Namespace) -> SuppressionStore:
    if args.config is None:
        return SuppressionStore(Store(args.data or "salvo-data"))
    from salvo.core import cluster_store
    from salvo.core.config import load_config

    if args.data is not None:
        raise SystemExit("salvo suppress: give --config or --data, not both")
    config = load_config(args.config)
    args.cluster_config = config if config.cluster.redis else None
    store = Store(config.data_dir)
    if args.cluster_config is not None:  # changes go to the outbox even before a node ran
        store.write(lambda txn: cluster_store.set_on_in(txn, store, True))
    return SuppressionStore(store)


def _publish(args: argparse.Namespace, store: SuppressionStore) -> None:
    """In a cluster: publish the changes now (else the node does, within a second)."""
    config = getattr(args, "cluster_config", None)
    if config is None:
        return
    from salvo.actors.cluster import RedisDown
    from salvo.actors.cluster_suppression import publish_outbox

    try:
        publish_outbox(store.store, config)
    except RedisDown as exc:
        print(
            f"the cluster's Redis is unreachable ({exc}); the node publishes the change "
            "when it is back",
            file=sys.stderr,
        )
    else:
        # (A running node may have published some of them first: a change is sent once.)
        print("published to the cluster", file=sys.stderr)


def _add(args: argparse.Namespace) -> int:
    store = _open(args)
    now = time.time()
    expires = now + args.expires if args.expires is not None else None
    n = store.add(
        args.targets,
        now=now,
        tenant=args.tenant,
        reason=args.reason,
        source=args.source,
        expires=expires,
    )
    scope = f"tenant {args.tenant}" if args.tenant else "all tenants"
    until = f", until {format_time(expires)}" if expires else ""
    print(f"suppressed {n} for {scope} (reason {args.reason}{until})")
    _publish(args, store)
    return 0


def _remove(args: argparse.Namespace) -> int:
    store = _open(args)
    n = store.remove(args.targets, tenant=args.tenant)
    print(f"removed {n} of {len(args.targets)}")
    _publish(args, store)
    return 0 if n else 1


def _check(args: argparse.Namespace) -> int:
    store = _open(args)
    status = 0
    valid = []
    for text in args.addresses:
        try:
            parse_address(text)
        except InvalidAddressError as exc:
            print(f"{text}\tinvalid\t{exc.detail}")
            status = 2
        else:
            valid.append(text)
    for text, entry in zip(
        valid, store.check_many(valid, tenant=args.tenant, now=time.time()), strict=True
    ):
        if entry is None:
            print(f"{text}\tclean")
            continue
        status = max(status, 1)
        scope = f"tenant {entry.tenant}" if entry.tenant else "global"
        print(f"{text}\tsuppressed\t{entry.reason}\t{entry.target}\t{scope}")
    return status


def _list(args: argparse.Namespace) -> int:
    entries = _open(args).entries(reason=args.reason, tenant=args.tenant, limit=args.limit)
    for e in entries:
        tenant = e.tenant or "*"
        print(
            f"{e.target}\t{tenant}\t{e.reason}\t{e.source}\t{format_time(e.created)}"
            f"\t{format_time(e.expires)}"
        )
    print(f"{len(entries)} entries", file=sys.stderr)
    return 0


def _import(args: argparse.Namespace) -> int:
    size = os.path.getsize(args.file) if os.path.isfile(args.file) else None
    bars = {"read": progress_bar("checking lines", total=size, unit="B")}

    def progress(phase: str, n: int) -> None:
        if phase == "checked":
            bars.pop("read").close()
            bars["written"] = progress_bar("writing entries", total=n, unit="entries")
        else:
            bars[phase].update(n)

    store = _open(args)
    try:
        n = import_csv(store, args.file, time.time(), progress)
    finally:
        for bar in bars.values():
            bar.close()
    print(f"imported {n} entries from {args.file}")
    _publish(args, store)
    return 0


def _export(args: argparse.Namespace) -> int:
    n = export_csv(_open(args), args.file)
    print(f"exported {n} entries to {args.file}")
    return 0
