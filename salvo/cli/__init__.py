"""The ``salvo`` command line: one subcommand per module of this package.

Each module listed in ``COMMANDS`` has ``register(subparsers)``, which adds its parser and
sets ``func(args) -> int`` (the exit status) as a default.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from salvo import __version__
from salvo.ext.errors import SalvoError

COMMANDS = (
    "node",
    "submit",
    "queue",
    "pause",
    "resume",
    "cancel",
    "suppress",
    "feedback",
    "dkim",
    "keys",
    "render",
    "demo",
    "bench",
)

CONTROL = "control"  # one module for pause, resume and cancel


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="salvo", description="salvo: high-volume outbound email sender"
    )
    parser.add_argument("--version", action="version", version=f"salvo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = CONTROL if name in ("pause", "resume", "cancel") else name
        if module == CONTROL and name != "pause":
            continue  # salvo.cli.control registers all three
        importlib.import_module(f"salvo.cli.{module}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``salvo`` command; return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SalvoError as exc:
        print(f"salvo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"salvo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
