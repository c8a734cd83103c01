"""Expiry through the spool (a real LMDB in tmp_path, time passed in).

A job's lifetime (``expires_in``, else its traffic class's ``expire_after``, else the
default) counts from the moment it may first be sent: ``send_after`` when that is later
than acceptance (docs/protocol.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from salvo.core.protocol import Job, Recipient
from salvo.core.spool import Outcome, Spool, SpoolConfig

NOW = 1_700_000_000.0
DAY = 86400.0


def make_job(job_id: str, *, traffic: str = "default", **kw: object) -> Job:
    return Job(
        id=job_id,
        from_="news@acme.example",
        recipients=[Recipient(to=f"{job_id}@example.org")],
        text="hi",
        traffic=traffic,
        **kw,
    )


@pytest.fixture
def spool(tmp_path: Path):
    config = SpoolConfig(
        max_age=5 * DAY, max_age_by_traffic={"default": 5 * DAY, "marketing": 60.0}
    )
    spool = Spool.open(tmp_path / "data", config, map_size=1 << 20)
    yield spool
    spool.close()


def expiry_of(spool: Spool, job_id: str) -> float:
    (seq,) = spool.find_jobs(job_id, "default")
    ((_, rec),) = spool.recipients(seq)
    assert spool.get_job(seq).expires_at == rec.expires_at
    return rec.expires_at


def state_of(spool: Spool, job_id: str) -> str:
    (seq,) = spool.find_jobs(job_id, "default")
    ((_, rec),) = spool.recipients(seq)
    return rec.state


def test_default_expiry_counts_from_send_after(spool: Spool) -> None:
    later = NOW + 7 * DAY
    spool.submit_many([make_job("later", send_after=later)], NOW)
    assert expiry_of(spool, "later") == later + 5 * DAY
    # Six days on (past acceptance + 5 days) nothing has expired: it was never tried.
    assert spool.expire_due(NOW + 6 * DAY) == []
    assert spool.claim_due(NOW + 6 * DAY, 10).claimed == []
    claim = spool.claim_due(later, 10)
    assert [c.job_id for c in claim.claimed] == ["later"] and claim.finished == []


def test_expires_in_shorter_than_the_send_after_delay(spool: Spool) -> None:
    later = NOW + 3600
    spool.submit_many([make_job("short", send_after=later, expires_in=60)], NOW)
    assert expiry_of(spool, "short") == later + 60
    assert spool.expire_due(later - 1) == []
    claim = spool.claim_due(later, 10)
    assert [c.job_id for c in claim.claimed] == ["short"] and claim.finished == []
    (c,) = claim.claimed
    spool.record_outcomes(
        [Outcome(seq=c.seq, idx=c.idx, state="deferred", next_attempt=later + 30)], later
    )
    assert state_of(spool, "short") == "deferred"
    changes = spool.expire_due(later + 61)
    assert [ch.record.state for ch in changes] == ["expired"]


def test_send_after_in_the_past_counts_from_acceptance(spool: Spool) -> None:
    spool.submit_many([make_job("past", send_after=NOW - DAY, expires_in=100)], NOW)
    assert expiry_of(spool, "past") == NOW + 100


def test_the_traffic_class_expiry_applies(spool: Spool) -> None:
    jobs = [
        make_job("mkt", traffic="marketing"),
        make_job("dflt"),
        make_job("unknown", traffic="no-such-class"),
        make_job("own", traffic="marketing", expires_in=3600),
    ]
    spool.submit_many(jobs, NOW)
    assert expiry_of(spool, "mkt") == NOW + 60
    assert expiry_of(spool, "dflt") == NOW + 5 * DAY
    assert expiry_of(spool, "unknown") == NOW + 5 * DAY  # an unknown class is default
    assert expiry_of(spool, "own") == NOW + 3600  # expires_in wins over the class
    assert spool.expire_due(NOW + 59) == []
    changes = spool.expire_due(NOW + 61)
    assert [(spool.get_job(ch.seq).id, ch.record.state) for ch in changes] == [("mkt", "expired")]
    assert {j: state_of(spool, j) for j in ("dflt", "unknown", "own")} == {
        "dflt": "queued",
        "unknown": "queued",
        "own": "queued",
    }


def test_the_traffic_class_expiry_counts_from_send_after(spool: Spool) -> None:
    later = NOW + 3600
    spool.submit_many([make_job("mkt-later", traffic="marketing", send_after=later)], NOW)
    assert expiry_of(spool, "mkt-later") == later + 60
    claim = spool.claim_due(later + 30, 10)
    assert [c.job_id for c in claim.claimed] == ["mkt-later"] and claim.finished == []
