"""Adaptive shaping on a real node: a provider (the smart sink) takes 30 msg/s and answers
421 above it; the node's allowed rate for it drops below the configured ceiling, shows in
/metrics and /api/status, every message is delivered, and the 421s stay few."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

from nodeutil import NodeSetup, final_states, free_port, job, running_node, wait_for
from prometheus_client.parser import text_string_to_metric_families

from salvo.client import Producer
from salvo.testing.sink import SinkPolicy, SinkThread

HIDDEN = 30.0  # msg/s the sink takes; the node is not told
CEILING = 500  # the configured max_messages_per_second
MESSAGES = 400


def _get(port: int, path: str, token: str | None = None) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, body
        return body
    finally:
        conn.close()


def _gauges(port: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(_get(port, "/metrics").decode()):
        for s in family.samples:
            if s.name.startswith("salvo_shaping_"):
                out.setdefault(s.name, []).append(s.value)
    return out


def test_a_throttling_provider_gets_a_lower_rate_and_few_421s(tmp_path: Path):
    port = free_port()
    sink = SinkThread("127.0.0.57", policy=SinkPolicy(rate_limit=HIDDEN))
    sink.start()
    try:
        setup = NodeSetup(
            tmp_path / "node",
            {"example.org": f"127.0.0.57:{sink.port}"},
            first_retry="1s",
            max_retry="2s",
            extra=(
                f'\n[http]\nlisten = "127.0.0.1:{port}"\n'
                f"\n[providers.default]\nmax_connections = 8\n"
                f"max_messages_per_second = {CEILING}\n"
            ),
        )
        with running_node(setup) as node:
            token = (setup.root / "keys" / "http.token").read_text().strip()
            before = _gauges(port)
            assert before.get("salvo_shaping_rate", []) == []  # no lane yet
            with Producer(setup.endpoint, timeout=30) as producer:
                rcpts = [f"user{i}@example.org" for i in range(MESSAGES)]
                for n in range(0, MESSAGES, 100):
                    assert producer.submit(job(f"a{n}", rcpts[n : n + 100])).status == "accepted"

            # The sink's 421s lower the allowed rate below the configured ceiling.
            def lowered() -> dict | None:
                g = _gauges(port)
                rates = g.get("salvo_shaping_rate", [])
                return g if rates and 0 < max(rates) < CEILING else None

            gauges = wait_for(lowered, timeout=60, what="the allowed rate to drop")
            assert 1 <= max(gauges["salvo_shaping_connections"]) <= 8
            status = json.loads(_get(port, "/api/status", token))
            rows = [p for p in status["providers"] if p["allowed_connections"]]
            assert rows, status["providers"]
            assert all(1 <= p["allowed_connections"] <= 8 for p in rows)
            assert all(
                p["allowed_rate_per_s"] is None or p["allowed_rate_per_s"] < CEILING for p in rows
            )
            assert any(p["allowed_rate_per_s"] is not None for p in rows)
            view = setup.cli("status", "--config", str(setup.config_path))
            assert view.returncode == 0, view.stderr
            assert "MAX MSG/S" in view.stdout

            # Every message gets through, at the provider's pace, without a 421 storm.
            def delivered() -> bool:
                states = final_states(setup.events())
                return sum(1 for s in states.values() if s == "delivered") >= MESSAGES

            wait_for(delivered, timeout=180, what="every message delivered")
            assert sink.stats.messages == MESSAGES
            # Sending at will would meet a 421 for nearly every message above 30/s, and
            # again on each retry; adapting keeps them to a fraction of the messages.
            assert sink.stats.rate_limited < MESSAGES / 4, sink.stats.rate_limited
            assert "throttled" in node.log()
    finally:
        sink.stop()
