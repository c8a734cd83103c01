"""``salvo keys``: ``generate NAME``, a CURVE key pair for a producer, a subscriber or a
node (docs/security.md); ``rotate-master``, the spool's data keys re-wrapped under a new
master key (docs/spool.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from salvo.core import host


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "keys",
        help="CURVE key pairs; the spool's master key",
        description="CURVE key pairs (docs/security.md); the spool's master key (docs/spool.md).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    generate = actions.add_parser(
        "generate",
        help="write NAME.key (public) and NAME.key_secret (mode 0600)",
        description=(
            "Write a new CURVE key pair in the format of pyzmq's zmq.auth: NAME.key holds the "
            "public key (for the node's [producers.NAME] or [subscribers.NAME] public_key), "
            "NAME.key_secret the pair, mode 0600 (for the producer: salvo submit --curve-key, "
            "salvo.client's curve_key). An existing file is never replaced."
        ),
    )
    generate.add_argument("name", metavar="NAME", help="the key's name (letters, digits, _ . -)")
    generate.add_argument(
        "--dir", type=Path, default=Path("keys"), help="the folder to write to (default: keys)"
    )
    generate.set_defaults(func=_generate)
    add_rotate_master(actions)


def _generate(args: argparse.Namespace) -> int:
    from salvo.actors.keys import generate, read_public
    from salvo.core.access import NAME
    from salvo.ext.errors import SalvoError

    if not NAME.match(args.name):
        raise SalvoError(f"{args.name!r}: a name of letters, digits, '_', '.' and '-'")
    public, secret = generate(args.dir, args.name)
    print(f"public key {read_public(public).decode()} in {public}", file=sys.stderr)
    print(
        f"secret key in {secret} (mode 0600: keep it on the producer's host only)", file=sys.stderr
    )
    print(public)
    return 0


ROTATE_MASTER = """\
Run with the node stopped (it takes the data dir lock). The new key is written first
(``--new-key FILE``, made with mode 0600 when missing), then every live data key is
re-wrapped in one durable transaction and the spool records the new key's id; the old
key no longer opens the spool. Then point ``[spool] master_key_file`` (or the variable
of ``master_key_env``) at the new key and destroy the old one. docs/spool.md.
"""


def add_rotate_master(sub: argparse._SubParsersAction) -> None:
    """``rotate-master`` under ``salvo keys`` (kept apart so other key commands can join)."""
    rotate = sub.add_parser(
        "rotate-master",
        help="re-wrap the spool's data keys under a new master key (node stopped)",
        description=ROTATE_MASTER,
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
