"""Shaping: GCRA, limits, backoff and recovery, throttle signatures (a fake clock)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from salvo.core.adaptive import DECREASE
from salvo.core.providers import ProviderTable
from salvo.core.shaping import GCRA, HOLD, MIN_FACTOR, RECOVERY_STEP, Limits, Shaper, is_throttle

# -- GCRA ---------------------------------------------------------------------------------


def conforming(gcra: GCRA, now: float, tries: int) -> int:
    return sum(1 for _ in range(tries) if gcra.take(now) == 0)


def test_gcra_burst_then_one_per_interval():
    gcra = GCRA(100, 1.0)  # 100/s: interval 10 ms, burst 10
    assert gcra.burst == 10
    assert conforming(gcra, 0.0, 50) == 10  # the burst, at one instant
    assert gcra.wait(0.0) == pytest.approx(0.01)
    assert conforming(gcra, 0.005, 5) == 0  # too early
    assert conforming(gcra, 0.01, 5) == 1  # one interval later: one more


def test_gcra_steady_rate_over_a_fake_hour():
    gcra = GCRA(360, 3600.0)  # 360/h: one per 10 s, burst 36
    took = 0
    now = 0.0
    for _ in range(10_000):  # try every second for 10 000 s
        took += gcra.take(now) == 0
        now += 1.0
    # In any t seconds at most burst + t / interval cells.
    assert took <= 36 + 10_000 / 10
    assert took >= 10_000 / 10  # and it never starves a steady sender


def test_gcra_waits_exactly_as_long_as_it_says():
    gcra = GCRA(2, 1.0, burst=1)
    assert gcra.take(5.0) == 0
    wait = gcra.take(5.0)
    assert wait == pytest.approx(0.5)
    assert gcra.take(5.0 + wait) == 0


def test_gcra_rate_change_keeps_history():
    gcra = GCRA(10, 1.0, burst=1)
    gcra.take(0.0)
    gcra.set_rate(1, 1.0)
    assert gcra.take(0.05) > 0  # the old TAT still applies
    assert gcra.take(0.1) == 0
    assert gcra.wait(0.1) == pytest.approx(1.0)  # then the new interval


@given(
    rate=st.integers(1, 1000),
    steps=st.lists(st.floats(0, 2, allow_nan=False), min_size=1, max_size=200),
)
def test_gcra_never_exceeds_burst_plus_rate(rate: int, steps: list[float]):
    gcra = GCRA(rate, 1.0)
    now, took = 0.0, 0
    for step in steps:
        now += step
        took += gcra.take(now) == 0
    assert took <= gcra.burst + now * rate + 1e-6


# -- limits and the shaper ------------------------------------------------------------------


def test_concurrency_limit_and_connection_rate():
    shaper = Shaper(Limits(max_connections=3, max_new_connections_per_minute=60))
    # 60/min: burst 6, so the concurrency limit stops us first.
    assert [shaper.opened(0.0) for _ in range(5)] == [True, True, True, False, False]
    assert shaper.open_wait(0.0) == math.inf
    shaper.closed()
    assert shaper.opened(0.0)
    shaper.active = 0
    assert sum(shaper.opened(0.0) for _ in range(10)) == 2  # 4 taken: 2 left of the burst
    shaper.active = 0
    assert not shaper.opened(0.0)
    assert shaper.open_wait(0.0) == pytest.approx(1.0)  # one per second
    assert shaper.opened(1.0)


def test_message_rates_per_second_and_per_hour():
    shaper = Shaper(Limits(max_messages_per_second=10, max_messages_per_hour=20))
    # burst: 1 per second, 2 per hour
    assert shaper.take_message(0.0) == 0
    assert shaper.take_message(0.0) > 0  # per second
    assert shaper.take_message(0.1) == 0
    wait = shaper.take_message(0.2)
    assert wait == pytest.approx(180 - 0.2)  # per hour: one per 180 s after the burst
    assert shaper.take_message(180.0) == 0


def test_no_rates_means_no_waiting():
    shaper = Shaper(Limits())
    assert all(shaper.take_message(0.0) == 0 for _ in range(1000))


def test_throttle_halves_then_recovers_step_by_step():
    lim = Limits(
        max_connections=16, max_messages_per_second=100, backoff_time=300, recovery_interval=60
    )
    shaper = Shaper(lim)
    assert shaper.throttled(1000.0)
    assert shaper.max_connections == 8
    # The message rate follows its own rule (salvo.core.adaptive): nothing was accepted
    # yet, so it is a decrease of the configured rate.
    assert shaper.rates()["messages_per_second"] == pytest.approx(DECREASE * 100)
    assert not shaper.throttled(1000.0 + HOLD / 2)  # the same storm: one halving
    assert shaper.max_connections == 8
    assert shaper.throttled(1000.0 + HOLD)
    assert shaper.max_connections == 4  # a later signal halves again
    t = 1000.0 + HOLD
    shaper.tick(t + 299)
    assert shaper.factor == 0.25  # held during backoff_time
    shaper.tick(t + 300)
    assert shaper.factor == pytest.approx(0.25 + RECOVERY_STEP)
    shaper.tick(t + 300 + 59)
    assert shaper.factor == pytest.approx(0.25 + RECOVERY_STEP)
    shaper.tick(t + 360)
    assert shaper.factor == pytest.approx(0.25 + 2 * RECOVERY_STEP)
    shaper.tick(t + 100_000)
    assert shaper.factor == 1.0 and shaper.max_connections == 16


def test_over_limit_after_a_halving():
    shaper = Shaper(Limits(max_connections=4))
    assert sum(shaper.opened(0.0) for _ in range(4)) == 4
    shaper.throttled(0.0)
    assert shaper.over_limit(0.0)  # 4 open, 2 allowed: connections close after their message
    shaper.closed()
    shaper.closed()
    assert not shaper.over_limit(0.0)
    assert not shaper.opened(0.0)


def test_limit_never_below_one():
    shaper = Shaper(Limits(max_connections=2, max_messages_per_second=10))
    for i in range(100):
        shaper.throttled(i * HOLD)
    assert shaper.max_connections == 1
    assert shaper.factor == MIN_FACTOR
    assert shaper.rates()["messages_per_second"] > 0


def test_connection_failures_pause_with_doubling_backoff():
    shaper = Shaper(Limits(connect_backoff=10, max_connect_backoff=35))
    assert shaper.open_wait(0.0) == 0
    assert shaper.connect_failed(0.0) == 10
    assert shaper.open_wait(5.0) == pytest.approx(5.0)
    assert not shaper.opened(5.0)
    assert shaper.connect_failed(10.0) == 20
    assert shaper.connect_failed(30.0) == 35  # capped
    assert shaper.pause_left(30.0) == 35
    shaper.connect_succeeded()
    assert shaper.open_wait(30.0) == 0 and shaper.failures == 0


def test_a_failed_attempt_beside_open_connections_is_a_refusal_not_a_pause():
    shaper = Shaper(Limits(max_connections=4, connect_backoff=10))
    assert shaper.opened(0.0) and shaper.opened(0.0)
    assert shaper.connect_failed(0.0) == 0  # the other connection works: no pause
    assert shaper.failures == 0 and shaper.pause_left(0.0) == 0
    shaper.closed()  # the refused one closes; the last one fails too: dead
    assert shaper.connect_failed(1.0) == 10
    assert shaper.failures == 1 and shaper.pause_left(1.0) == 10


# -- throttle signatures ----------------------------------------------------------------------

TABLE = ProviderTable.build()

SIGNALS = [
    ("google", 450, "4.7.28 Our system has detected an unusual rate of unsolicited mail", True),
    ("google", 451, "4.7.28 Gmail has detected an unusual rate", True),
    ("google", 452, "4.2.2 The email account that you tried to reach is over quota", False),
    ("microsoft", 451, "4.7.500 Server busy. Please try again later from [192.0.2.1]", True),
    (
        "microsoft",
        451,
        "4.7.650 The mail server [192.0.2.1] has been temporarily rate limited",
        True,
    ),
    ("microsoft", 450, "4.2.1 mailbox temporarily unavailable", False),
    (
        "yahoo",
        451,
        "[TSS04] Messages from 192.0.2.1 temporarily deferred due to user complaints",
        True,
    ),
    ("yahoo", 452, "4.2.2 mailbox full", False),
    ("comcast", 452, "4.2.0 RL000010 Throttled", True),
    ("zoho", 450, "4.2.1 mailbox busy", False),
    ("default", 421, "4.7.0 Try again later, closing connection", True),  # any 421...
    ("default", 421, "4.7.0 Too many messages on this connection", False),  # ...but a limit
    ("default", 421, "4.7.0 Too many messages, slow down", True),
    ("default", 421, "4.4.2 Exceeded maximum number of recipients per session", False),
    ("default", 451, "4.3.0 local error", False),
]


@pytest.mark.parametrize(("provider", "code", "text", "expected"), SIGNALS)
def test_throttle_signatures(provider: str, code: int, text: str, expected: bool):
    signatures = TABLE.get(provider).throttle
    assert is_throttle(code, text, signatures) is expected


# -- every sequence of events -------------------------------------------------------------------

EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.just(0.0)),
        st.tuples(st.just("release"), st.just(0.0)),
        st.tuples(st.just("421"), st.just(0.0)),
        st.tuples(st.just("success"), st.just(0.0)),
        st.tuples(st.just("advance"), st.floats(0.0, 400.0, allow_nan=False)),
    ),
    max_size=300,
)


@settings(max_examples=300)
@given(
    max_connections=st.integers(1, 50),
    rate=st.sampled_from([0.0, 1.0, 50.0]),
    events=EVENTS,
)
def test_concurrency_never_exceeds_the_current_limit(max_connections, rate, events):
    lim = Limits(
        max_connections=max_connections,
        max_new_connections_per_minute=rate * 60,
        max_messages_per_second=rate,
        backoff_time=100,
        recovery_interval=30,
    )
    shaper = Shaper(lim)
    now = 0.0
    open_ = 0  # the model: connections granted and not released
    for kind, value in events:
        if kind == "acquire":
            before = shaper.max_connections
            if shaper.opened(now):
                open_ += 1
                assert open_ <= shaper.max_connections, "a connection opened above the limit"
            else:
                assert open_ >= before or shaper.open_wait(now) > 0
        elif kind == "release" and open_:
            shaper.closed()
            open_ -= 1
        elif kind == "421":
            shaper.throttled(now)
            if open_:  # a 421 ends that connection
                shaper.closed()
                open_ -= 1
        elif kind == "success":
            shaper.connect_succeeded()
            shaper.take_message(now)
        elif kind == "advance":
            now += value
        assert shaper.active == open_
        assert 1 <= shaper.max_connections <= max_connections
        assert MIN_FACTOR <= shaper.factor <= 1.0
        # Connections above a lowered limit are told to close.
        assert shaper.over_limit(now) == (open_ > shaper.max_connections)
