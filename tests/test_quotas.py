"""The ingress quotas' pure policy (core/quotas.py) and their config keys."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from salvo.core.config import ConfigError, parse_config
from salvo.core.quotas import DAY, HOUR, Limits, Quotas, Refusal, Ticket

T0 = 1_800_000_000.0 - (1_800_000_000 % DAY)  # a UTC midnight


def test_day_quota_rejects_past_it_and_other_tenants_are_unaffected():
    q = Quotas({"acme": Limits(per_day=1000)})
    for i in range(10):
        assert isinstance(q.take("acme", None, 100, T0 + i), Ticket)
    refused = q.take("acme", None, 1, T0 + 20)
    assert isinstance(refused, Refusal)
    assert (refused.status, refused.kind, refused.scope) == ("rejected", "day", "tenant")
    assert refused.error.startswith("quota spent:")
    assert "renews at" in refused.error
    assert isinstance(q.take("other", None, 10_000, T0), Ticket)  # no default: unlimited
    # The next UTC day starts from zero.
    assert isinstance(q.take("acme", None, 1000, T0 + DAY), Ticket)


def test_hour_rate_is_retry_with_when_and_a_job_bigger_than_the_window_is_rejected():
    q = Quotas({"acme": Limits(per_hour=100)})
    assert isinstance(q.take("acme", None, 60, T0 + 10), Ticket)
    refused = q.take("acme", None, 50, T0 + 20)
    assert isinstance(refused, Refusal)
    assert (refused.status, refused.kind) == ("retry", "hour")
    assert "try again after" in refused.error and "01:00:00Z" in refused.error
    big = q.take("acme", None, 101, T0 + 20)
    assert isinstance(big, Refusal) and big.status == "rejected"
    assert isinstance(q.take("acme", None, 100, T0 + HOUR), Ticket)


def test_in_flight_limit_and_release():
    q = Quotas({"default": Limits(in_flight=2)})
    a = q.take("x", None, 1, T0)
    b = q.take("x", None, 1, T0)
    assert isinstance(a, Ticket) and isinstance(b, Ticket)
    refused = q.take("x", None, 1, T0)
    assert isinstance(refused, Refusal) and (refused.status, refused.kind) == ("retry", "in_flight")
    q.release(a, queued=True)
    q.release(a, queued=True)  # twice: counted once
    assert q.usage("tenant", "x", T0) == (2, 2, 1)
    assert isinstance(q.take("x", None, 1, T0), Ticket)


def test_a_job_not_queued_gives_its_recipients_back_in_its_window_only():
    q = Quotas({"acme": Limits(per_day=100, per_hour=100)})
    t = q.take("acme", None, 100, T0)
    assert isinstance(t, Ticket)
    q.release(t, queued=False)
    assert q.usage("tenant", "acme", T0) == (0, 0, 0)
    late = q.take("acme", None, 100, T0 + HOUR - 1)
    assert isinstance(late, Ticket)
    q.release(late, queued=False)  # answered in the next hour: only the day gets it back
    assert q.usage("tenant", "acme", T0 + HOUR) == (0, 0, 0)


def test_producer_quota_applies_whatever_the_tenant():
    q = Quotas({}, {"web": Limits(per_day=10)})
    assert isinstance(q.take("a", "web", 6, T0), Ticket)
    refused = q.take("b", "web", 6, T0)
    assert isinstance(refused, Refusal) and refused.scope == "producer"
    assert "producer 'web'" in refused.error
    assert isinstance(q.take("b", "other", 6, T0), Ticket)
    assert isinstance(q.take("b", None, 6, T0), Ticket)


def test_a_refusal_counts_nothing_in_any_scope():
    q = Quotas({"acme": Limits(per_day=100)}, {"web": Limits(per_day=5)})
    assert isinstance(q.take("acme", "web", 10, T0), Refusal)
    assert q.usage("tenant", "acme", T0) == (0, 0, 0)


def test_inactive_without_limits():
    assert not Quotas().active
    assert not Quotas({"default": Limits()}).active
    assert Quotas({}, {"p": Limits(in_flight=3)}).active


@settings(max_examples=200, deadline=None)
@given(
    per_hour=st.one_of(st.none(), st.integers(1, 500)),
    per_day=st.one_of(st.none(), st.integers(1, 2000)),
    steps=st.lists(
        st.tuples(
            st.integers(0, 600),  # seconds later
            st.integers(0, 300),  # recipients
            st.booleans(),  # queued (else given back)
        ),
        max_size=80,
    ),
)
def test_never_more_than_the_quota_within_a_window(per_hour, per_day, steps):
    q = Quotas({"default": Limits(per_hour=per_hour, per_day=per_day)})
    now = T0
    accepted_hour: dict[int, int] = {}
    accepted_day: dict[int, int] = {}
    for later, n, queued in steps:
        now += later
        taken = q.take("t", None, n, now)
        if isinstance(taken, Refusal):
            assert taken.status in ("retry", "rejected")
            continue
        q.release(taken, queued=queued)
        if queued:
            accepted_hour[int(now // HOUR)] = accepted_hour.get(int(now // HOUR), 0) + n
            accepted_day[int(now // DAY)] = accepted_day.get(int(now // DAY), 0) + n
    if per_hour is not None:
        assert all(v <= per_hour for v in accepted_hour.values())
    if per_day is not None:
        assert all(v <= per_day for v in accepted_day.values())


def load_config_text(text: str):
    return parse_config(text.encode(), base_dir="/tmp", source="config")


def test_config_keys():
    config = load_config_text(
        """
[tenants.default]
max_recipients_per_hour = 100
[tenants.acme]
max_recipients_per_day = 50000
max_jobs_in_flight = 10
"""
    )
    q = config.quotas()
    assert q.limits("tenant", "acme") == Limits(per_day=50000, in_flight=10)
    assert q.limits("tenant", "else") == Limits(per_hour=100)
    with pytest.raises(ConfigError, match=r"\[tenants.acme\] max_recipients_per_day: 1 or more"):
        load_config_text("[tenants.acme]\nmax_recipients_per_day = 0\n")
    with pytest.raises(ConfigError):
        load_config_text("[tenants.acme]\nmax_per_day = 3\n")


def test_the_documented_bought_list_rule_loads():
    config = load_config_text(
        """
[alerting]
defaults = true

[[alerts]]
name = "bought_list_tenant_pause"
kpi = "hard_bounce_rate"
scope = "tenant"
above = 0.1
min_volume = 200
window = "1d"
action = "pause"
"""
    )
    rules = {r.name: r for r in config.alert_rules()}
    assert rules["bought_list_tenant_pause"].scope == "tenant"
    assert "hard_bounce_rate_campaign_pause" in rules
