"""``salvo bench``: the throughput harness (code in ``bench/suite.py``, ``docs/bench.md``).

Starts simulated providers on 127.0.0.x, a fresh node, producers; prints a table and
writes ``bench.json`` and ``bench.png`` to ``--out``. ``--compare`` adds Postfix's
``smtp-source -> smtp-sink``, Postfix as a relay and a naive Python sender, measured in
the same run on the same sinks. ``python -m salvo.bench`` runs this same command.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench", help="throughput harness: salvo end to end, and the alternatives (--compare)"
    )
    parser.add_argument("--size", choices=("4k", "100k"), default="4k", help="message size")
    parser.add_argument("--dkim", choices=("rsa", "ed25519", "none"), default="rsa")
    parser.add_argument("--recipients-per-job", type=int, default=1000, dest="per_job")
    parser.add_argument("--providers", type=int, default=1, help="sinks, one domain each")
    parser.add_argument("--profile", choices=("clean", "realistic"), default="clean")
    parser.add_argument("--messages", type=int, help="messages of the main row")
    parser.add_argument("--quick", action="store_true", help="small rows, under a minute")
    parser.add_argument("--compare", action="store_true", help="also Postfix and naive Python")
    parser.add_argument(
        "--big", action="store_true", help="also queue 1M recipients (minutes, ~GBs of disk)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-out"), help="default ./bench-out")
    parser.add_argument(
        "--salvo-profile", type=Path, help="cProfile the main row's node processes into DIR"
    )
    parser.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from salvo.bench import suite

    if not 1 <= args.providers <= len(suite.PROVIDER_HOSTS):
        raise SystemExit(f"--providers: 1 to {len(suite.PROVIDER_HOSTS)}")
    opts = suite.Options(
        size=args.size,
        dkim=args.dkim,
        per_job=args.per_job,
        providers=args.providers,
        profile=args.profile,
        messages=args.messages,
        quick=args.quick,
        compare=args.compare,
        big=args.big,
        out=args.out,
        salvo_profile=args.salvo_profile,
    )
    return suite.run(opts, "salvo " + shlex.join(sys.argv[1:]))
