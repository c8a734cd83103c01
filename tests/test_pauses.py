"""Pure tests of salvo.core.pauses and the policy's operator hold-back, and the spool's
pause records, cancel and resume on a real store."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from salvo.core import pauses as pz
from salvo.core import policy
from salvo.core.protocol import Job, Recipient
from salvo.core.spool import Outcome, Spool

NOW = 1_700_000_000.0


def pause(scope: str, name: str, until: float = 0.0, kind: str = pz.PAUSE) -> pz.Pause:
    return pz.Pause(kind, scope, name, until, "test", NOW - 10)


@pytest.mark.parametrize(
    ("entries", "provider", "tenant", "campaign", "left", "what"),
    [
        ([], "gmail", "acme", "spring", 0.0, ""),
        ([pause("campaign", "spring")], "gmail", "acme", "spring", math.inf, "campaign spring"),
        ([pause("campaign", "spring")], "gmail", "acme", "autumn", 0.0, ""),
        ([pause("tenant", "acme", NOW + 60)], None, "acme", "", 60.0, "tenant acme"),
        ([pause("tenant", "acme", NOW - 1)], None, "acme", "", 0.0, ""),
        ([pause("provider", "gmail")], "gmail", "acme", "x", math.inf, "provider gmail"),
        ([pause("provider", "gmail")], None, "acme", "x", 0.0, ""),  # provider not known yet
        (
            [pause("provider", "gmail", NOW + 30), pause("campaign", "x", NOW + 90)],
            "gmail",
            "acme",
            "x",
            90.0,
            "campaign x",
        ),
        ([pause("source", "192.0.2.1")], "gmail", "acme", "x", 0.0, ""),
    ],
)
def test_paused_for(entries, provider, tenant, campaign, left, what):
    assert pz.Pauses(entries).paused_for(provider, tenant, campaign, NOW) == (left, what)


def test_cancel_covers_jobs_submitted_before_it_only():
    p = pz.Pauses([pause("campaign", "spring", kind=pz.CANCEL)])
    assert p.cancelled("acme", "spring", NOW - 20)
    assert not p.cancelled("acme", "spring", NOW)  # submitted after the cancel
    assert not p.cancelled("acme", "autumn", NOW - 20)
    assert p.paused_for("gmail", "acme", "spring", NOW) == (0.0, "")  # a cancel is no pause


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(None, None), ("", None), ("2h", 7200.0), ("30m", 1800.0), ("45", 45.0), ("1.5d", 129600.0)],
)
def test_parse_for(text, seconds):
    assert pz.parse_for(text) == seconds


@pytest.mark.parametrize("text", ["0", "2x", "-1h", "h", "400d", 5])
def test_parse_for_refuses(text):
    with pytest.raises(pz.PauseError):
        pz.parse_for(text)


@pytest.mark.parametrize(
    ("scope", "name"),
    [("planet", "x"), ("campaign", ""), ("tenant", "a\nb"), ("tenant", "x" * 201)],
)
def test_check_refuses(scope, name):
    with pytest.raises(pz.PauseError):
        pz.check(scope, name)


def test_check_cancel_scopes():
    pz.check("campaign", "x", pz.CANCEL_SCOPES)
    with pytest.raises(pz.PauseError, match="unknown scope"):
        pz.check("provider", "gmail", pz.CANCEL_SCOPES)


@given(
    left=st.one_of(st.just(math.inf), st.floats(0.001, 1e6)),
    seed=st.integers(0, 2**32),
)
def test_operator_hold_is_due_after_the_pause(left, seed):
    held = policy.operator_hold(left, "campaign x", random.Random(seed))
    assert held is not None and "campaign x" in held.reason
    if math.isinf(left):
        assert policy.PAUSE_RECHECK <= held.delay <= policy.PAUSE_RECHECK * 1.1
    else:
        assert left <= held.delay <= left + max(1.0, left * 0.1)


def test_operator_hold_none_when_not_paused():
    assert policy.operator_hold(0.0, "", random.Random(1)) is None


@given(st.integers(0, 10**7))
def test_resume_window_bounded(n):
    w = policy.resume_window(n)
    assert 0 <= w <= policy.RESUME_MAX_WINDOW
    assert w == pytest.approx(min(policy.RESUME_MAX_WINDOW, n / policy.RESUME_RATE))


@given(
    st.lists(st.sampled_from("abc"), unique=True, min_size=1, max_size=3),
    st.sets(st.sampled_from("abc")),
)
def test_source_picker_skips_paused(sources, paused):
    picker = policy.SourcePicker(sources, [2, 1, 1][: len(sources)])
    picks = [picker.next(frozenset(paused)) for _ in range(12)]
    live = [s for s in sources if s not in paused]
    if not live:
        assert picks == [None] * 12
    else:
        assert set(picks) == set(live)


# -- the spool -------------------------------------------------------------------------------


def job(job_id: str, campaign: str, n: int, tenant: str = "acme") -> Job:
    return Job(
        id=job_id,
        tenant=tenant,
        campaign=campaign,
        from_="news@acme.example",
        recipients=[Recipient(to=f"r{i}@example.org") for i in range(n)],
        subject="hi",
        text="hello",
    )


@pytest.fixture
def spool(tmp_path: Path):
    s = Spool.open(tmp_path / "data", random_bytes=random.Random(7).randbytes)
    yield s
    s.close()


def test_pause_records_survive_reopening(tmp_path: Path):
    s = Spool.open(tmp_path / "d", random_bytes=random.Random(1).randbytes)
    s.set_pause(pause("campaign", "spring", NOW + 60))
    s.set_pause(pause("provider", "gmail"))
    s.close()
    s = Spool.open(tmp_path / "d", random_bytes=random.Random(1).randbytes)
    entries = {(p.scope, p.name): p for p in s.pause_entries()}
    assert entries[("campaign", "spring")].until == NOW + 60
    assert entries[("provider", "gmail")].open_ended()
    assert s.clear_pause("provider", "gmail") and not s.clear_pause("provider", "gmail")
    s.close()


def test_cancel_ends_waiting_recipients_and_leaves_in_flight(spool: Spool):
    spool.submit_many([job("j1", "spring", 5), job("j2", "autumn", 3)], NOW - 100)
    claim = spool.claim_due(NOW - 99, 2)  # two of spring in flight
    assert len(claim.claimed) == 2
    changes = spool.cancel(pz.Pause(pz.CANCEL, "campaign", "spring", 0, "t", NOW), NOW)
    assert len(changes) == 3 and {c.record.state for c in changes} == {"cancelled"}
    summary = spool.summary(NOW)
    assert summary.states["cancelled"] == 3
    assert summary.states["in-flight"] == 2 and summary.states["queued"] == 3
    # An in-flight one that comes back deferred is cancelled by the scheduler later:
    # the spool records a cancelled outcome as final.
    c = claim.claimed[0]
    spool.record_outcomes([Outcome(seq=c.seq, idx=c.idx, state="cancelled")], NOW)
    assert spool.get_recipient(c.seq, c.idx).state == "cancelled"


def test_cancel_a_tenant(spool: Spool):
    spool.submit_many([job("j1", "a", 2), job("j2", "b", 2), job("j3", "a", 2, "other")], NOW)
    changes = spool.cancel(pz.Pause(pz.CANCEL, "tenant", "acme", 0, "t", NOW), NOW)
    assert len(changes) == 4
    assert spool.summary(NOW).states["queued"] == 2


def test_make_due_spreads_what_the_pause_held(spool: Spool):
    spool.submit_many([job("j1", "spring", 50), job("j2", "autumn", 5)], NOW)
    claim = spool.claim_due(NOW, 100)
    text = "paused by the operator: campaign spring"
    spool.record_outcomes(
        [
            Outcome(seq=c.seq, idx=c.idx, state="queued", text=text, next_attempt=NOW + 60)
            for c in claim.claimed
            if c.job_id == "j1"
        ]
        + [
            Outcome(seq=c.seq, idx=c.idx, state="queued", text="other", next_attempt=NOW + 60)
            for c in claim.claimed
            if c.job_id == "j2"
        ],
        NOW,
    )
    n = spool.make_due("campaign", "spring", NOW + 1, lambda n: 0.5, random.Random(3))
    assert n == 50
    seq = next(c.seq for c in claim.claimed if c.job_id == "j1")
    times = {rec.next_attempt for _, rec in spool.recipients(seq)}
    assert len(times) > 1 and all(NOW + 1 <= t <= NOW + 1.5 for t in times)
    due = spool.claim_due(NOW + 1.5, 1000)
    assert {c.job_id for c in due.claimed} == {"j1"} and len(due.claimed) == 50
    # Spread: not all in the same millisecond.
    assert spool.make_due("campaign", "spring", NOW + 2, lambda n: 0.5, random.Random(3)) == 0


@pytest.mark.parametrize(
    "body, error",
    [
        (b"[" * 4096, "not JSON"),  # nesting past the recursion limit: was a 500
        (b'{"a":' * 2000 + b"1" + b"}" * 2000, "not JSON"),
        (b"\xff", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"scope": "tenant"}', "'name'"),
        (b'{"scope": 3, "name": "x"}', "'scope'"),
    ],
)
def test_control_body_refuses_with_a_pause_error(body: bytes, error: str) -> None:
    with pytest.raises(pz.PauseError, match=error):
        pz.control_body(body)


def test_control_body_returns_the_object() -> None:
    body = pz.control_body(b'{"scope": "tenant", "name": "acme", "for": "2h"}')
    assert body == {"scope": "tenant", "name": "acme", "for": "2h"}
