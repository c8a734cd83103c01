"""``salvo tenant shred T``: destroy a tenant's data keys in the spool (node may run).

The spool's records of the tenant become unreadable at once (only the wrapped keys are
removed; no master key is needed). A running node sees the shred at its next claim or
submit (the spool's key epoch, read in each of its transactions), forgets the keys it had
unwrapped, and ends the tenant's waiting recipients ``cancelled``, with events; a stopped
node does the same at its next start. See docs/spool.md and docs/privacy.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from salvo.core.spool import Spool
from salvo.core.spool_env import STORE_SUBDIR, Store


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tenant",
        help="tenant data: shred a tenant's spool data key",
        description="Operations on one tenant's data in the spool. Works while a node runs.",
    )
    p.add_argument("--data", default="salvo-data", help="data directory (default: salvo-data)")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    shred = sub.add_parser(
        "shred",
        help="destroy a tenant's data key: its queued mail becomes unreadable, then cancelled",
        description=(
            "Destroy the tenant's data keys in an encrypted spool. Everything queued for it "
            "can no longer be read and ends 'cancelled' (the node does it at its next claim, "
            "with events). Its next job gets a new key. Cannot be undone."
        ),
    )
    shred.add_argument("tenant", metavar="TENANT")
    shred.add_argument("--data", default=argparse.SUPPRESS, help="data directory")
    shred.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    shred.set_defaults(func=_shred)


def _shred(args: argparse.Namespace) -> int:
    data = Path(args.data)
    if not (data / STORE_SUBDIR / "data.mdb").exists():
        print(f"salvo tenant: error: {data} holds no salvo spool", file=sys.stderr)
        return 2
    if not args.yes:
        if not sys.stdin.isatty():
            print("salvo tenant: error: shredding cannot be undone: add --yes", file=sys.stderr)
            return 2
        answer = input(f"Destroy tenant {args.tenant!r}'s data key in {data}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing done")
            return 1
    with Spool(Store(data)) as spool:
        destroyed, waiting = spool.shred(args.tenant, time.time())
    if not destroyed:
        print(f"tenant {args.tenant}: no live data key (nothing sent yet, or already shredded)")
        return 0
    print(
        f"tenant {args.tenant}: {destroyed} data key(s) destroyed; {waiting} waiting "
        "recipient(s) end cancelled at the node's next claim (at its next start if it is "
        "not running)"
    )
    return 0
