"""Warm-up through a real node (docs/warmup.md): a warming source sends at most its daily
cap to a provider, the pool's warmed source takes the rest, and with no warmed source the
mail waits in the queue; ``salvo warmup status`` reports the lane."""

from __future__ import annotations

import http.client
import json
from collections import Counter
from pathlib import Path

from nodeutil import AioSink, NodeSetup, free_port, job, running_node, wait_for
from prometheus_client.parser import text_string_to_metric_families

from salvo.client import Producer

WARMING, WARMED = "127.0.0.3", "127.0.0.2"

EXTRA = f"""
[warmup.new-ips]
daily = [5, 10, 20]
min_volume = 5

[pools.solo]
sources = ["{WARMING}"]
warmup = {{ "{WARMING}" = "new-ips" }}

[traffic.solo]
pool = "solo"
"""


def _warmup_gauges(port: int) -> dict[tuple[str, str], float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    return {
        (s.name, s.labels["source"]): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name.startswith("salvo_warmup_")
    }


def _submit(endpoint: str, jobs: list[dict]) -> None:
    with Producer(endpoint, timeout=30, attempts=3) as producer:
        for reply in producer.submit_many(jobs):
            assert reply.status == "accepted", reply


def test_a_warming_source_stops_at_its_cap_and_the_rest_goes_elsewhere_or_waits(
    tmp_path: Path,
):
    with AioSink("127.0.0.4") as sink:
        port = free_port()
        extra = EXTRA + f'\n[http]\nlisten = "127.0.0.1:{port}"\n'
        setup = NodeSetup(tmp_path / "node", {"example.org": sink.address}, extra=extra)
        text = setup.config_path.read_text().replace(
            'sources = ["127.0.0.1"]',
            f'sources = ["{WARMED}", "{WARMING}"]\nwarmup = {{ "{WARMING}" = "new-ips" }}',
        )
        setup.config_path.write_text(text)
        with running_node(setup):
            # The warming source alone: 5 go out today, 3 wait for tomorrow.
            solo = [f"solo{i}@example.org" for i in range(8)]
            _submit(setup.endpoint, [job("solo", solo, traffic="solo")])
            wait_for(lambda: len(sink.snapshot()) >= 5, 30, 0.1)
            wait_for(lambda: setup.queue_states().get("queued", 0) == 3, 30, 0.2)
            # A pool with a warmed source beside it: all 20 go, none from the full one.
            many = [f"u{i}@example.org" for i in range(20)]
            _submit(setup.endpoint, [job("many", many)])
            wait_for(lambda: len(sink.snapshot()) >= 25, 30, 0.1)

            def delivered() -> list[dict]:
                return [e for e in setup.events() if e["type"] == "delivered"]

            wait_for(lambda: len(delivered()) >= 25, 30, 0.1)
            gauges = _warmup_gauges(port)
            status = setup.cli("warmup", "status", "--config", str(setup.config_path), "--json")
            plain = setup.cli("warmup", "status", "--config", str(setup.config_path))
        states = setup.queue_states()

    events = setup.events()
    by_source = Counter((e["job"], e["source"]) for e in events if e["type"] == "delivered")
    assert by_source == {("solo", WARMING): 5, ("many", WARMED): 20}, by_source
    assert len(sink.snapshot()) == 25
    # Held mail is neither deferred nor bounced: it is queued, with no event and no attempt.
    assert not [e for e in events if e["type"] in ("deferred", "bounced", "expired")]
    assert states.get("queued") == 3 and states.get("delivered") == 25, states

    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)
    lane = next(r for r in rows if r["source"] == WARMING)
    assert (lane["plan"], lane["step"], lane["cap"], lane["used"]) == ("new-ips", 1, 5, 5)
    assert lane["provider"] == f"route:{sink.address}" and lane["delivered"] == 5
    assert gauges == {
        ("salvo_warmup_cap", WARMING): 5.0,
        ("salvo_warmup_used", WARMING): 5.0,
    }, gauges
    assert plain.returncode == 0 and WARMING in plain.stdout and "new-ips" in plain.stdout
