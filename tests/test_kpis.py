"""``salvo.core.kpis``: bucket keys, merging, rates and percentiles; and the spool's buckets."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from salvo.core import kpis
from salvo.core.spool import Spool

NAMES = ["sent", "delivered", "attempts", "deferred", "hard_bounces", "soft_bounces", "h:3"]
counts = st.dictionaries(st.sampled_from(NAMES), st.integers(0, 10**9), max_size=len(NAMES))
NOW = 1_800_000_000.0


@given(counts, counts, counts)
def test_merging_is_associative_and_commutative(a, b, c):
    assert kpis.merge(kpis.merge(a, b), c) == kpis.merge(a, kpis.merge(b, c))
    assert kpis.merge(a, b) == kpis.merge(b, a)
    assert kpis.merge(a) == {k: v for k, v in a.items()}


@given(counts, counts, counts)
def test_merging_deltas_is_associative(a, b, c):
    d1, d2, d3 = ({kpis.bucket_key(1, b"x"): x} for x in (a, b, c))
    assert kpis.merge_delta(kpis.merge_delta(d1, d2), d3) == kpis.merge_delta(
        d1, kpis.merge_delta(d2, d3)
    )


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "sent",
                "delivered",
                "attempts",
                "deferred",
                "hard_bounces",
                "soft_bounces",
                "complained",
                "unsubscribed",
            ]
        ),
        st.integers(0, 10**6),
    ),
    st.floats(60, 7 * 86400),
)
def test_rates_are_fractions(c, window):
    out = kpis.compute(c, window)
    for name in (
        "delivery_rate",
        "hard_bounce_rate",
        "soft_bounce_rate",
        "complaint_rate",
        "unsubscribe_rate",
        "deferral_rate",
    ):
        assert 0.0 <= out[name] <= 1.0, (name, out)
    assert out["throughput_per_s"] >= 0


@given(st.dictionaries(st.integers(0, kpis.LAT_MAX), st.integers(1, 10**6), min_size=1))
def test_percentiles_are_monotone(hist):
    qs = [0.0, 0.1, 0.5, 0.9, 0.99, 1.0]
    values = [kpis.percentile(hist, q) for q in qs]
    assert values == sorted(values)
    assert kpis.bucket_upper(min(hist)) <= values[0]
    assert values[-1] == kpis.bucket_upper(max(hist))


@given(st.floats(0, 10**7), st.floats(0, 10**7))
def test_latency_buckets_are_monotone_and_bound_the_value(a, b):
    lo, hi = sorted((a, b))
    assert kpis.latency_bucket(lo) <= kpis.latency_bucket(hi)
    k = kpis.latency_bucket(hi)
    if k < kpis.LAT_MAX:
        assert hi <= kpis.bucket_upper(k) * (1 + 1e-9)


def test_percentile_of_nothing_is_none():
    assert kpis.percentile({}, 0.5) is None
    out = kpis.compute({}, 3600)
    assert out["latency_p50_s"] is None and out["delivery_rate"] == 0.0


def test_an_outcome_is_counted_in_every_dimension_of_its_labels():
    labels = kpis.Labels("acme", "spring", "gmail", NOW - 2.0)
    delta = kpis.expand({(labels, ("sent", "delivered"), 5): 3}, NOW)
    minute = kpis.minute_of(NOW)
    assert len(delta) == 8
    for t in (None, "acme"):
        for c in (None, "spring"):
            for p in (None, "gmail"):
                got = delta[kpis.bucket_key(minute, kpis.dim_key(t, c, p))]
                assert got == {"sent": 3, "delivered": 3, "h:5": 3}
    unknown = kpis.Labels("acme", "spring", None, 0.0)
    assert len(kpis.expand({(unknown, ("complained",), None): 1}, NOW)) == 4


def test_definitions():
    c = {
        "sent": 100,
        "delivered": 90,
        "attempts": 120,
        "deferred": 20,
        "hard_bounces": 8,
        "soft_bounces": 2,
        "complained": 9,
        "unsubscribed": 18,
    }
    out = kpis.compute(c, 600)
    assert out["delivery_rate"] == 0.9
    assert out["hard_bounce_rate"] == 0.08
    assert out["soft_bounce_rate"] == 0.02
    assert out["complaint_rate"] == 0.1
    assert out["unsubscribe_rate"] == 0.2
    assert out["deferral_rate"] == 20 / 120
    assert out["throughput_per_s"] == 90 / 600
    assert kpis.names_of("bounced", 550, 1) == ("sent", "bounced", "hard_bounces", "attempts")
    assert kpis.names_of("expired", 0, 0) == ("expired",)
    assert "soft_bounces" in kpis.names_of("expired", 451, 2)


@pytest.mark.parametrize(
    "pairs, error",
    [
        ([("windw", "1h")], "unknown parameter 'windw'"),
        ([("window", "1x")], "window '1x'"),
        ([("window", "0m")], "window '0m'"),
        ([("window", "30d")], "from 1m to 7d"),
        ([("window", "1h"), ("window", "2h")], "twice"),
        ([("tenant", "a\nb")], "printable"),
        # Unicode digits that int() refuses: a ValueError of their own before (review
        # while writing the kpi_query fuzz target, which accepts only KpiQueryError).
        ([("window", "\u00b2")], "window"),
        ([("window", "1\u00b2m")], "window"),
    ],
)
def test_bad_queries_are_refused_with_a_reason(pairs, error):
    with pytest.raises(kpis.KpiQueryError, match=error):
        kpis.parse_query(pairs)


def test_query_windows():
    q = kpis.parse_query([("window", "15m"), ("tenant", "acme"), ("campaign", "")])
    assert q == kpis.KpiQuery("acme", None, None, 900.0)
    assert len(q.minutes(NOW)) == 15 and q.minutes(NOW)[-1] == kpis.minute_of(NOW)
    assert kpis.parse_query([]).window_s == 3600


def test_spool_buckets_add_read_and_purge(tmp_path: Path):
    spool = Spool.open(tmp_path / "data")
    try:
        labels = kpis.Labels("acme", "c1", "gmail", NOW - 1)
        for at in (NOW - 9 * 86400, NOW - 120, NOW):
            delta = kpis.expand({(labels, ("sent", "delivered", "attempts"), 2): 4}, at)
            spool.store.write(lambda txn, d=delta: spool.add_kpis_in(txn, d))
        q = kpis.KpiQuery("acme", None, "gmail", 3600)
        assert spool.kpi_counts(q.dim, q.minutes(NOW)) == {
            "sent": 8,
            "delivered": 8,
            "attempts": 8,
            "h:2": 8,
        }
        old = kpis.KpiQuery(None, None, None, 10 * 86400)
        assert spool.kpi_counts(old.dim, old.minutes(NOW))["sent"] == 12
        spool.purge(NOW)  # the maintenance drops buckets older than the retention
        assert spool.kpi_counts(old.dim, old.minutes(NOW))["sent"] == 8
    finally:
        spool.close()
