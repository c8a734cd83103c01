"""Pause, resume and cancel on a real node (aiosmtpd sink, the CLI and http.client): a
paused campaign is neither signed nor sent while another flows, the pause survives a
restart, resume delivers everything, a timed pause ends by itself, cancel ends recipients
``cancelled`` with events; bad calls get 401/400/413 and change nothing. Waits are bounded;
nothing asserts on timing."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from nodeutil import AioSink, NodeSetup, free_port, job, running_node, wait_for
from prometheus_client.parser import text_string_to_metric_families

from salvo.client import Producer

BOUND = 60.0


def _post(port: int, path: str, body: bytes, token: str | None) -> tuple[int, dict | str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        conn.request("POST", path, body, headers)
        r = conn.getresponse()
        raw = r.read()
    finally:
        conn.close()
    try:
        return r.status, json.loads(raw)
    except ValueError:
        return r.status, raw.decode()


def _pauses(port: int, token: str) -> list[dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/api/pauses", headers={"Authorization": f"Bearer {token}"})
        return json.loads(conn.getresponse().read())["pauses"]
    finally:
        conn.close()


def _paused_gauge(port: int) -> dict[tuple[str, str], float]:
    """``salvo_paused`` from /metrics (open on loopback), read with Prometheus' parser."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return {
        (s.labels["scope"], s.labels["name"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "salvo_paused"
        for s in family.samples
    }


def _salvo(setup: NodeSetup, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "salvo", *args, "--config", str(setup.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=setup.root,
    )


def _submit(setup: NodeSetup, jobs: list[dict]) -> None:
    with Producer(setup.endpoint, timeout=30, attempts=3) as producer:
        replies = list(producer.submit_many(jobs))
    assert {r.status for r in replies} == {"accepted"}


def _campaign_job(job_id: str, campaign: str, n: int) -> dict:
    return job(job_id, [f"{campaign}{i}@example.org" for i in range(n)], campaign=campaign)


def _arrived(sink: AioSink, campaign: str) -> int:
    return sum(1 for m in sink.snapshot() for r in m.rcpts if r.startswith(campaign))


def _states(setup: NodeSetup, campaign: str) -> dict[str, int]:
    done = setup.cli("queue", "--data", str(setup.data_dir), "summary", "--top", "50")
    assert done.returncode == 0, done.stderr
    for line in done.stdout.splitlines():
        if line.strip().startswith(f"acme/{campaign} "):
            words = line.split()[2:]
            return {words[i]: int(words[i + 1]) for i in range(0, len(words) - 1, 2)}
    return {}


def _events(setup: NodeSetup, campaign: str, kind: str) -> list[dict]:
    return [e for e in setup.events() if e["type"] == kind and e.get("campaign") == campaign]


def test_pause_survives_restart_resume_delivers_cancel_ends(tmp_path: Path):
    port = free_port()
    with AioSink("127.0.0.2") as sink:
        setup = NodeSetup(
            tmp_path / "node",
            {"example.org": sink.address},
            extra=f'\n[http]\nlisten = "127.0.0.1:{port}"\n',
        )
        with running_node(setup):
            token = (setup.root / "keys" / "http.token").read_text().strip()
            # Bad calls: nothing changes.
            for given in (None, "wrong"):
                status, _ = _post(port, "/api/pause", b'{"scope":"campaign","name":"x"}', given)
                assert status == 401
            for body, why in (
                (b'{"scope":"planet","name":"x"}', "unknown scope"),
                (b"{not json", "not JSON"),
                (b'{"scope":"campaign"}', "'name'"),
                (b"[1]", "object"),
                (b'{"scope":"campaign","name":"x","for":"soon"}', "duration"),
            ):
                status, answer = _post(port, "/api/pause", body, token)
                assert status == 400 and why in answer["error"], (body, answer)
            status, answer = _post(port, "/api/cancel", b'{"scope":"provider","name":"x"}', token)
            assert status == 400 and "unknown scope" in answer["error"]
            assert _post(port, "/api/pause", b"x" * 100_000, token)[0] == 413
            assert _pauses(port, token) == []
            wrong = _salvo(setup, "pause", "--campaign", "x")
            assert wrong.returncode == 0, wrong.stderr  # the CLI works with the config
            assert _salvo(setup, "resume", "--campaign", "x").returncode == 0
            env = {**os.environ, "SALVO_TOKEN": "wrong-token-wrong-token"}
            url = f"http://127.0.0.1:{port}"
            bad = subprocess.run(
                [sys.executable, "-m", "salvo", "pause", "--campaign", "x", "--url", url],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
            )
            assert bad.returncode == 1 and "refused the admin token" in bad.stderr
            assert _pauses(port, token) == []

            # Pause spring, then queue spring and autumn: autumn flows, spring waits unsigned.
            done = _salvo(setup, "pause", "--campaign", "spring")
            assert done.returncode == 0 and "paused campaign spring" in done.stdout, done.stderr
            assert [p["name"] for p in _pauses(port, token)] == ["spring"]
            assert _paused_gauge(port) == {("operator:campaign", "spring"): 1.0}
            _submit(setup, [_campaign_job("s1", "spring", 20), _campaign_job("a1", "autumn", 20)])
            assert wait_for(lambda: _arrived(sink, "autumn") == 20, BOUND)
            # A claim every second at most; give the paused one time to be claimed and held.
            assert wait_for(lambda: _states(setup, "spring").get("queued") == 20, BOUND)
            time.sleep(2)
            assert _arrived(sink, "spring") == 0
            assert _events(setup, "spring", "delivered") == []
            assert _states(setup, "spring") == {"queued": 20}

        # The pause survives a restart.
        with running_node(setup):
            assert [p["name"] for p in _pauses(port, token)] == ["spring"]
            time.sleep(2)
            assert _arrived(sink, "spring") == 0
            done = _salvo(setup, "resume", "--campaign", "spring")
            assert done.returncode == 0 and "resumed campaign spring" in done.stdout, done.stderr
            assert wait_for(lambda: _arrived(sink, "spring") == 20, BOUND)
            assert _pauses(port, token) == []
            assert ("operator:campaign", "spring") not in _paused_gauge(port)

            # A timed pause ends by itself.
            done = _salvo(setup, "pause", "--campaign", "summer", "--for", "3s")
            assert done.returncode == 0, done.stderr
            _submit(setup, [_campaign_job("u1", "summer", 10)])
            assert wait_for(lambda: _arrived(sink, "summer") == 10, BOUND)

            # Cancel: waiting recipients end cancelled with events and never arrive.
            assert _salvo(setup, "pause", "--campaign", "winter").returncode == 0
            _submit(setup, [_campaign_job("w1", "winter", 15)])
            assert wait_for(lambda: _states(setup, "winter").get("queued") == 15, BOUND)
            done = _salvo(setup, "cancel", "--campaign", "winter")
            assert done.returncode == 0 and "cancelled campaign winter" in done.stdout, done.stderr
            assert wait_for(lambda: len(_events(setup, "winter", "cancelled")) == 15, BOUND)
            assert _states(setup, "winter") == {"cancelled": 15}
            assert _salvo(setup, "resume", "--campaign", "winter").returncode == 0
            time.sleep(2)
            assert _arrived(sink, "winter") == 0
