"""The pure parts of the status: salvo.core.status (throughput, KPI rows with thresholds,
queue and providers) and salvo.cli.status_view (the text of salvo status and top)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as hst

from salvo.cli import status_view as sv
from salvo.core import kpis
from salvo.core import status as st

NOW = 1_800_000_030.0  # 30 s into a minute
RULES = [
    {
        "rule": "complaints-pause",
        "kpi": "hard_bounce_rate",
        "scope": "campaign",
        "above": 0.05,
        "window": "1h",
        "min_volume": 10,
        "action": "pause",
    },
    {
        "rule": "tenant-bounces",
        "kpi": "hard_bounce_rate",
        "scope": "tenant",
        "above": 0.5,
        "window": "1h",
        "min_volume": 1,
        "action": "notify",
    },
]


def _dims() -> dict[bytes, dict[str, int]]:
    big = {"sent": 100, "delivered": 90, "attempts": 100, "bounced": 10, "hard_bounces": 10}
    small = {"sent": 4, "delivered": 2, "attempts": 4, "bounced": 2, "hard_bounces": 2}
    return {
        kpis.dim_key("acme", "spring", None): big,
        kpis.dim_key("acme", "tiny", None): small,
        kpis.dim_key("acme", None, None): kpis.merge(big, small),
        kpis.dim_key(None, None, "google"): big,
        kpis.dim_key("acme", "spring", "google"): big,  # not a row of its own
        kpis.dim_key(None, None, None): kpis.merge(big, small),
    }


def test_kpi_rows_mark_what_is_above_a_threshold_with_enough_volume():
    split = st.split_dims(_dims())
    campaigns = st.kpi_rows(split, "campaign", RULES)
    assert [r["name"] for r in campaigns["rows"]] == ["spring", "tiny"]  # by volume
    spring, tiny = campaigns["rows"]
    assert spring["hard_bounce_rate"] == 0.1 and spring["above"] == ["hard_bounce_rate"]
    assert tiny["hard_bounce_rate"] == 0.5 and tiny["above"] == []  # 4 sent < min_volume 10
    assert [t["rule"] for t in spring["thresholds"]] == ["complaints-pause"]
    tenants = st.kpi_rows(split, "tenant", RULES)
    assert [r["tenant"] for r in tenants["rows"]] == ["acme"]
    assert tenants["rows"][0]["above"] == []  # 12/104 is under 0.5
    assert st.kpi_rows(split, "campaign", RULES, top=1)["total"] == 2


def test_throughput_counts_the_current_minute_and_the_share_of_the_oldest():
    minute = kpis.minute_of(NOW)
    delivered = {minute: 30, minute - 1: 60, minute - 5: 600}
    t = st.throughput(delivered, NOW)
    assert t["per_s_1m"] == round((30 + 60 * 0.5) / 60, 3)
    assert t["per_s_5m"] == round((30 + 60 + 600 * 0.5) / 300, 3)
    assert len(t["series"]) == st.SERIES_MINUTES and t["series"][-1] == 30


def test_queue_and_providers():
    q = st.queue_view(
        5, 3, 42.0, {"gmail.com": 6, "x.org": 2}, {"gmail.com": "google"}.get, {"google": 3}
    )
    assert q["by_provider"] == {
        "google": {"waiting": 3, "in-flight": 3},
        st.UNRESOLVED: {"waiting": 2, "in-flight": 0},
    }
    rows = st.providers_view(
        st.split_dims(_dims()),
        {"google": 2},
        {"yahoo": 12.0},
        ["microsoft"],
        {"google": {"2xx": 5}},
        q["by_provider"],
    )
    by = {r["name"]: r for r in rows}
    assert by["google"]["last_hour"]["sent"] == 100 and by["google"]["connections"] == 2
    assert by["yahoo"]["paused_by"] == "backoff" and by["microsoft"]["paused_by"] == "operator"
    assert not by["google"]["paused"]


def _status() -> dict:
    split = st.split_dims(_dims())
    return {
        "node": {"version": "0.1.0", "hostname": "mx.example", "pid": 7, "uptime_s": 3700},
        "queue": st.queue_view(5, 3, 42.0, {}, lambda d: None, {}),
        "throughput": st.throughput({kpis.minute_of(NOW): 30}, NOW),
        "providers": st.providers_view(split, {}, {}, ["google"], {}, {}),
        "pauses": [{"scope": "provider", "name": "google", "until": None, "reason": "ops"}],
        "alerts": {
            "active": [
                {
                    "rule": "complaints-pause",
                    "kpi": "hard_bounce_rate",
                    "scope": "campaign",
                    "name": "spring",
                    "value": 0.1,
                    "threshold": 0.05,
                    "action": "pause",
                    "window": "1h",
                    "since": NOW,
                }
            ],
            "rules": RULES,
        },
        "kpis": {
            "tenants": st.kpi_rows(split, "tenant", RULES),
            "campaigns": st.kpi_rows(split, "campaign", RULES),
        },
    }


def test_render_shows_every_section():
    text = "\n".join(sv.render(_status()))
    assert "salvo 0.1.0 on mx.example" in text and "up 1h 01m" in text
    assert "5 waiting  3 in flight  oldest 42s" in text
    assert "ALERTS 1 active" in text and "complaints-pause" in text and "10.00%" in text
    assert "rules: 2" in text
    assert "PAUSED 1" in text and "until resumed" in text
    spring = next(line for line in text.splitlines() if " spring " in line and "acme" in line)
    assert "10.00%!" in spring  # above its threshold
    assert "google" in text and "paused" in text


def test_render_of_an_empty_node():
    lines = sv.render({})
    assert any("PROVIDERS  none used yet" in line for line in lines)
    assert any("nothing sent in the last hour" in line for line in lines)


@given(hst.text(max_size=60))
def test_names_never_reach_the_terminal_as_control_characters(name: str):
    s = _status()
    s["pauses"][0]["name"] = name
    s["kpis"]["campaigns"]["rows"][0]["campaign"] = name
    for line in sv.render(s):
        assert line.isprintable(), repr(line)


def test_spark():
    assert sv.spark([0, 0]) == "▁▁"
    assert sv.spark([0, 4, 8]) == "▁▄█"
    assert sv.spark([0, 8], ascii_only=True) == "_@"


def test_spool_reads_of_the_status(tmp_path):
    from salvo.core.protocol import Job, Recipient
    from salvo.core.spool import Spool

    spool = Spool.open(tmp_path / "data")
    try:
        labels = [kpis.Labels("acme", f"c{i}", "gmail", NOW) for i in range(3)]
        for at in (NOW - 2 * 3600, NOW - 120, NOW):  # the first is outside the hour
            delta = kpis.expand({(lab, ("sent", "delivered"), None): 2 for lab in labels}, at)
            spool.store.write(lambda txn, d=delta: spool.add_kpis_in(txn, d))
        hour = range(kpis.minute_of(NOW) - 59, kpis.minute_of(NOW) + 1)
        dims, partial = spool.kpi_dimensions(hour)
        assert not partial and len(dims) == 3 * 4 + 2 + 2  # c*, any campaign, any tenant
        assert dims[kpis.dim_key("acme", "c1", None)] == {"sent": 4, "delivered": 4}
        assert dims[kpis.dim_key(None, None, None)]["sent"] == 12
        _, partial = spool.kpi_dimensions(hour, max_dims=5)
        assert partial
        series = spool.kpi_series(kpis.dim_key(None, None, None), hour)
        assert sorted(series) == [kpis.minute_of(NOW - 120), kpis.minute_of(NOW)]

        rcpts = [Recipient(to=f"u{i}@{'a' if i % 3 else 'b'}.example") for i in range(9)]
        spool.submit_many([Job(id="j", from_="x@acme.example", recipients=rcpts, text="hi")], NOW)
        assert spool.pending_by_domain() == ({"a.example": 6, "b.example": 3}, False)
        assert spool.pending_by_domain(limit=4) == ({"a.example": 4}, True)
    finally:
        spool.close()
