"""Ingress throughput with and without CURVE, in the same run; prints a table.

``python -m salvo.bench.curve [--jobs N] [--rounds R]``. A child process runs the ingress
(ROUTER, job decode, the durable group-committing spool writer; with CURVE also the ZAP
handler and the per-job tenant check); this process submits N one-recipient jobs through
``salvo.client.Producer`` and times them until the last reply. Rounds alternate plain and
CURVE (and CURVE without the per-job tenant check, to tell the cost of the encryption
from that of reading the ``User-Id``), each against a fresh spool; the best round of each
is reported.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import tempfile
import time
from pathlib import Path

import trio

ROWS = ("plain", "curve", "curve, no tenant check")


def _serve(endpoint: str, data: str, keys: str | None, check: bool, ready) -> None:
    from salvo.actors.ingress import Ingress
    from salvo.actors.keys import read_public
    from salvo.actors.spool_writer import SpoolWriter
    from salvo.actors.zap import KeyTables, Zap
    from salvo.actors.zmqtrio import context
    from salvo.core import access
    from salvo.core.spool import Spool

    async def main() -> None:
        spool = Spool.open(os.path.join(data, "spool"))
        writer = SpoolWriter(spool)
        ctx = context()
        secret = producers = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            if keys is not None:
                key = read_public(Path(keys) / "bench.key").decode()
                producers = access.Producers([access.Producer("bench", key, frozenset("*"))])
                await nursery.start(Zap(ctx, KeyTables(producers, {})).run)
                secret = Path(keys) / "node.key_secret"
            ingress = Ingress(
                endpoint,
                writer,
                context=ctx,
                max_job_bytes=32 << 20,
                max_recipients=10_000,
                on_committed=lambda job, reply: None,
                curve_secret=secret,
                producers=producers if check else None,
            )
            await nursery.start(ingress.run)
            ready.set()

    trio.run(main)


def _round(jobs: int, keys: Path | None, check: bool = True) -> float:
    from salvo.client import Producer

    work = tempfile.mkdtemp(prefix="salvo-bench-curve-")
    endpoint = f"ipc://{work}/ingress"
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    args = (endpoint, work, str(keys) if keys else None, check, ready)
    child = ctx.Process(target=_serve, args=args)
    child.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the ingress did not start")
        options = {}
        if keys is not None:
            options = {
                "curve_server_key": keys / "node.key",
                "curve_key": keys / "bench.key_secret",
            }
        batch = [
            {"id": f"j{i}", "from": "a@acme.example", "subject": "s", "text": "t",
             "recipients": [{"to": f"u{i}@example.org"}]}
            for i in range(jobs)
        ]  # fmt: skip
        with Producer(endpoint, timeout=60, **options) as producer:
            producer.submit({**batch[0], "id": "warm-up"})
            start = time.perf_counter()
            statuses = {r.status for r in producer.submit_many(batch, window=2000)}
            elapsed = time.perf_counter() - start
        if statuses != {"accepted"}:
            raise RuntimeError(f"replies: {statuses}")
        return jobs / elapsed
    finally:
        child.kill()
        child.join()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    from salvo.actors.keys import generate

    parser = argparse.ArgumentParser(prog="python -m salvo.bench.curve", description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    keys = Path(tempfile.mkdtemp(prefix="salvo-bench-keys-"))
    try:
        generate(keys, "node")
        generate(keys, "bench")
        best = dict.fromkeys(ROWS, 0.0)
        for _ in range(args.rounds):
            best["plain"] = max(best["plain"], _round(args.jobs, None))
            best["curve"] = max(best["curve"], _round(args.jobs, keys))
            best["curve, no tenant check"] = max(
                best["curve, no tenant check"], _round(args.jobs, keys, check=False)
            )
    finally:
        shutil.rmtree(keys, ignore_errors=True)
    print(f"ingress, {args.jobs} one-recipient jobs, best of {args.rounds} rounds (jobs/s)")
    for name, rate in best.items():
        print(f"  {name:24} {rate:10,.0f}")
    print(f"  CURVE costs {100 * (1 - best['curve'] / best['plain']):.1f}% of plain")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
