"""Space: a hard map cap fills up, nothing committed is lost, writes resume; retention."""

from __future__ import annotations

from pathlib import Path

import pytest

from salvo.core.errors import SpoolFullError
from salvo.core.protocol import Job, Recipient
from salvo.core.spool import Outcome, Spool, SpoolConfig

CONFIG = SpoolConfig(retention=60, idempotency_window=60, max_age=3600)
PAD = "v" * 2000  # 2 KB of variables per recipient


def job(job_id: str, n: int = 2) -> Job:
    rcpts = [Recipient(to=f"r{i}@d{i}.example", vars={"pad": PAD}) for i in range(n)]
    return Job(id=job_id, from_="news@acme.example", recipients=rcpts, text="hello " * 50)


def finish_all(spool: Spool, now: float) -> None:
    for _ in range(1000):
        claim = spool.claim_due(now, 500)
        if not claim.claimed:
            return
        spool.record_outcomes(
            [Outcome(seq=c.seq, idx=c.idx, state="delivered", code=250) for c in claim.claimed],
            now,
        )


def test_map_cap_refuses_with_a_temporary_error_then_recovers(tmp_path: Path) -> None:
    kw = dict(map_size=256 << 10, max_map_size=4 << 20, reserve=512 << 10)
    spool = Spool.open(tmp_path / "data", CONFIG, **kw)
    committed = []
    with pytest.raises(SpoolFullError) as err:
        for i in range(10_000):  # bounded: ~4 MiB holds far fewer
            spool.submit_many([job(f"j{i}-{k}") for k in range(5)], 1000.0)
            committed += [f"j{i}-{k}" for k in range(5)]
    assert err.value.temporary
    assert len(committed) > 50
    assert spool.store.env.info()["map_size"] <= 4 << 20

    # Everything committed is intact, also after closing and reopening.
    spool.close()
    spool = Spool.open(tmp_path / "data", CONFIG, **kw)
    for job_id in committed:
        (seq,) = spool.find_jobs(job_id, "default")
        assert len(spool.recipients(seq)) == 2
    with pytest.raises(SpoolFullError):
        for i in range(1000):  # a batch was refused; smaller ones fill the rest, then stop
            spool.submit_many([job(f"single-{i}")], 1000.0)
            committed.append(f"single-{i}")

    # Deliveries still get recorded (the reserve), then purge frees space, writes resume.
    finish_all(spool, 1000.0)
    assert spool.summary(1000.0).states["delivered"] == 2 * len(committed)
    for job_id in committed:
        assert spool.find_jobs(job_id, "default")
    for _ in range(100):
        if not spool.purge(2000.0):
            break
    (res,) = spool.submit_many([job("after-purge")], 2000.0)
    assert res.reply.status == "accepted"
    spool.close()


def test_file_size_plateaus_under_steady_load(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path / "data", CONFIG, map_size=1 << 20)
    now = 1000.0
    sizes = []
    for cycle in range(60):
        spool.submit_many([job(f"c{cycle}-{k}", 3) for k in range(20)], now)
        finish_all(spool, now)
        now += 30  # retention is 60 s: each purge drops the jobs of two cycles ago
        spool.purge(now)
        sizes.append(spool.store.file_size())
    spool.close()
    assert sizes[-1] == sizes[29], sizes  # no growth over the last 30 cycles
    assert sizes[-1] < 4 * sizes[2]
