"""Durable spool throughput and suppression lookups; prints a table.

``python -m salvo.bench.spool [--data DIR] [--jobs N]``. Every figure is durable
(``sync=True, metasync=True``) and measured in the same run as its baseline:

- one job per commit (the baseline: what per-message commits would give);
- group commit through the Trio writer, many concurrent submitters (batches as the writer
  forms them), 1 recipient per job and 100 recipients per job;
- suppression checks per second, batches of 1,000 addresses against 100,000 entries:
  addresses as given (parsed, normalized, looked up: a submission's cost per recipient,
  the figure the target applies to) and normalized keys (a claim's cost).

Each recipient carries 2 KB of variables.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import trio

from salvo.actors.spool_writer import SpoolWriter
from salvo.core.protocol import Job, Recipient
from salvo.core.spool import Spool

VARS = {"name": "Ann", "pad": "x" * 2000}


def _job(tag: str, i: int, n: int) -> Job:
    rcpts = [Recipient(to=f"user{i}.{k}@dest{k % 50}.example", vars=VARS) for k in range(n)]
    return Job(id=f"{tag}-{i}", from_="news@acme.example", recipients=rcpts, text="hi")


def one_per_commit(spool: Spool, jobs: int) -> float:
    """Recipients/s with one single-recipient job per transaction."""
    batch = [_job("single", i, 1) for i in range(jobs)]
    start = time.perf_counter()
    for job in batch:
        spool.submit_many([job], time.time())
    return jobs / (time.perf_counter() - start)


def group_commit(spool: Spool, tag: str, jobs: int, per_job: int, submitters: int) -> tuple:
    """Recipients/s and mean jobs per commit through the writer."""
    batch = [_job(tag, i, per_job) for i in range(jobs)]
    writer = SpoolWriter(spool, max_jobs=max(1, 10_000 // per_job))

    async def submitter(part: list[Job]) -> None:
        for job in part:
            await writer.submit(job)

    async def main() -> float:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            start = time.perf_counter()
            async with trio.open_nursery() as subs:
                for s in range(submitters):
                    subs.start_soon(submitter, batch[s::submitters])
            elapsed = time.perf_counter() - start
            writer.close()
        return elapsed

    elapsed = trio.run(main)
    stats = writer.statistics()
    return jobs * per_job / elapsed, stats.jobs / max(stats.commits, 1)


def suppression_checks(spool: Spool, entries: int, lookups: int) -> tuple[float, float]:
    """Addresses/s checked in batches of 1,000 (one read transaction per batch), as
    ``(parse and check, keys)``: addresses as producers give them (parsed and normalized,
    then looked up: what a submission costs per recipient), and already-normalized lookup
    keys (what a claim costs: the spool stores each recipient's key)."""
    supp = spool.suppression
    now = time.time()
    for start in range(0, entries, 20_000):
        targets = [f"user{i}@dest{i % 50}.example" for i in range(start, start + 20_000, 1)]
        supp.add(targets, now=now, reason="hard-bounce", tenant="" if start % 40_000 else "acme")
    # 1 in 10 looked-up addresses is suppressed (entries are user<i>@dest<i % 50>).
    picks = [i // 10 if i % 10 == 0 else entries + i for i in range(lookups)]
    addrs = [f"User{j}@Dest{j % 50}.example" for j in picks]
    keys = [f"user{j}@dest{j % 50}.example" for j in picks]
    rates = []
    for check, items in ((supp.check_many, addrs), (supp.check_keys, keys)):
        start = time.perf_counter()
        found = 0
        for b in range(0, lookups, 1000):
            found += sum(e is not None for e in check(items[b : b + 1000], tenant="acme", now=now))
        elapsed = time.perf_counter() - start
        assert found == lookups // 10, found
        rates.append(lookups / elapsed)
    return rates[0], rates[1]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(prog="python -m salvo.bench.spool")
    parser.add_argument("--data", help="directory for the spool (default: a temporary one)")
    parser.add_argument("--jobs", type=int, default=20_000, help="recipients per group run")
    args = parser.parse_args(argv)
    data = args.data or tempfile.mkdtemp(prefix="salvo-bench-")
    spool = Spool.open(os.path.join(data, "spool"))
    single = one_per_commit(spool, 1000)
    grouped, per_commit = group_commit(spool, "g1", args.jobs, 1, 1000)
    wide, wide_commit = group_commit(spool, "g100", args.jobs // 100, 100, 20)
    parsed, keyed = suppression_checks(spool, 100_000, 200_000)
    spool.close()
    rows = [
        ("one job per commit (1 rcpt/job)", single, "1.0", "baseline"),
        (
            f"group commit, 1 rcpt/job ({per_commit:.0f} jobs/commit)",
            grouped,
            f"{grouped / single:.1f}",
            ">= 50,000",
        ),
        (
            f"group commit, 100 rcpt/job ({wide_commit:.0f} jobs/commit)",
            wide,
            f"{wide / single:.1f}",
            ">= 50,000",
        ),
        ("suppression, parse + check, batches of 1,000", parsed, "", ">= 500,000"),
        ("suppression, normalized keys, batches of 1,000", keyed, "", "(claims)"),
    ]
    print(f"spool benchmark, 2 KB variables per recipient, sync=True ({data})")
    print(f"{'what':<48} {'per s':>12} {'ratio':>7}  target")
    for what, rate, ratio, target in rows:
        print(f"{what:<48} {rate:>12,.0f} {ratio:>7}  {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
