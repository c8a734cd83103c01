"""Two real nodes and one real Redis sending to one sink: the provider's total message rate
holds across both nodes, its total connections never exceed the cap, and the nodes ask
Redis once per batch of messages, not per message."""

from __future__ import annotations

import uuid

from clusterutil import cluster_extra, needs_redis
from nodeutil import NodeProcess, NodeSetup, RawProducer, job, wait_for

from salvo.testing.redis import RedisServer
from salvo.testing.sink import SinkStats, SinkThread

pytestmark = needs_redis

RATE = 200  # messages per second over both nodes
CONNS = 3  # connections over both nodes
PER_NODE = 1500

LIMITS = f"""
[providers.default]
total_max_messages_per_second = {RATE}
total_max_connections = {CONNS}
"""


def _commands(redis: RedisServer) -> dict[str, int]:
    stats = redis.client().info("commandstats")
    return {name.removeprefix("cmdstat_"): v["calls"] for name, v in stats.items()}


def test_total_rate_and_connections_hold_across_two_nodes(tmp_path):
    with RedisServer() as redis:
        sink = SinkThread("127.0.0.2")
        sink.stats = SinkStats(arrivals=[])
        port = sink.start()
        prefix = "t" + uuid.uuid4().hex[:8]
        nodes = []
        try:
            for name in ("a", "b"):
                setup = NodeSetup(
                    tmp_path / name,
                    {"example.org": f"127.0.0.2:{port}"},
                    extra=LIMITS + cluster_extra(redis.url, name, prefix),
                )
                nodes.append(NodeProcess(setup).start(wait=False))
            for node in nodes:
                node.wait_ready()
            before = _commands(redis)
            for node in nodes:
                producer = RawProducer(node.setup.endpoint)
                try:
                    for j in range(PER_NODE // 500):
                        rcpts = [f"r{i}@example.org" for i in range(500)]
                        jid = f"{node.setup.root.name}-{j}"
                        reply = producer.request(job(jid, rcpts), timeout=60)
                        assert reply is not None and reply["status"] == "accepted", reply
                finally:
                    producer.close()
            total = 2 * PER_NODE
            assert wait_for(lambda: sink.stats.messages >= total, 120, 0.2), (
                f"{sink.stats.messages} of {total} arrived"
            )
            after = _commands(redis)
        finally:
            for node in nodes:
                node.close()
            sink.stop()
        stats = sink.stats
        assert stats.duplicates == 0
        arrivals = sorted(stats.arrivals)
        # The steady window: past the first second (a burst is allowed), to the last message.
        start = arrivals[0] + 1.0
        inside = [t for t in arrivals if t >= start]
        rate = (len(inside) - 1) / (inside[-1] - start)
        peak = max(
            sum(1 for t in arrivals[i : i + 2 * RATE] if t < s + 1.0)
            for i, s in enumerate(arrivals)
            if s >= start
        )
        calls = sum(after.values()) - sum(before.values())
        print({k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)})
        scripts = after.get("evalsha", 0) - before.get("evalsha", 0)
        print(
            f"\nrate {rate:.1f}/s over {inside[-1] - start:.1f} s (limit {RATE}), busiest second "
            f"{peak}, max concurrent connections {stats.max_concurrent} (cap {CONNS}), "
            f"Redis commands {calls} = {calls / total:.4f} per message "
            f"(scripts {scripts} = {scripts / total:.4f})"
        )
        assert rate <= 1.25 * RATE, rate
        assert rate >= 0.5 * RATE, rate  # both nodes did send
        assert stats.max_concurrent <= CONNS
        assert scripts / total < 0.05


def test_leases_expire_share_applies_while_redis_is_down_and_redis_again_after(tmp_path):
    """In one process, with a real Redis: a dead node's lease expires; while Redis is
    down the node uses its share (the live nodes seen last); when Redis is back its grants
    and leases come from Redis again, and its open connections' leases are added back."""
    import trio

    from salvo.actors.cluster import RedisLink
    from salvo.actors.cluster_throttle import Throttles
    from salvo.core.shaping import Limits

    limits = Limits(max_connections=2, max_messages_per_second=100, total_max_connections=2)
    with RedisServer() as redis:

        async def main():
            def throttles(name):
                link = RedisLink(redis.url, connect_timeout=0.5, command_timeout=0.5)
                return Throttles(link, "tl", name, lease_ttl=3.0, expected_nodes=1)

            a, b = throttles("a"), throttles("b")
            async with trio.open_nursery() as nursery:
                await nursery.start(a.run)
                await nursery.start(b.run)
                lane_a = a.lane("10.0.0.1", "p", limits)
                lane_b = b.lane("10.0.0.1", "p", limits)
                first, _ = await lane_a.open()
                second, _ = await lane_b.open()
                assert first is not None and second is not None
                third, wait = await lane_b.open()
                assert third is None and wait > 0  # the cap holds across nodes
                # Node a "dies": no more renewals; its lease expires within lease_ttl.
                a.leases.clear()
                lane_b._full_until = 0.0
                deadline = trio.current_time() + 10
                while (got := (await lane_b.open())[0]) is None:
                    assert trio.current_time() < deadline, "a dead node's lease never expired"
                    lane_b._full_until = 0.0
                    await trio.sleep(0.2)
                await b.renew()
                assert b.live_nodes == 2  # a's heartbeat goes on (only its leases stopped)
                assert b.share.nodes == 2
                redis.kill()
                before = b.counts["local_grants"]
                await lane_b.take(1000)
                assert b.counts["local_grants"] == before + 1
                # The share of 2 connections over 2 nodes is 1, and b holds 2 now.
                lane_b._full_until = 0.0
                assert (await lane_b.open())[0] is None
                redis.start()
                with trio.fail_after(10):
                    while not b.link.up:
                        await b.renew()
                        await trio.sleep(0.2)
                members = redis.client().zrange(b"tl:conn:p\x0010.0.0.1", 0, -1)
                assert sorted(members) == sorted([second.id, got.id])  # added back
                grants = b.counts["grants"]
                lane_b.tokens.left = 0
                await lane_b.take(10)
                assert b.counts["grants"] == grants + 1
                nursery.cancel_scope.cancel()
            a.link.close()
            b.link.close()

        trio.run(main)
