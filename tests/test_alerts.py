"""Alert rules: validation, the windowed verdicts, and their properties (core.alerts)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from salvo.core import alerts as al
from salvo.core import kpis
from salvo.core.config import ConfigError, parse_config

NOW = 1_800_000_000.0


def rule(**kw) -> al.Rule:
    base = dict(kpi="complaint_rate", scope="campaign", above=0.003, min_volume=1000)
    return al.make_rule(**{**base, **kw})


# -- config ----------------------------------------------------------------------------------


def test_defaults_apply_without_rules_and_go_with_an_empty_list_or_defaults_false() -> None:
    names = [r.name for r in parse_config(b"").alert_rules()]
    assert "complaint_rate_campaign_pause" in names and "spool_used_fraction_node_notify" in names
    assert parse_config(b"alerts = []\n").alert_rules() == ()
    assert parse_config(b"[alerting]\ndefaults = false\n").alert_rules() == ()
    own = b'[[alerts]]\nkpi = "sent"\nscope = "tenant"\nabove = 5\n'
    assert [r.name for r in parse_config(own).alert_rules()] == ["sent_tenant_notify"]
    both = parse_config(b"[alerting]\ndefaults = true\n" + own).alert_rules()
    assert len(both) == len(al.DEFAULT_RULES) + 1


def test_default_thresholds() -> None:
    by = {r.name: r for r in al.DEFAULT_RULES}
    assert by["complaint_rate_campaign_notify"].above == 0.001
    assert by["complaint_rate_campaign_pause"].above == 0.003
    assert by["hard_bounce_rate_campaign_notify"].above == 0.02
    assert by["hard_bounce_rate_campaign_pause"].above == 0.05


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('kpi = "nope"\nscope = "campaign"\nabove = 1', "[[alerts]] #2 kpi: 'nope'"),
        ('kpi = "sent"\nscope = "galaxy"\nabove = 1', "[[alerts]] #2 scope"),
        ('kpi = "sent"\nscope = "tenant"\nabove = 1\naction = "page"', "[[alerts]] #2 action"),
        ('kpi = "sent"\nscope = "tenant"\nabove = -1', "[[alerts]] #2 above"),
        ('kpi = "sent"\nscope = "tenant"\nabove = "x"', "[[alerts]] #2 above"),
        ('kpi = "sent"\nscope = "tenant"\nabove = 1\nwindow = "9y"', "[[alerts]] #2 window"),
        ('kpi = "sent"\nscope = "tenant"\nabove = 1\nmin_volume = -3', "[[alerts]] #2 min_volume"),
        ('kpi = "sent"\nscope = "tenant"\nabove = 1\ncolour = 2', "[[alerts]] #2 colour: unknown"),
        ('scope = "tenant"\nabove = 1', "[[alerts]] #2"),
        ('kpi = "sent"\nscope = "node"\nabove = 1', "[[alerts]] #2 kpi"),
        ('kpi = "spool_used_fraction"\nscope = "tenant"\nabove = 1', "[[alerts]] #2 scope"),
        (
            'kpi = "queue_oldest_seconds"\nscope = "node"\nabove = 1\naction = "pause"',
            "[[alerts]] #2 action: a node rule cannot pause",
        ),
        ('kpi = "queue_oldest_seconds"\nscope = "node"\nabove = 1\nwindow = "1h"', "window"),
        ('kpi = "sent"\nscope = "tenant"\nabove = 1\nname = "first"', "used by two rules"),
    ],
)
def test_bad_rules_name_the_rule_and_key(text: str, message: str) -> None:
    first = '[[alerts]]\nkpi = "sent"\nscope = "tenant"\nabove = 1\nname = "first"\n'
    with pytest.raises(ConfigError) as err:
        parse_config(first + "[[alerts]]\n" + text + "\n", source="salvo.toml")
    assert message in str(err.value)
    assert str(err.value).startswith("salvo.toml:")


# -- verdicts --------------------------------------------------------------------------------


def counts(sent: int, complained: int, hard: int = 0) -> dict[str, int]:
    return {"sent": sent, "delivered": sent, "complained": complained, "hard_bounces": hard}


def test_fires_once_holds_then_clears_under_the_hysteresis() -> None:
    r = rule()
    alerting = al.Alerting([r])
    seq = [(5000, 10), (5000, 20), (5000, 14), (5000, 13), (5000, 11), (5000, 30)]
    states = []
    for t, (sent, comp) in enumerate(seq):
        value, volume = al.measure(r, counts(sent, comp))
        out = alerting.judge(r, "spring", value, volume, NOW + t)
        states.append(out.state if out else None)
    # 0.002 no; 0.004 fires; 0.0028 and 0.0026 hold (above 0.8 x 0.003); 0.0022 clears
    assert states == [None, "fired", None, None, "cleared", "fired"]


def test_listing_shape_and_firing_counts() -> None:
    r = rule(action="pause")
    alerting = al.Alerting([r])
    alerting.judge(r, "spring", 0.01, 5000, NOW)
    listing = alerting.listing()
    assert listing["rules"] == [r.as_json()]
    assert listing["active"] == [
        {
            "rule": "complaint_rate_campaign_pause",
            "kpi": "complaint_rate",
            "scope": "campaign",
            "name": "spring",
            "value": 0.01,
            "threshold": 0.003,
            "action": "pause",
            "window": "1h",
            "since": NOW,
        }
    ]
    assert alerting.firing() == {("complaint_rate_campaign_pause", "campaign"): 1}


def test_event_of_an_alert() -> None:
    r = rule(action="pause")
    alert = al.Alerting([r]).judge(r, "spring", 0.01, 5000, NOW)
    assert alert is not None
    e = al.event_of(alert, NOW)
    assert (e.type, e.state, e.rule, e.scope, e.name, e.campaign) == (
        "alert", "fired", r.name, "campaign", "spring", "spring"
    )  # fmt: skip
    assert (e.value, e.threshold, e.action, e.kpi, e.window) == (0.01, 0.003, "pause", r.kpi, "1h")


def test_dimensions_of_a_delta_and_the_source_dimension() -> None:
    labels = kpis.Labels("acme", "spring", "gmail", NOW - 1, "192.0.2.7")
    delta = kpis.expand({(labels, ("sent", "delivered"), None): 3}, NOW)
    assert al.scopes_of_delta(delta) == {
        ("tenant", "acme"),
        ("campaign", "spring"),
        ("provider", "gmail"),
        ("source", "192.0.2.7"),
    }
    source = delta[kpis.bucket_key(kpis.minute_of(NOW), al.dim_of("source", "192.0.2.7"))]
    assert source == {"sent": 3, "delivered": 3}


def test_node_gauge_rules_ignore_volume() -> None:
    r = al.make_rule(kpi="spool_used_fraction", scope="node", above=0.8)
    assert al.verdict(r, 0.9, 0, False) and not al.verdict(r, 0.7, 0, False)
    assert al.verdict(r, 0.7, 0, True) and not al.verdict(r, 0.6, 0, True)


# -- properties ------------------------------------------------------------------------------

rates = st.floats(min_value=0, max_value=1, allow_nan=False)
volumes = st.integers(min_value=0, max_value=100_000)


@given(above=rates, min_volume=volumes, value=rates, volume=volumes)
def test_no_verdict_under_min_volume(above, min_volume, value, volume) -> None:
    r = rule(above=above, min_volume=min_volume)
    if volume < min_volume:
        assert not al.verdict(r, value, volume, False)


@given(a=rates, b=rates, value=rates, volume=volumes)
def test_monotone_in_threshold(a, b, value, volume) -> None:
    low, high = sorted((a, b))
    if al.verdict(rule(above=high), value, volume, False):
        assert al.verdict(rule(above=low), value, volume, False)


@given(st.lists(st.tuples(rates, volumes), max_size=40))
def test_fired_and_cleared_alternate_and_match_the_active_set(readings) -> None:
    r = rule(above=0.01, min_volume=100)
    alerting = al.Alerting([r])
    last = "cleared"
    for t, (value, volume) in enumerate(readings):
        out = alerting.judge(r, "c", value, volume, NOW + t)
        if out is not None:
            assert out.state != last  # fired, cleared, fired, ...
            last = out.state
        assert ("c" in alerting.names_active("campaign")) == (last == "fired")
        if out is not None and out.state == "fired":
            assert value > r.above and volume >= r.min_volume


# -- the actor on a real spool: evaluation from the buckets, and the state after a restart ----


def test_actor_fires_from_buckets_and_rebuilds_the_active_list_at_start(tmp_path) -> None:
    import trio

    from salvo.actors.alerts import Alerts
    from salvo.core.spool import Spool, SpoolConfig

    now = NOW
    r = rule(min_volume=100)
    spool = Spool.open(tmp_path / "data", SpoolConfig(retention=60, idempotency_window=60))
    labels = kpis.Labels("acme", "spring", "gmail", now - 5)
    delta = kpis.merge_delta(
        kpis.expand({(labels, ("sent", "delivered"), None): 1000}, now - 600),
        kpis.expand({(kpis.Labels("acme", "spring", None, 0.0), ("complained",), None): 5}, now),
    )

    async def main() -> tuple[list, list]:
        send, recv = trio.open_memory_channel(10)
        alerts = Alerts([r], spool, send, clock=lambda: now)
        spool.store.write(lambda txn: spool.add_kpis_in(txn, delta))
        keys = []
        while alerts._touched:
            keys += alerts._touched.popleft()
        scopes = al.scopes_of_delta(keys)
        assert ("campaign", "spring") in scopes
        fired = await alerts.evaluate(scopes, now, gauges=True)
        events = recv.receive_nowait()
        return fired, events

    fired, events = trio.run(main)
    assert [(a.state, a.name, a.value) for a in fired] == [("fired", "spring", 0.005)]
    assert [(e.type, e.state, e.name) for e in events] == [("alert", "fired", "spring")]

    async def restart() -> dict:
        send, recv = trio.open_memory_channel(10)
        alerts = Alerts([r], spool, send, clock=lambda: now + 60)
        async with trio.open_nursery() as nursery:
            await nursery.start(alerts.run)
            listing = alerts.listing()
            nursery.cancel_scope.cancel()
        with pytest.raises(trio.WouldBlock):
            recv.receive_nowait()  # no event for a restored alert
        return listing

    listing = trio.run(restart)
    assert [(a["rule"], a["name"]) for a in listing["active"]] == [(r.name, "spring")]
    spool.close()
