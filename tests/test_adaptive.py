"""The adaptive message rate and its signals (salvo.core.adaptive), and how the shaper
uses them: pure, with time passed in."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from salvo.core.adaptive import (
    DECREASE,
    DEFERRAL_WINDOW,
    FLOOR,
    HOLD,
    LATENCY_WINDOW,
    AdaptiveRate,
    RateMeter,
    Signals,
)
from salvo.core.shaping import Limits, Shaper

EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("signal"), st.just(0.0)),
        st.tuples(st.just("accepted"), st.integers(0, 500).map(float)),
        st.tuples(st.just("advance"), st.floats(0.0, 30.0)),
    ),
    max_size=200,
)
CEILINGS = st.one_of(st.just(math.inf), st.floats(0.01, 10_000.0))


@settings(max_examples=300)
@given(ceiling=CEILINGS, events=EVENTS)
def test_never_above_the_ceiling_nor_below_the_floor(ceiling, events):
    aimd = AdaptiveRate(ceiling, release_after=120.0)
    now = 0.0
    for kind, value in events:
        if kind == "signal":
            aimd.decrease(now)
        elif kind == "accepted":
            aimd.accepted(now, int(value))
        else:
            now += value
        aimd.tick(now)
        assert aimd.rate <= ceiling
        assert aimd.rate >= min(FLOOR, ceiling)


@settings(max_examples=200)
@given(ceiling=CEILINGS, accepted=st.integers(1, 5000), elapsed=st.floats(0.5, 4.5))
def test_a_signal_lowers_the_rate_below_what_got_through(ceiling, accepted, elapsed):
    aimd = AdaptiveRate(ceiling)
    aimd.accepted(0.0, accepted)
    before = aimd.rate
    measured = aimd.meter.rate(elapsed)
    assert aimd.decrease(elapsed)
    assert aimd.rate <= before
    assert aimd.rate == pytest.approx(
        min(ceiling, max(min(FLOOR, ceiling), DECREASE * min(before, measured)))
    )
    assert aimd.rate < ceiling or aimd.rate == min(FLOOR, ceiling)


@settings(max_examples=200)
@given(ceiling=CEILINGS, rate=st.floats(10, 2000), quiet=st.floats(HOLD * 2, 600))
def test_it_recovers_while_healthy(ceiling, rate, quiet):
    aimd = AdaptiveRate(ceiling, release_after=300.0)
    for second in range(5):
        aimd.accepted(float(second), int(rate))
    assert aimd.decrease(5.0)
    low = aimd.rate
    aimd.tick(5.0 + quiet)
    assert aimd.rate >= low
    if low < ceiling:
        assert aimd.rate > low  # grew
    aimd.tick(5.0 + 10_000)
    assert aimd.rate == ceiling  # back to the ceiling (unlimited: let go) in the end


def test_one_decrease_per_hold():
    aimd = AdaptiveRate(100.0)
    aimd.accepted(0.0, 100)
    assert aimd.decrease(1.0)
    first = aimd.rate
    assert not aimd.decrease(1.0 + HOLD / 2)  # the same storm
    assert aimd.rate == first
    assert aimd.decrease(1.0 + HOLD)
    assert aimd.rate < first


def test_from_unlimited_it_lands_near_what_the_provider_accepts():
    # A provider taking 200 msg/s while we send faster: a few decreases land the rate
    # within 20% of it.
    aimd = AdaptiveRate()
    assert math.isinf(aimd.rate)
    assert not aimd.decrease(0.0)  # nothing accepted yet: nothing to base a rate on
    now = 0.0
    for _ in range(20):
        aimd.accepted(now, 50)  # 200 msg/s in 0.25 s bins
        now += 0.25
    assert aimd.decrease(now)
    assert 0.75 * 200 <= aimd.rate <= 200


def test_without_a_ceiling_the_rate_is_let_go_after_release_after():
    aimd = AdaptiveRate(release_after=60.0)
    aimd.accepted(0.0, 100)
    aimd.decrease(1.0)
    aimd.tick(60.0)
    assert not math.isinf(aimd.rate)
    aimd.tick(61.0)
    assert math.isinf(aimd.rate)


def test_the_rate_meter_forgets_what_is_older_than_its_window():
    meter = RateMeter()
    meter.add(0.0, 1000)
    assert meter.rate(1.0) == pytest.approx(1000)
    assert meter.rate(100.0) == 0.0
    meter.add(100.0, 10)
    assert meter.rate(105.0) < 10


def test_a_high_deferral_ratio_is_one_signal():
    signals = Signals()
    assert not any(signals.outcome(False) for _ in range(1000))
    got = [signals.outcome(i % 2 == 0) for i in range(DEFERRAL_WINDOW)]
    assert got.count(True) == 1
    assert signals.deferral_ratio() < 0.5  # the window started over


def test_a_rising_reply_time_is_a_signal_and_a_steady_one_is_not():
    signals = Signals()
    assert not any(signals.reply_time(0.1) for _ in range(LATENCY_WINDOW * 20))
    assert not any(signals.reply_time(0.002) for _ in range(LATENCY_WINDOW))  # faster: fine
    got = [signals.reply_time(3.0) for _ in range(LATENCY_WINDOW)]
    assert got[-1]
    # Loopback jitter: a large factor on a tiny time is no signal.
    calm = Signals()
    for _ in range(4):
        assert not any(calm.reply_time(0.001) for _ in range(LATENCY_WINDOW))
    assert not any(calm.reply_time(0.05) for _ in range(LATENCY_WINDOW))


def test_the_shaper_paces_messages_at_the_adaptive_rate():
    shaper = Shaper(Limits())
    assert shaper.rates()["messages_per_second"] == 0.0  # no limit
    assert all(shaper.take_message(0.0) == 0 for _ in range(1000))
    shaper.answered(0.5, 100)
    assert shaper.throttled(1.0)
    assert 0 < shaper.message_rate < 200
    taken, now = 0, 1.0
    while now < 11.0:
        if shaper.take_message(now) == 0:
            taken += 1
        now += 0.001
    assert taken <= shaper.message_rate * 10 + shaper.message_rate / 10 + 1


def test_the_shaper_signals_on_deferrals_latency_and_refusals():
    shaper = Shaper(Limits(max_connections=8, max_messages_per_second=100))
    for _ in range(DEFERRAL_WINDOW):
        shaper.deferred(0.0)
    assert shaper.max_connections == 4 and shaper.message_rate < 100
    shaper = Shaper(Limits(max_connections=8))
    for _ in range(LATENCY_WINDOW * 2):
        shaper.reply_time(0.0, 0.01)
    assert shaper.max_connections == 8
    assert any(shaper.reply_time(0.0, 2.0) for _ in range(LATENCY_WINDOW))
    assert shaper.max_connections == 4
    shaper = Shaper(Limits(max_connections=8))
    assert shaper.opened(0.0) and shaper.opened(0.0)
    assert shaper.connect_failed(0.0) == 0.0  # refused beside an open one: no pause...
    assert shaper.max_connections == 4  # ...but a signal


@settings(max_examples=200)
@given(
    max_connections=st.integers(1, 50),
    ceiling=st.sampled_from([0.0, 0.5, 20.0, 500.0]),
    events=st.lists(
        st.tuples(
            st.sampled_from(["421", "deferred", "slow", "fast", "delivered", "advance"]),
            st.floats(0.0, 20.0),
        ),
        max_size=200,
    ),
)
def test_the_shaper_stays_between_floor_and_caps(max_connections, ceiling, events):
    shaper = Shaper(Limits(max_connections=max_connections, max_messages_per_second=ceiling))
    cap = ceiling or math.inf
    now = 0.0
    for kind, value in events:
        if kind == "421":
            shaper.throttled(now)
        elif kind == "deferred":
            shaper.deferred(now)
        elif kind in ("slow", "fast"):
            shaper.reply_time(now, 3.0 if kind == "slow" else 0.01)
        elif kind == "delivered":
            shaper.answered(now, int(value * 10))
        else:
            now += value
        shaper.tick(now)
        assert 1 <= shaper.max_connections <= max_connections
        assert min(FLOOR, cap) <= shaper.message_rate <= cap
