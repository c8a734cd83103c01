"""Webhooks on a real node: a receiver that refuses (503, dropped connections) while the
node is SIGKILLed with events pending, then comes back and gets every event the node
published, at least once, in order per recipient; the status over the API and the CLI,
and /metrics."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from nodeutil import AioSink, NodeProcess, NodeSetup, free_port, job, wait_for
from prometheus_client.parser import text_string_to_metric_families

from salvo.client import Producer
from salvo.testing.webhook_receiver import WebhookReceiver

TYPES = ("accepted", "deferred", "delivered", "bounced")
SECRET = b"test-secret-of-the-webhook-0123456789"


def _config(port: int, url: str) -> str:
    return f"""
[http]
listen = "127.0.0.1:{port}"

[[webhooks]]
name = "crm"
url = "{url}"
events = {json.dumps(list(TYPES))}
secret_file = "keys/crm.secret"
batch_max = 25
batch_wait = "200ms"
timeout = "3s"
retry_first = "200ms"
retry_max = "1s"
"""


def _get(port: int, path: str, token: str | None) -> tuple[int, object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw.decode()


def _cli(setup: NodeSetup, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "salvo", "webhooks", "status", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=setup.root,
    )


def _published(setup: NodeSetup) -> list[tuple[str, str]]:
    """(message id, type) of every subscribed event in the node's JSONL log, in order."""
    return [(e["message_id"], e["type"]) for e in setup.events() if e["type"] in TYPES]


def test_outage_and_sigkill_lose_nothing_and_keep_order(tmp_path: Path):
    port = free_port()
    with AioSink("127.0.0.2") as sink, WebhookReceiver(secret=SECRET) as receiver:
        sink.rcpt_replies["gone0@example.org"] = "550 5.1.1 no such user"
        sink.rcpt_once["slow0@example.org"] = "451 4.3.0 try later"
        setup = NodeSetup(
            tmp_path / "node",
            {"example.org": sink.address},
            first_retry="1s",
            max_retry="2s",
            extra=_config(port, receiver.url),
        )
        (setup.root / "keys" / "crm.secret").write_bytes(SECRET + b"\n")
        receiver.mode = "503"  # the outage starts before the first event
        node = NodeProcess(setup)
        try:
            node.start()
            token = (setup.root / "keys" / "http.token").read_text().strip()
            assert _get(port, "/api/webhooks", None)[0] == 401
            assert _get(port, "/api/webhooks", "wrong-token-wrong-token")[0] == 401
            rcpts = ["gone0@example.org", "slow0@example.org"]
            rcpts += [f"user{i}@example.org" for i in range(60)]
            jobs = [job(f"wh-{i}", rcpts[i::6]) for i in range(6)]
            with Producer(setup.endpoint, timeout=30, attempts=3) as producer:
                replies = list(producer.submit_many(jobs))
            assert {r.status for r in replies} == {"accepted"}
            accepted = {a.message_id for r in replies for a in r.accepted}
            assert len(accepted) == len(rcpts)

            def all_final() -> bool:
                done = {m for m, t in _published(setup) if t in ("delivered", "bounced")}
                return done >= accepted

            assert wait_for(all_final, 60), node.log()[-3000:]
            time.sleep(3.0)
            receiver.mode = "drop"  # connections closed without an answer, too
            refused = receiver.refused
            assert wait_for(lambda: receiver.refused >= refused + 2, 30)
            time.sleep(2.0)
            status, answer = _get(port, "/api/webhooks", token)
            assert status == 200
            (crm,) = answer["webhooks"]
            assert crm["name"] == "crm" and crm["url"] == receiver.url
            assert crm["pending"] >= len(accepted) * 2 and crm["delivered"] == 0
            assert crm["consecutive_failures"] >= 1 and crm["last_error"]
            assert crm["last_success"] is None and crm["oldest_pending_age_s"] > 0
            text = _cli(setup, "--config", str(setup.config_path))
            assert text.returncode == 0, text.stderr
            assert "crm" in text.stdout and "failing" in text.stdout, text.stdout
            published = _published(setup)
            assert receiver.events() == []
            node.kill()  # SIGKILL with every event pending
            node.start()
            time.sleep(2.0)  # the outage goes on a little after the restart
            receiver.mode = "ok"

            def received_all() -> bool:
                got = {(e["message_id"], e["type"]) for e in receiver.events()}
                return got >= set(published)

            assert wait_for(received_all, 60), (node.log()[-3000:], len(receiver.events()))
            assert wait_for(
                lambda: _get(port, "/api/webhooks", token)[1]["webhooks"][0]["pending"] == 0, 30
            )
            status, answer = _get(port, "/api/webhooks", token)
            (crm,) = answer["webhooks"]
            assert crm["consecutive_failures"] == 0 and crm["last_success"] is not None
            as_json = _cli(setup, "--config", str(setup.config_path), "--json")
            assert json.loads(as_json.stdout)["webhooks"][0]["pending"] == 0
            metrics = _get(port, "/metrics", None)[1]
        finally:
            node.close()
        assert receiver.bad_signatures == 0
        # Deduplicated by id, in arrival order: each recipient's events in the order the
        # node published them, and the ids of one recipient increasing.
        seen: set[str] = set()
        by_rcpt: dict[str, list[str]] = defaultdict(list)
        ids: dict[str, list[int]] = defaultdict(list)
        unique = 0
        for e in receiver.events():
            if e["id"] in seen:
                continue
            seen.add(e["id"])
            unique += 1
            by_rcpt[e["message_id"]].append(e["type"])
            ids[e["message_id"]].append(int(e["id"].rpartition("-")[2]))
        want: dict[str, list[str]] = defaultdict(list)
        for message_id, kind in published:
            want[message_id].append(kind)
        assert set(by_rcpt) == accepted
        for message_id in accepted:
            assert by_rcpt[message_id] == want[message_id], message_id
            assert ids[message_id] == sorted(ids[message_id])
        assert want[replies_id(replies, "gone0@example.org")][-1] == "bounced"
        assert "deferred" in want[replies_id(replies, "slow0@example.org")]
        assert crm["delivered"] == unique
        families = {f.name: f for f in text_string_to_metric_families(metrics)}
        pending = families["salvo_webhook_pending"].samples
        assert [(s.labels["webhook"], s.value) for s in pending] == [("crm", 0.0)]
        posts = {
            s.labels["result"]: s.value
            for s in families["salvo_webhook_posts"].samples
            if s.name == "salvo_webhook_posts_total"
        }
        assert posts.get("2xx", 0) >= 1  # counted since the restart


def replies_id(replies, rcpt: str) -> str:
    return next(a.message_id for r in replies for a in r.accepted if a.to == rcpt)
