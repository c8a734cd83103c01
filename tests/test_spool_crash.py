"""SIGKILL a child submitting through the Trio group-commit writer, 100 times.

Every job a child printed (acked: printed only after its commit returned) must be in the
spool after the kill, once, with all its recipients; and at the end every acked job of a
spool directory (acked before any of its later kills and recoveries) is still there, each
recipient claimable exactly once with its variables. The run must have done real work:
each child was killed while running, and jobs were acked into every spool directory.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import msgspec

from salvo.bench.spool_crash import run
from salvo.core.protocol import Job, Recipient
from salvo.core.spool import Outcome, Spool

KILLS = 100
PER_DIR = 10


def lost_jobs(data_dir: str, acked: list[tuple[str, int]]) -> list[str]:
    """The acked ids not in the spool as acked: missing, twice, short of recipients, or a
    recipient not claimable exactly once with its variables (``{"k": k, ...}``, where
    ``k`` ends the id). Claims every due recipient (the spool is used up afterwards)."""
    spool = Spool.open(data_dir)
    try:
        claimed: Counter[tuple[str, int]] = Counter()
        variables: dict[tuple[str, int], dict] = {}
        later = time.time() + 60  # everything submitted is due, nothing has expired
        while batch := spool.claim_due(later, 10_000, with_bodies=False).claimed:
            for c in batch:
                claimed[c.job_id, c.idx] += 1
                variables[c.job_id, c.idx] = msgspec.msgpack.decode(c.vars) if c.vars else {}
        lost = []
        for job_id, n in acked:
            seqs = spool.find_jobs(job_id, "default")
            k = int(job_id.rsplit("-", 1)[1])
            complete = (
                len(seqs) == 1
                and len(spool.recipients(seqs[0])) == n
                and all(claimed[job_id, i] == 1 for i in range(n))
                and all(variables[job_id, i].get("k") == k for i in range(n))
            )
            if not complete:
                lost.append(job_id)
        return lost
    finally:
        spool.close()


def test_every_acked_job_survives_sigkill(tmp_path: Path) -> None:
    stats = run(KILLS, str(tmp_path), per_dir=PER_DIR, seed=1234)
    assert stats.kills == KILLS
    # Each child was running when killed (none died of its own accord first).
    assert stats.exit_codes == [-signal.SIGKILL] * KILLS
    # Work was acked, into every spool directory.
    assert len(stats.acked_jobs) == KILLS // PER_DIR
    assert all(len(acked) > 0 for acked in stats.acked_jobs.values()), stats.acked_jobs.keys()
    assert stats.acked == sum(len(a) for a in stats.acked_jobs.values()) > KILLS
    # Nothing acked is lost: right after each kill...
    assert stats.lost == []
    # ...nor by the kills and recoveries that followed it in the same spool.
    for data_dir, acked in stats.acked_jobs.items():
        assert len({job_id for job_id, _ in acked}) == len(acked)  # ids are unique
        lost = lost_jobs(data_dir, acked)
        assert lost == [], f"{data_dir}: {len(lost)} acked jobs lost, e.g. {lost[:5]}"


def test_the_check_finds_a_lost_job(tmp_path: Path) -> None:
    data = tmp_path / "s"
    spool = Spool.open(data, map_size=1 << 20)
    try:
        jobs = [
            Job(
                id=f"c-0-{k}",
                from_="crash@salvo.example",
                recipients=[Recipient(to=f"r{i}@d.example", vars={"k": k}) for i in range(2)],
                text="crash",
            )
            for k in (7, 9)
        ]
        now = time.time()
        spool.submit_many(jobs, now)
        # One recipient of c-0-9 leaves the queue (nothing is delivered in the crash run).
        (c, *_) = [c for c in spool.claim_due(now, 10).claimed if c.job_id == "c-0-9"]
        spool.record_outcomes([Outcome(seq=c.seq, idx=c.idx, state="delivered")], now)
    finally:
        spool.close()
    acked = [("c-0-7", 2), ("c-0-8", 1), ("c-0-9", 2)]  # c-0-8 acked, never written
    assert lost_jobs(str(data), acked) == ["c-0-8", "c-0-9"]
    assert lost_jobs(str(data), [("c-0-7", 3)]) == ["c-0-7"]  # a recipient short
    assert lost_jobs(str(data), [("c-0-7", 2)]) == []
