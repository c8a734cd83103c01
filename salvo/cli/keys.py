"""``salvo keys generate NAME``: a CURVE key pair for a producer, a subscriber or a node."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "keys",
        help="make CURVE key pairs for producers, subscribers and nodes",
        description="CURVE key pairs (docs/security.md).",
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
