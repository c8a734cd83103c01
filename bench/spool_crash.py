"""SIGKILL the spool at random moments under load; check every acked job survived.

``python -m salvo.bench.spool_crash --kills 1000 [--data DIR]``. Each cycle starts a child
(:mod:`salvo.bench.spool_crash_child`) that submits jobs through the Trio group-commit
writer and prints each id after its commit; the parent kills it 20-200 ms after it is
ready, reopens the spool (recovery) and checks that every printed id is there, once, with
all its recipients. The next child is started early so its imports overlap the check.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from salvo.core.spool import Spool

CHILD = [sys.executable, "-m", "salvo.bench.spool_crash_child"]


@dataclass
class CrashStats:
    """Totals of a crash run; ``lost`` lists acked ids missing or incomplete after a kill.

    ``acked_jobs`` maps each spool directory to the ``(id, recipients)`` acked into it,
    ``exit_codes`` holds each child's exit status (``-SIGKILL`` when the kill found it
    running).
    """

    kills: int = 0
    acked: int = 0
    lost: list[str] = field(default_factory=list)
    seconds: float = 0.0
    acked_jobs: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    exit_codes: list[int] = field(default_factory=list)


def _spawn(cycle: int) -> subprocess.Popen[str]:
    # The child imports, then waits for its spool directory on stdin: starting it early
    # overlaps its start-up with the previous cycle.
    return subprocess.Popen(
        [*CHILD, f"c{cycle}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
    )


def _start(child: subprocess.Popen[str], data_dir: str) -> None:
    child.stdin.write(data_dir + "\n")
    child.stdin.flush()
    if child.stdout.readline() != "imported\n" or child.stdout.readline() != "ready\n":
        child.kill()
        raise RuntimeError("crash child failed to start or to open the spool")


def _check(data_dir: str, acked: list[tuple[str, int]]) -> list[str]:
    spool = Spool.open(data_dir)
    try:
        lost = []
        for job_id, n in acked:
            seqs = spool.find_jobs(job_id, "default")
            if len(seqs) != 1 or len(spool.recipients(seqs[0])) != n:
                lost.append(job_id)
        return lost
    finally:
        spool.close()


def run(
    kills: int, base_dir: str, *, per_dir: int = 50, seed: int | None = None, timeout: float = 30
) -> CrashStats:
    """Do ``kills`` kill-and-check cycles; a new spool under ``base_dir`` every ``per_dir``
    kills (recovery scans every recipient, so this bounds the cost of a cycle)."""
    rng = random.Random(seed)
    stats = CrashStats()
    start = time.monotonic()
    nxt = _spawn(0)
    for cycle in range(kills):
        data_dir = os.path.join(base_dir, f"spool{cycle // per_dir}")
        child = nxt
        _start(child, data_dir)
        nxt = _spawn(cycle + 1) if cycle + 1 < kills else None
        time.sleep(rng.uniform(0.02, 0.2))
        os.kill(child.pid, signal.SIGKILL)
        out, _ = child.communicate(timeout=timeout)
        # Only complete lines count: the child may die in the middle of a write.
        lines = out.split("\n")[:-1]
        acked = [(i, int(n)) for i, n in (line.split() for line in lines)]
        stats.kills += 1
        stats.acked += len(acked)
        stats.acked_jobs.setdefault(data_dir, []).extend(acked)
        stats.exit_codes.append(child.returncode)
        stats.lost += _check(data_dir, acked)
    stats.seconds = time.monotonic() - start
    return stats


def main(argv: list[str] | None = None) -> int:
    """Run the crash benchmark and print a short report."""
    parser = argparse.ArgumentParser(prog="python -m salvo.bench.spool_crash")
    parser.add_argument("--kills", type=int, default=1000)
    parser.add_argument("--data", help="base directory (default: a new temporary one)")
    parser.add_argument("--per-dir", type=int, default=50, help="kills per spool directory")
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)
    data_dir = args.data or tempfile.mkdtemp(prefix="salvo-crash-")
    stats = run(args.kills, data_dir, per_dir=args.per_dir, seed=args.seed)
    print(
        f"kills {stats.kills}  acked jobs {stats.acked}  lost {len(stats.lost)}  "
        f"time {stats.seconds:.1f} s  ({data_dir})"
    )
    if stats.lost:
        print("lost:", " ".join(stats.lost[:20]))
    return 1 if stats.lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
