"""The pure parts of the cluster-wide throttles: GCRA grants over several keys, the grant
size, the tokens a lane spends, and a node's share while Redis is down."""

from __future__ import annotations

import math
import random

from hypothesis import given
from hypothesis import strategies as st

from salvo.core.cluster_throttle import (
    MAX_AHEAD,
    ConnSpec,
    LocalShare,
    Tokens,
    conn_specs,
    grant,
    grant_size,
    rate_specs,
)
from salvo.core.shaping import Limits


def _specs(rate: float, total: float = 0.0):
    limits = Limits(max_messages_per_second=rate, total_max_messages_per_second=total)
    return rate_specs(b"p", "10.0.0.1", "gmail", limits)


def test_rate_specs_name_the_lane_and_the_provider_total():
    specs = _specs(50, 100)
    assert [s.key for s in specs] == [b"p:rate:gmail\x0010.0.0.1:s", b"p:rate:gmail:t"]
    conns = conn_specs(b"p", None, "gmail", Limits(max_connections=5, total_max_connections=9))
    assert conns == [ConnSpec(b"p:conn:gmail\x00", 5), ConnSpec(b"p:conn:gmail:t", 9)]


def test_grant_size_is_a_quarter_second_of_the_smallest_rate_capped_by_demand():
    assert grant_size(_specs(200, 100), demand=10_000) == 25
    assert grant_size(_specs(200), demand=7) == 7
    assert grant_size(_specs(0.5), demand=100) == 1


@given(
    rate=st.floats(1, 2000),
    nodes=st.integers(1, 5),
    seed=st.integers(0, 1000),
)
def test_grants_to_several_nodes_hold_the_rate(rate, nodes, seed):
    """However many nodes ask, and whenever: the cells usable by time t are at most
    burst + rate x t, and a grant is never usable more than MAX_AHEAD after the call."""
    specs = _specs(rate)
    spec = specs[0]
    burst = spec.tolerance / spec.interval + 1
    rng = random.Random(seed)
    tats = [-math.inf]
    usable: list[tuple[float, int]] = []
    now, horizon = 0.0, 10.0
    while now < horizon:
        want = grant_size(specs, rng.randint(1, 1000))
        n, delay, tats = grant(tats, specs, want, now)
        assert n in (0, want)
        assert n == 0 or delay <= MAX_AHEAD
        if n:
            usable.append((now + delay, n))
        now += rng.random() * 0.5 / nodes
    for t in (1.0, 5.0, 10.0):
        assert sum(n for at, n in usable if at <= t) <= burst + rate * t + 1e-6


def test_contending_nodes_reserve_rather_than_retry():
    specs = _specs(100)  # a grant of 25, the burst too
    n, delay, tats = grant([-math.inf], specs, 25, 0.0)
    assert (n, delay) == (25, 0.0)
    n, delay, tats = grant(tats, specs, 25, 0.01)  # the other node, right after
    assert n == 25 and math.isclose(delay, 0.24, abs_tol=1e-6)
    now = 0.01
    while n:  # reservations up to MAX_AHEAD, then a wait
        now += 0.01
        n, wait, new = grant(tats, specs, 25, now)
        assert wait <= MAX_AHEAD
        if n:
            tats = new
    assert wait > 0 and new == tats
    assert now < 0.1


def test_tokens_are_spent_and_go_stale():
    tokens = Tokens()
    tokens.add(2, now=0.0)
    assert tokens.take(0.1) and tokens.take(0.1) and not tokens.take(0.1)
    tokens.give_back()
    assert tokens.take(0.2)
    tokens.add(5, now=1.0)
    assert not tokens.take(10.0)  # the shared rate has moved on
    assert tokens.left == 0


def test_local_share_divides_rates_and_caps():
    share = LocalShare(nodes=4)
    specs = _specs(400)
    total, now = 0, 0.0
    while now < 10.0:
        n, delay = share.take(specs, 1000, now)
        if n and now + delay <= 10.0:  # usable within the 10 s
            total += n
        now += 0.01
    assert total <= 400 / 4 * 10 + 25  # its share, plus its share of the burst
    assert total >= 400 / 4 * 10 * 0.9
    conns = [ConnSpec(b"k", 10)]
    for _ in range(2):
        assert share.may_open(conns)
        share.opened(conns)
    assert not share.may_open(conns)  # 10 / 4 -> 2 on this node
    share.closed(conns)
    assert share.may_open(conns)
    assert LocalShare(nodes=20).cap(ConnSpec(b"k", 10)) == 1
