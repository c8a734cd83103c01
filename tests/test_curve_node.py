"""CURVE on a real node (real sockets, an aiosmtpd sink): producers with an allowed key get
through, a job for another tenant is rejected, unknown keys and plaintext clients get
nothing; events reach only subscribers with a key; SIGHUP adds and revokes keys while
open connections stay up. Every wait is bounded; nothing asserts on timing."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import zmq
from nodeutil import AioSink, EventSubscriber, NodeSetup, RawProducer, job, running_node, wait_for

from salvo.actors.keys import generate, read_public
from salvo.client import Producer

BOUND = 60.0

PRODUCERS = {
    "web": '[producers.web]\npublic_key = "keys/web.key"\ntenants = ["acme"]\n',
    "probe": '[producers.probe]\npublic_key = "keys/probe.key"\ntenants = ["*"]\n',
}
SUBSCRIBERS = '[subscribers.ops]\npublic_key = "keys/ops.key"\n'


@pytest.fixture(scope="module")
def curve_node(tmp_path_factory):
    root = tmp_path_factory.mktemp("curve")
    with AioSink("127.0.0.2") as sink:
        setup = NodeSetup(
            root / "node",
            {"example.org": sink.address},
            ingress_extra='curve = true\ncurve_secret_key = "keys/node.key_secret"\n',
            events_extra="curve = true\n",
            extra="\n".join([*PRODUCERS.values(), SUBSCRIBERS]),
        )
        keys = setup.root / "keys"
        for name in ("web", "probe", "ops", "stranger"):
            generate(keys, name)
        setup.curve_probe = (keys / "node.key", keys / "probe.key_secret")
        with running_node(setup) as node:
            yield setup, node, sink


def _keys(setup: NodeSetup, name: str) -> dict:
    keys = setup.root / "keys"
    return {"curve_server_key": keys / "node.key", "curve_key": keys / f"{name}.key_secret"}


def _pair(setup: NodeSetup, name: str) -> tuple[Path, Path]:
    keys = setup.root / "keys"
    return keys / "node.key", keys / f"{name}.key_secret"


def test_the_node_makes_its_key_pair_and_prints_the_public_key(curve_node):
    setup, node, _ = curve_node
    keys = setup.root / "keys"
    assert stat.S_IMODE((keys / "node.key_secret").stat().st_mode) == 0o600
    public = read_public(keys / "node.key").decode()
    assert f"CURVE on for producers and events; the node's public key is {public}" in node.log()


def test_an_allowed_key_gets_through_and_a_wrong_tenant_is_rejected(curve_node):
    setup, _, sink = curve_node
    with Producer(setup.endpoint, timeout=20, attempts=3, **_keys(setup, "web")) as producer:
        ok = producer.submit(job("c-ok", ["ann@example.org"]))
        bad = producer.submit(job("c-globex", ["bob@example.org"], tenant="globex"))
    assert ok.status == "accepted", ok
    assert bad.status == "rejected" and bad.accepted == [] and bad.rejected == []
    assert bad.error == "producer 'web' may not send for tenant 'globex' (its tenants: acme)"
    assert wait_for(lambda: any(m.rcpts == ["ann@example.org"] for m in sink.snapshot()), BOUND)
    assert not any("bob@example.org" in m.rcpts for m in sink.snapshot())
    assert "c-globex" not in {e["job"] for e in setup.events()}
    assert "job 'c-globex' rejected: producer 'web' may not send for tenant 'globex'" in (
        curve_node[1].log()
    )


def test_unknown_keys_and_plaintext_clients_get_nothing(curve_node):
    setup, node, _ = curve_node
    with Producer(setup.endpoint, timeout=1.5, attempts=2, **_keys(setup, "stranger")) as p:
        [reply] = p.submit_many([job("c-stranger", ["cy@example.org"])])
    assert reply.status == "error" and reply.error.startswith("timeout:"), reply
    plain = RawProducer(setup.endpoint)
    try:
        assert plain.request(job("c-plain", ["dee@example.org"]), timeout=3) is None
    finally:
        plain.close()
    stranger = read_public(setup.root / "keys" / "stranger.key").decode()
    assert wait_for(lambda: f"unknown key {stranger}" in node.log(), 10), node.log()[-2000:]
    seen = {e["job"] for e in setup.events()}
    assert not {"c-stranger", "c-plain"} & seen


def test_salvo_submit_takes_the_key_files(curve_node, tmp_path):
    setup, _, _ = curve_node
    (tmp_path / "body.txt").write_text("Hello\n")
    server_key, key = _pair(setup, "web")
    flags = ["--endpoint", setup.endpoint, "--curve-server-key", str(server_key)]
    flags += ["--curve-key", str(key), "--timeout", "20"]
    message = ["--from", "news@acme.example", "--to", "eve@example.org", "--subject", "Hi"]
    message += ["--text", str(tmp_path / "body.txt"), "--tenant", "acme"]
    done = subprocess.run(
        [sys.executable, "-m", "salvo", "submit", *flags, *message],
        capture_output=True,
        text=True,
        timeout=BOUND,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "accepted"
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps(job("c-cli", ["fay@example.org"], tenant="globex")) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "salvo", "submit", *flags, "--jobs", str(jobs)],
        capture_output=True,
        text=True,
        timeout=BOUND,
    )
    assert done.returncode == 1, done.stderr
    assert "line 1, job c-cli: rejected: producer 'web' may not send for tenant 'globex'" in (
        done.stderr
    )


def test_events_reach_only_subscribers_with_a_key(curve_node):
    setup, _, _ = curve_node
    keyed = EventSubscriber(setup.events_endpoint, curve=_pair(setup, "ops"))
    plain = EventSubscriber(setup.events_endpoint)
    stranger = EventSubscriber(setup.events_endpoint, curve=_pair(setup, "stranger"))
    try:
        keyed.wait_connected()
        with Producer(setup.endpoint, timeout=20, attempts=3, **_keys(setup, "web")) as p:
            assert p.submit(job("c-events", ["gil@example.org"])).status == "accepted"
        assert wait_for(lambda: any(e["job"] == "c-events" for e in keyed.drain()), BOUND), (
            keyed.events
        )
        for other in (plain, stranger):
            assert other.drain() == []
            assert not other._monitor.poll(0, zmq.POLLIN)  # no handshake ever succeeded
    finally:
        for sub in (keyed, plain, stranger):
            sub.close()


def test_sighup_adds_and_revokes_keys_without_dropping_connections(curve_node):
    setup, node, _ = curve_node
    existing = RawProducer(setup.endpoint, curve=_pair(setup, "web"))
    monitor = existing.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED)
    try:
        assert existing.request(job("h-1", ["hal@example.org"]), BOUND)["status"] == "accepted"
        generate(setup.root / "keys", "late")
        setup.extra += '[producers.late]\npublic_key = "keys/late.key"\ntenants = ["acme"]\n'
        setup.write()
        os.kill(node.pid, signal.SIGHUP)
        assert wait_for(lambda: node.log().count("SIGHUP: reloaded") == 1, BOUND), node.log()
        assert "3 producer and 1 subscriber keys" in node.log()
        with Producer(setup.endpoint, timeout=20, attempts=3, **_keys(setup, "late")) as late:
            assert late.submit(job("h-2", ["ida@example.org"])).status == "accepted"
        assert existing.request(job("h-3", ["jo@example.org"]), BOUND)["status"] == "accepted"

        # Revoke web: its open connection stays, but its jobs are refused from now on.
        setup.extra = setup.extra.replace(PRODUCERS["web"], "")
        setup.write()
        os.kill(node.pid, signal.SIGHUP)
        assert wait_for(lambda: node.log().count("SIGHUP: reloaded") == 2, BOUND), node.log()
        reply = existing.request(job("h-4", ["kim@example.org"]), BOUND)
        assert reply["status"] == "rejected", reply
        assert reply["error"] == "producer 'web': its key is no longer configured on this node"
        with Producer(setup.endpoint, timeout=1.5, attempts=2, **_keys(setup, "web")) as p:
            [again] = p.submit_many([job("h-5", ["lee@example.org"])])
        assert again.status == "error" and again.error.startswith("timeout:")
        assert not monitor.poll(0, zmq.POLLIN), "the open connection was dropped"

        # A config that cannot be used keeps the keys in use.
        setup.extra += '[producers.broken]\npublic_key = "keys/missing.key"\ntenants = ["a"]\n'
        setup.write()
        os.kill(node.pid, signal.SIGHUP)
        assert wait_for(lambda: "SIGHUP: nothing reloaded" in node.log(), BOUND)
        assert "[producers.broken] public_key" in node.log()
        with Producer(setup.endpoint, timeout=20, attempts=3, **_keys(setup, "late")) as late:
            assert late.submit(job("h-6", ["max@example.org"])).status == "accepted"
    finally:
        existing.sock.disable_monitor()
        monitor.close()
        existing.close()


def test_a_revoked_subscriber_is_cut_off(curve_node):
    """Runs after the SIGHUP test (which left a config that cannot be used): a subscriber
    removed from the config and SIGHUP drops off; the one kept reconnects by itself."""
    setup, node, _ = curve_node
    generate(setup.root / "keys", "ops2")
    ops2 = '[subscribers.ops2]\npublic_key = "keys/ops2.key"\n'

    def reload(extra: str) -> None:
        before = node.log().count("SIGHUP: reloaded")
        setup.extra = extra
        setup.write()
        os.kill(node.pid, signal.SIGHUP)
        assert wait_for(lambda: node.log().count("SIGHUP: reloaded") > before, BOUND)

    reload(PRODUCERS["probe"] + SUBSCRIBERS + ops2)
    kept = EventSubscriber(setup.events_endpoint, curve=_pair(setup, "ops2"))
    revoked = EventSubscriber(setup.events_endpoint, curve=_pair(setup, "ops"))
    try:
        kept.wait_connected()
        revoked.wait_connected()
        with Producer(setup.endpoint, timeout=20, attempts=3, **_keys(setup, "probe")) as p:
            assert p.submit(job("s-1", ["nia@example.org"])).status == "accepted"
            for sub in (kept, revoked):
                assert wait_for(lambda s=sub: any(e["job"] == "s-1" for e in s.drain()), BOUND)
            reload(PRODUCERS["probe"] + ops2)
            # The batch after the reload rebinds the socket; the kept subscriber comes
            # back within a few reconnects: submit until it hears of a job (bounded).
            for i in range(60):
                assert p.submit(job(f"s-2-{i}", ["oz@example.org"])).status == "accepted"
                if wait_for(lambda: any(e["job"].startswith("s-2-") for e in kept.drain()), 1):
                    break
            else:
                raise AssertionError("the kept subscriber never heard again")
        revoked.drain()
        assert not any(e["job"].startswith("s-2-") for e in revoked.events)
        assert "events: socket bound again: a subscriber key was revoked" in node.log()
    finally:
        kept.close()
        revoked.close()


def test_a_producer_key_that_cannot_be_read_stops_the_start(tmp_path):
    setup = NodeSetup(
        tmp_path / "node",
        {"example.org": "127.0.0.2:25"},
        ingress_extra="curve = true\n",
        extra='[producers.web]\npublic_key = "keys/missing.key"\ntenants = ["acme"]\n',
    )
    done = subprocess.run(
        [sys.executable, "-m", "salvo", "node", "--config", str(setup.config_path)],
        capture_output=True,
        text=True,
        timeout=BOUND,
        cwd=setup.root,
    )
    assert done.returncode == 1
    assert "salvo node: [producers.web] public_key: " in done.stderr
    assert "missing.key: no such key file" in done.stderr
