"""What the metrics and KPI bookkeeping cost, end to end, measured in one run.

``python -m salvo.bench.bookkeeping [--pairs N] [--messages M]``: the main row of
``salvo bench`` (4 KB, RSA-2048, a clean ``smtp-sink``, jobs of 1,000, 2 signers) run
``2 N`` times, the node started alternately with ``SALVO_BOOKKEEPING=on`` and ``off``
(on/off, then off/on, ... so that a drift of the machine's load hits both alike). Prints
each run and the medians of two figures:

- *msg/s*: end-to-end throughput, what the target is about;
- *CPU per message*: the node's processes (supervisor, core, signers) in CPU-microseconds
  per message. On a machine that is saturated by the node this is the throughput's
  inverse, and it is far less sensitive to other work on a shared machine than the wall
  clock is: the cost of the bookkeeping is the difference of the medians.

``--micro`` also times the bookkeeping's own code on one core, per message, in batches as
the scheduler forms them: the per-batch labels and reply counts, the KPI buckets of the
changes written in the LMDB transaction that records them, and the Prometheus counters
of the events. Divided by the node's CPU per message, it bounds the cost from above
without the noise of whole runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from salvo.bench import harness, onoff, suite


def one_run(tmp: Path, name: str, mode: str, messages: int) -> dict:
    previous = os.environ.get("SALVO_BOOKKEEPING")
    os.environ["SALVO_BOOKKEEPING"] = mode
    try:
        row = suite.salvo_run(tmp, name, messages=messages, per_job=1000)
    finally:
        if previous is None:
            os.environ.pop("SALVO_BOOKKEEPING", None)
        else:
            os.environ["SALVO_BOOKKEEPING"] = previous
    return onoff.figures(row, mode, name)


def micro(messages: int = 50_000, batch: int = 256) -> float:
    """CPU-microseconds of bookkeeping per delivered message (see the module's doc)."""
    from types import SimpleNamespace

    from salvo.actors.metrics import Metrics, book_batch
    from salvo.core.events import change_event
    from salvo.core.protocol import Job, Recipient
    from salvo.core.spool import Outcome, Spool

    with harness.workdir() as tmp:
        spool = Spool.open(tmp / "spool")
        jobs = [
            Job(
                id=f"j{i}",
                from_="news@acme.example",
                tenant="acme",
                campaign="spring",
                recipients=[Recipient(to=f"u{i}.{k}@p{k % 4}.example") for k in range(1000)],
                text="hi",
            )
            for i in range(messages // 1000)
        ]
        now = time.time()
        for i in range(0, len(jobs), 10):
            spool.submit_many(jobs[i : i + 10], now)
        claimed = []
        while len(claimed) < messages:
            got = spool.claim_due(time.time(), 5000, with_bodies=False).claimed
            if not got:
                break
            claimed += got
        records = {seq: spool.get_job(seq) for seq in {c.seq for c in claimed}}
        metrics = Metrics()
        spent = 0.0
        for i in range(0, len(claimed), batch):
            part = claimed[i : i + batch]
            results = [
                SimpleNamespace(message=c, outcome=SimpleNamespace(code=250), source="192.0.2.10")
                for c in part
            ]
            provider_of = {(c.seq, c.idx): f"p{c.idx % 4}" for c in part}
            outcomes = [Outcome(seq=c.seq, idx=c.idx, state="delivered", code=250) for c in part]
            t = time.process_time()
            book = book_batch(metrics, results, records, provider_of, time.time())
            spent += time.process_time() - t

            def then(txn, changes, book=book):
                nonlocal spent
                t = time.process_time()
                spool.add_kpis_in(txn, book(changes))
                spent += time.process_time() - t

            changes = spool.record_outcomes(outcomes, time.time(), then)
            events = [change_event(c, records[c.seq], time.time()) for c in changes]
            t = time.process_time()
            metrics.count_events(events)
            spent += time.process_time() - t
        spool.close()
    return spent * 1e6 / len(claimed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m salvo.bench.bookkeeping")
    parser.add_argument("--pairs", type=int, default=5, help="on/off pairs (default 5)")
    parser.add_argument("--messages", type=int, default=20_000, help="per run (default 20,000)")
    parser.add_argument("--json", type=Path, help="also write the runs and medians here")
    parser.add_argument("--micro", action="store_true", help="also time the code itself")
    args = parser.parse_args(argv)
    micro_us = micro() if args.micro else None
    if micro_us is not None:
        print(f"bookkeeping code alone: {micro_us:.2f} CPU-us per message (one core)")
    runs = onoff.run_pairs(
        "bookkeeping", args.pairs, lambda tmp, name, mode: one_run(tmp, name, mode, args.messages)
    )
    result = onoff.summarize(runs)
    onoff.print_medians(result, args.pairs, args.messages)
    off = result["off"]
    if micro_us is not None:
        result["micro_us_per_msg"] = micro_us
        share = micro_us / off["cpu_us_per_msg"]
        print(f"  bookkeeping code / node CPU per msg (off): {share:.2%}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, **result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
