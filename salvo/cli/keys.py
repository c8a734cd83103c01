"""``salvo keys rotate-master``: wrap the spool's data keys under a new master key.

Run with the node stopped (it takes the data dir lock). The new key is written first
(``--new-key FILE``, made with mode 0600 when missing), then every live data key is
re-wrapped in one durable transaction and the spool records the new key's id; the old
key no longer opens the spool. Then point ``[spool] master_key_file`` (or the variable
of ``master_key_env``) at the new key and destroy the old one. docs/spool.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from salvo.core import host


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("keys", help="key management (the spool master key)")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add_rotate_master(sub)


def add_rotate_master(sub: argparse._SubParsersAction) -> None:
    """``rotate-master`` under ``salvo keys`` (kept apart so other key commands can join)."""
    rotate = sub.add_parser(
        "rotate-master",
        help="re-wrap the spool's data keys under a new master key (node stopped)",
        description=__doc__.split("\n\n", 1)[1],
    )
    rotate.add_argument("--config", type=Path, help="the node's TOML config ([spool] keys)")
    rotate.add_argument(
        "--new-key", type=Path, required=True, metavar="FILE", help="made when missing"
    )
    rotate.set_defaults(func=_rotate_master)


def _rotate_master(args: argparse.Namespace) -> int:
    from salvo.actors.datadir_lock import DataDirLock
    from salvo.actors.master_key import load_master_key
    from salvo.actors.node import open_spool
    from salvo.core.config import load_config
    from salvo.core.spool_crypto import master_id, parse_master_key

    config = load_config(args.config)
    if not (config.data_dir / "store" / "data.mdb").exists():
        print(f"salvo keys: error: {config.data_dir} holds no salvo spool", file=sys.stderr)
        return 2
    lock = DataDirLock(config.data_dir).acquire()  # refused while a node runs
    try:
        old = load_master_key(config)
        if host.create_secret_file(args.new_key, text=True):
            print(f"made the new master key {args.new_key} (mode 0600)")
        new = parse_master_key(host.read_bytes(args.new_key), str(args.new_key))
        if new == old:
            print("salvo keys: error: the new key is the current one", file=sys.stderr)
            return 2
        spool = open_spool(config)
        try:
            n = spool.rotate_master(new)
        finally:
            spool.close()
    finally:
        lock.release()
    print(
        f"re-wrapped {n} data key(s) under {args.new_key} (id {master_id(new)}); the old key "
        f"no longer opens {config.data_dir}. Now set [spool] master_key_file = "
        f'"{args.new_key}" (or put it in the master_key_env variable) and destroy the old key.'
    )
    return 0
