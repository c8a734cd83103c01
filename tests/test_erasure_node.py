"""Erasure and retention on a real node (aiosmtpd sink, the CLI, the admin API): after
``salvo erase`` no file under the data dir holds the address in any case, while the node
runs and delivers; the address stays suppressed; others are untouched; the API route needs
its token. Retention: old event logs and finished records go. Waits are bounded."""

from __future__ import annotations

import http.client
import json
import re
from pathlib import Path

from nodeutil import AioSink, NodeSetup, free_port, job, running_node, wait_for

from salvo.client import Producer

BOUND = 60.0
ANN = "Ann.Smith@Example.org"
CAROL = "carol.jones@example.org"


def grep(folder: Path, address: str) -> dict[str, int]:
    """Occurrences of the address in any ASCII case in every file under ``folder``."""
    rx = re.compile(re.escape(address.encode()), re.IGNORECASE)
    out = {}
    for path in folder.rglob("*"):
        if path.is_file():
            n = len(rx.findall(path.read_bytes()))
            if n:
                out[str(path.relative_to(folder))] = n
    return out


def _post(port: int, body: bytes, token: str | None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=BOUND)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        conn.request("POST", "/api/erase", body, headers)
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def _delivered(setup: NodeSetup) -> int:
    return sum(1 for e in setup.events() if e["type"] == "delivered")


def test_erase_while_the_node_runs_and_delivers(tmp_path: Path) -> None:
    port = free_port()
    with AioSink("127.0.0.2") as sink:
        setup = NodeSetup(
            tmp_path / "node",
            {"example.org": sink.address},
            extra=f'\n[http]\nlisten = "127.0.0.1:{port}"\n',
        )
        with running_node(setup), Producer(setup.endpoint, timeout=30, attempts=3) as producer:
            first = [
                job("a1", [f"Ann Smith <{ANN}>", "bob@example.org"]),
                job("a2", [ANN.lower(), "dan@example.org", CAROL]),
            ]
            assert {r.status for r in producer.submit_many(first)} == {"accepted"}
            assert wait_for(lambda: _delivered(setup) >= 5, BOUND), "first deliveries"
            done = setup.cli(
                "suppress", "--data", str(setup.data_dir), "add", ANN, "--tenant", "acme"
            )
            assert done.returncode == 0, done.stderr
            # Other traffic keeps flowing while the erasure runs.
            others = [
                job(f"o{i}", [f"user{i}.{k}@example.org" for k in range(50)]) for i in range(20)
            ]
            assert {r.status for r in producer.submit_many(others)} == {"accepted"}
            assert grep(setup.data_dir, ANN)
            done = setup.cli(
                "erase", "--config", str(setup.config_path), ANN.upper(), timeout=BOUND * 2
            )
            assert done.returncode == 0, (done.stdout, done.stderr)
            assert "cancelled" in done.stdout
            assert grep(setup.data_dir, ANN) == {}
            # Still suppressed: a new job to it is refused, and leaves no trace.
            (reply,) = producer.submit_many([job("a3", [ANN, "erin@example.org"])])
            assert reply.status == "partial"
            assert [(x.reason, x.text) for x in reply.rejected] == [("suppressed", "erased")]
            assert wait_for(lambda: _delivered(setup) >= 5 + 1000 + 1, BOUND), (
                "the other deliveries"
            )
            assert grep(setup.data_dir, ANN) == {}
            events = setup.events()
            assert any(e["type"] == "erased" for e in events)
            assert any(e.get("recipient") == "bob@example.org" for e in events)
            assert any(e.get("recipient") == "erased@erased.invalid" for e in events)
            check = setup.cli("suppress", "--data", str(setup.data_dir), "check", ANN)
            assert check.returncode == 1, check.stdout
            # The API: its token, bad bodies, then an erasure.
            token = (setup.root / "keys" / "http.token").read_text().strip()
            body = json.dumps({"address": CAROL}).encode()
            assert _post(port, body, None)[0] == 401
            assert _post(port, body, "wrong-token-wrong-token")[0] == 401
            for bad, why in (
                (b"{nope", "JSON"),
                (b"[1]", "body"),
                (b"{}", "address"),
                (b'{"address": "not an address"}', "address"),
                (b'{"address": "a@example.org", "tenant": 5}', "tenant"),
            ):
                status, answer = _post(port, bad, token)
                assert status == 400 and why in answer["error"], (bad, answer)
            assert grep(setup.data_dir, CAROL)
            status, answer = _post(port, body, token)
            assert status == 200, answer
            assert answer["erased"]["left_in_spool_file"] == 0
            assert grep(setup.data_dir, CAROL) == {}
            assert grep(setup.data_dir, "dan@example.org")  # untouched


def test_retention_of_event_logs_and_finished_records(tmp_path: Path) -> None:
    with AioSink("127.0.0.2") as sink:
        setup = NodeSetup(
            tmp_path / "node",
            {"example.org": sink.address},
            extra='\n[retention]\nevents = "3s"\nfinished = "1s"\n',
        )
        text = setup.config_path.read_text().replace(
            "[ingress]", '[spool]\nidempotency_window = "1s"\n\n[ingress]'
        )
        setup.config_path.write_text(text)
        with running_node(setup), Producer(setup.endpoint, timeout=30, attempts=3) as producer:
            (reply,) = producer.submit_many([job("r1", ["old@example.org"])])
            assert reply.status == "accepted"
            assert wait_for(lambda: _delivered(setup) >= 1, BOUND), "the delivery"
            folder = setup.data_dir / "events"
            # The current file is rotated, then deleted once older than 3 s; the finished
            # job's records are purged by the node's maintenance (every 10 s).
            assert wait_for(lambda: grep(folder, "old@example.org") == {}, BOUND), (
                "the log's expiry"
            )
            assert wait_for(lambda: not any(setup.queue_states().values()), BOUND), "the purge"
