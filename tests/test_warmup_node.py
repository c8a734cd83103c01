"""Warm-up through a real node (docs/warmup.md): a warming source sends at most its daily
cap to a provider, the pool's warmed source takes the rest, and with no warmed source the
mail waits in the queue; ``salvo warmup status`` reports the lane."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from nodeutil import AioSink, NodeSetup, job, running_node, wait_for

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


def _submit(endpoint: str, jobs: list[dict]) -> None:
    with Producer(endpoint, timeout=30, attempts=3) as producer:
        for reply in producer.submit_many(jobs):
            assert reply.status == "accepted", reply


def test_a_warming_source_stops_at_its_cap_and_the_rest_goes_elsewhere_or_waits(
    tmp_path: Path,
):
    with AioSink("127.0.0.4") as sink:
        setup = NodeSetup(tmp_path / "node", {"example.org": sink.address}, extra=EXTRA)
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
    assert plain.returncode == 0 and WARMING in plain.stdout and "new-ips" in plain.stdout
