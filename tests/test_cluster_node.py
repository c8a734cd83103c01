"""Two real nodes and one real Redis: a suppression made on one node is honoured by the
other within one second, and a job id resent to the other node is not sent twice."""

from __future__ import annotations

import time

import pytest
from clusterutil import needs_redis, submit, two_nodes, wait_suppressed_on
from nodeutil import AioSink, EventSubscriber, wait_for

from salvo.core.cluster import ClusterKeys, claim_value, reply_value
from salvo.core.protocol import Reply
from salvo.testing.redis import RedisServer

pytestmark = needs_redis


@pytest.fixture(scope="module")
def redis_server():
    with RedisServer() as server:
        yield server


def _prefix(node) -> str:
    text = node.setup.config_path.read_text()
    return text.split('prefix = "')[1].split('"')[0]


def test_hard_bounce_on_a_blocks_the_address_on_b_within_a_second(tmp_path, redis_server):
    with AioSink("127.0.0.2") as sink, two_nodes(tmp_path, redis_server, sink) as (a, b):
        sink.rcpt_replies["gone@example.org"] = "550 5.1.1 no such user"
        events = EventSubscriber(a.setup.events_endpoint)
        try:
            events.wait_connected()
            reply = submit(a, "bounce-1", ["gone@example.org"])
            assert reply["status"] == "accepted", reply
            bounced = wait_for(
                lambda: [e for e in events.drain() if e["type"] == "bounced"], 60, 0.01
            )
            assert bounced, "node a did not bounce the recipient"
        finally:
            events.close()
        # The event leaves after the outcome's commit; the suppression follows it.
        elapsed = wait_suppressed_on(b, "gone@example.org", timeout=10)
        assert elapsed is not None, "node b never rejected the address"
        assert elapsed < 1.0, f"node b rejected it only after {elapsed:.2f} s"
        # The other addresses still go through on b.
        assert submit(b, "clean-1", ["fine@example.org"])["status"] == "accepted"


def test_cli_suppression_on_a_cluster_node_reaches_the_other(tmp_path, redis_server):
    with AioSink("127.0.0.2") as sink, two_nodes(tmp_path, redis_server, sink) as (a, b):
        done = b.setup.cli(
            "suppress", "--config", str(b.setup.config_path), "add", "cli@example.org"
        )
        assert done.returncode == 0, done.stderr
        assert "published to the cluster" in done.stderr
        elapsed = wait_suppressed_on(a, "cli@example.org", timeout=10)
        assert elapsed is not None and elapsed < 1.0, elapsed
        # And a removal travels too.
        done = b.setup.cli(
            "suppress", "--config", str(b.setup.config_path), "remove", "cli@example.org"
        )
        assert done.returncode == 0, done.stderr

        def clean_on_a():
            reply = submit(a, f"after-remove-{time.monotonic()}", ["cli@example.org"])
            return reply["status"] == "accepted"

        assert wait_for(clean_on_a, 10, 0.1)


def test_job_id_resent_to_the_other_node_is_not_sent_twice(tmp_path, redis_server):
    with AioSink("127.0.0.2") as sink, two_nodes(tmp_path, redis_server, sink) as (a, b):
        first = submit(a, "order-42", ["buyer@example.org", "boss@example.org"])
        assert first["status"] == "accepted", first

        def replayed():
            reply = submit(b, "order-42", ["buyer@example.org", "boss@example.org"])
            assert reply["status"] in ("accepted", "retry"), reply
            return reply if reply["status"] != "retry" else None

        again = wait_for(replayed, 10, 0.1)
        assert again == first  # a's reply, its Message-IDs included
        # Both recipients arrive once each, and nothing more comes.
        assert wait_for(lambda: len(sink.snapshot()) >= 2, 60)
        time.sleep(1.5)
        ids = sink.by_message_id()
        assert sorted(ids) == sorted(x["message_id"] for x in first["accepted"])
        assert set(ids.values()) == {1}
        # The same id in another tenant is another job.
        other = submit(b, "order-42", ["buyer@example.org"], tenant="other")
        assert other["status"] == "accepted"


def test_a_claim_held_elsewhere_gets_retry_then_the_holders_reply(tmp_path, redis_server):
    with AioSink("127.0.0.2") as sink, two_nodes(tmp_path, redis_server, sink) as (a, b):
        keys = ClusterKeys(_prefix(a))
        client = redis_server.client()
        key = keys.job("acme", "held-1")
        client.set(key, claim_value("c"), ex=600)  # node c is committing it
        reply = submit(b, "held-1", ["x@example.org"])
        assert reply["status"] == "retry" and "'c'" in reply["error"], reply
        theirs = Reply(id="held-1", status="rejected", error="from c")
        client.set(key, reply_value("c", theirs), xx=True, keepttl=True)
        assert submit(a, "held-1", ["x@example.org"]) == {
            "id": "held-1",
            "status": "rejected",
            "accepted": [],
            "rejected": [],
            "error": "from c",
        }
        assert client.ttl(key) > 500
        # A node's own claims carry its reply once committed (with the claim's TTL).
        submit(a, "own-1", ["y@example.org"])
        stored = wait_for(lambda: (client.get(keys.job("acme", "own-1")) or b"")[:1] == b"r", 5)
        assert stored
        assert 3000 < client.ttl(keys.job("acme", "own-1")) <= 3600
        client.close()
        assert not sink.by_message_id().get("")


def _start_on_new_ports(node) -> None:
    """Restart a stopped node on fresh ports (its old ones may be taken meanwhile on a
    busy machine: seen once as 'Address already in use')."""
    from nodeutil import free_port

    node.setup.ingress_port, node.setup.events_port = free_port(), free_port()
    node.setup.write()
    node.start()


def _trim_past(redis_server, prefix: str, address: str) -> None:
    """Put ``address`` in the snapshot hash only, then push 1,500 empty batches through
    the stream trimmed to 1,000 (as if other nodes had been busy)."""
    from salvo.core.cluster import encode_entry, encode_ops
    from salvo.core.suppression import SuppressionEntry, entry_key

    keys = ClusterKeys(prefix)
    client = redis_server.client()
    client.hset(
        keys.supp_all,
        entry_key("", b"a", address),
        encode_entry(SuppressionEntry(address, reason="manual", created=time.time())),
    )
    pipe = client.pipeline(transaction=False)
    for _ in range(1500):
        pipe.xadd(keys.supp_stream, {b"n": b"z", b"b": encode_ops([])}, maxlen=1000)
    pipe.execute()
    client.close()


def test_a_node_catches_up_after_downtime_and_a_new_node_loads_the_snapshot(tmp_path, redis_server):
    from clusterutil import cluster_extra
    from nodeutil import NodeProcess, NodeSetup

    with AioSink("127.0.0.2") as sink, two_nodes(tmp_path, redis_server, sink) as (a, b):
        prefix = _prefix(a)
        done = a.setup.cli(
            "suppress", "--config", str(a.setup.config_path), "add", "one@example.org"
        )
        assert done.returncode == 0, done.stderr
        assert wait_suppressed_on(b, "one@example.org", timeout=10) is not None
        assert b.terminate() == 0
        # Made while b is down: b reads it from the stream, from its last applied id.
        done = a.setup.cli(
            "suppress", "--config", str(a.setup.config_path), "add", "two@example.org"
        )
        assert done.returncode == 0, done.stderr
        _start_on_new_ports(b)
        assert wait_suppressed_on(b, "two@example.org", timeout=10) is not None
        # b away while more than the stream keeps was written: its last entry is trimmed,
        # so it loads the snapshot (which alone holds the entry of trim@).
        assert b.terminate() == 0
        _trim_past(redis_server, prefix, "trim@example.org")
        _start_on_new_ports(b)
        assert wait_suppressed_on(b, "trim@example.org", timeout=10) is not None
        assert "entries from the snapshot applied" in b.log().rpartition("---- start")[2]
        # A node that never followed this Redis loads the snapshot hash first.
        setup = NodeSetup(
            tmp_path / "c",
            {"example.org": sink.address},
            extra=cluster_extra(redis_server.url, "c", prefix),
        )
        c = NodeProcess(setup)
        try:
            c.start()
            for address in ("one@example.org", "two@example.org"):
                assert wait_suppressed_on(c, address, timeout=10) is not None, address
            assert submit(c, "c-clean", ["fine@example.org"])["status"] == "accepted"
            assert "suppression: 3 entries from the snapshot applied" in c.log()
        finally:
            c.close()
