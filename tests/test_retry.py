"""The retry schedule and expiry with a fake clock (hypothesis; a real LMDB spool).

The retry schedule (salvo.core.policy): delays grow, are capped, and the jitter stays within its
bounds; after a pause comes its end, spread a little. Driven through the spool with a fake
``now``: a recipient deferred again and again ends ``expired``, and only when no attempt
is left before its expiry: at or after its expiry (claim_due, expire_due), or at a
deferral whose next attempt would come at or after it ("a deferral past expiry",
docs/spool.md). Never while an attempt before expiry remains.
"""

from __future__ import annotations

import itertools
import random
import shutil
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from salvo.core.policy import after_pause, deferred_until, retry_delay
from salvo.core.protocol import Job, Recipient
from salvo.core.spool import Outcome, Spool, SpoolConfig

START = 1_700_000_000.0
DAY = 86400.0


@given(
    first=st.floats(1, 3600),
    cap_factor=st.floats(1, 100),
    jitter=st.floats(0, 0.5),
    seed=st.integers(0, 2**32),
)
def test_delays_grow_are_capped_and_jitter_stays_in_bounds(first, cap_factor, jitter, seed):
    cap = first * cap_factor
    rng = random.Random(seed)
    plain = [retry_delay(n, first=first, cap=cap, jitter=0) for n in range(1, 80)]
    assert plain[0] == first
    assert all(b >= a for a, b in itertools.pairwise(plain))  # grow
    assert all(b == min(cap, 2 * a) for a, b in itertools.pairwise(plain))
    assert max(plain) == cap  # capped, and reached
    for n, base in enumerate(plain, start=1):
        d = retry_delay(n, first=first, cap=cap, jitter=jitter, rng=rng)
        assert base * (1 - jitter) - 1e-9 <= d <= base * (1 + jitter) + 1e-9


def test_zero_and_huge_attempt_counts():
    assert retry_delay(0, first=300, cap=3600, jitter=0) == 300
    assert retry_delay(10**9, first=300, cap=3600, jitter=0) == 3600
    assert deferred_until(START, 1, first=300, cap=3600, rng=random.Random(1)) > START


@given(left=st.floats(-10, 7200), seed=st.integers(0, 2**32))
def test_after_a_pause_comes_its_end_plus_a_little(left, seed):
    delay = after_pause(left, rng=random.Random(seed))
    end = max(0.0, left)
    assert end <= delay <= end + max(1.0, 0.1 * end)


def test_after_a_pause_is_spread():
    rng = random.Random(7)
    delays = {after_pause(60.0, rng=rng) for _ in range(20)}
    assert len(delays) == 20 and min(delays) >= 60.0 and max(delays) <= 66.0


def job(expires_in: float | None) -> Job:
    return Job(
        id="j",
        from_="news@acme.example",
        recipients=[Recipient(to="ann@example.org")],
        text="hi",
        expires_in=expires_in,
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    expires_in=st.one_of(st.none(), st.floats(1, 5 * DAY)),
    first=st.floats(1, 3600),
    cap=st.floats(3600, 4 * 3600),
    seed=st.integers(0, 2**32),
    # Per attempt: probe a little before it is due; come back on time or late; run
    # expire_due first.
    moves=st.lists(
        st.tuples(st.booleans(), st.floats(0, 7200), st.booleans()), min_size=1, max_size=20
    ),
)
def test_a_recipient_deferred_again_and_again_expires_never_early(
    expires_in, first, cap, seed, moves
):
    rng = random.Random(seed)
    folder = tempfile.mkdtemp(prefix="salvo-retry-")
    spool = Spool.open(folder, SpoolConfig(), map_size=1 << 20)  # max_age: 5 days
    try:
        now = START
        spool.submit_many([job(expires_in)], now)
        (seq,) = spool.find_jobs("j")
        idx = 0
        expires_at = spool.get_recipient(seq, idx).expires_at
        assert expires_at == now + (expires_in if expires_in is not None else 5 * DAY)
        attempts = 0
        ended = None
        # Bounded: the delays reach the cap (>= 1 h, jitter 20%) within a dozen attempts,
        # so 5 days take fewer than 200 attempts.
        for step in range(400):
            probe, late, expire_first = moves[step % len(moves)]
            if expire_first and spool.expire_due(now):
                ended = ("expire_due", now, None)
                break
            claim = spool.claim_due(now, 10)
            if claim.finished:
                assert [c.record.state for c in claim.finished] == ["expired"]
                ended = ("claim", now, None)
                break
            assert len(claim.claimed) == 1, "due and not claimed"
            assert now < expires_at  # never tried at or after its expiry
            assert claim.claimed[0].attempts == attempts
            when = deferred_until(now, attempts + 1, first=first, cap=cap, rng=rng)
            assert when > now
            out = Outcome(seq=seq, idx=idx, state="deferred", code=451, next_attempt=when)
            (change,) = spool.record_outcomes([out], now)
            attempts += 1
            if change.record.state == "expired":
                ended = ("deferral", now, when)
                break
            assert (change.record.state, change.record.attempts) == ("deferred", attempts)
            if probe:  # a little early: nothing is due yet
                early = now + (when - now) / 2
                assert not spool.claim_due(early, 10).claimed
                if spool.expire_due(early):
                    ended = ("expire_due", early, None)
                    break
            now = when + late
        else:
            raise AssertionError("the recipient never ended")
        where, at, next_try = ended
        final = spool.get_recipient(seq, idx)
        assert final.state == "expired"
        if where == "deferral":
            # Expired early only when its next attempt would have come at/after expiry.
            assert next_try >= expires_at
        else:
            assert at >= expires_at, (where, at, expires_at)
        assert final.attempts == attempts
    finally:
        spool.close()
        shutil.rmtree(folder, ignore_errors=True)
