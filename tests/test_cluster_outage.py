"""Redis killed and restarted under load, with two real nodes: no suppressed address is
mailed, no acked recipient is lost, suppressions made during the outage reach the other
node once Redis is back; and the default ``when_down = "retry"`` refuses jobs meanwhile."""

from __future__ import annotations

import time

from clusterutil import needs_redis, submit, two_nodes, wait_suppressed_on
from nodeutil import AioSink, ContinuousProducer, missing_acked, wait_for

from salvo.testing.redis import RedisServer

pytestmark = needs_redis

SUPPRESSED = ("before@example.org", "during@example.org", "late@example.org")


def _suppress(node, address: str):
    done = node.setup.cli("suppress", "--config", str(node.setup.config_path), "add", address)
    assert done.returncode == 0, done.stderr
    return done


def test_redis_outage_loses_nothing_and_lets_no_suppressed_address_through(tmp_path):
    with (
        RedisServer() as redis,
        AioSink("127.0.0.2") as sink,
        two_nodes(tmp_path, redis, sink, more='when_down = "accept"') as (a, b),
    ):
        _suppress(a, "before@example.org")
        assert wait_suppressed_on(b, "before@example.org", timeout=10) is not None
        # Queued on b for later: it is suppressed on a during the outage.
        late = submit(b, "late-1", ["late@example.org"], send_after=time.time() + 25)
        assert late["status"] == "accepted", late
        with (
            ContinuousProducer(a.setup.endpoint, "pa", pause=0.01, seed=1) as pa,
            ContinuousProducer(b.setup.endpoint, "pb", pause=0.01, seed=2) as pb,
        ):
            assert wait_for(lambda: pa.acked_count() > 20 and pb.acked_count() > 20, 60)
            redis.kill()
            down = _suppress(a, "during@example.org")
            assert "unreachable" in down.stderr
            _suppress(a, "late@example.org")
            # Alone, each node still checks its own store, and clean jobs still go in.
            blocked = submit(b, "probe-before", ["before@example.org", "ok1@example.org"])
            assert blocked["status"] == "partial", blocked
            assert [r["reason"] for r in blocked["rejected"]] == ["suppressed"]
            acked = pa.acked_count(), pb.acked_count()
            assert wait_for(lambda: pa.acked_count() > acked[0] + 20, 30)
            assert wait_for(lambda: pb.acked_count() > acked[1] + 20, 30)
            time.sleep(1)
            redis.start()  # empty, as after a crash without persistence
            back = time.monotonic()
            assert wait_suppressed_on(b, "during@example.org", timeout=15) is not None
            print(f"outage suppression reached b {time.monotonic() - back:.2f} s after Redis")
            acked = pa.acked_count(), pb.acked_count()
            assert wait_for(lambda: pa.acked_count() > acked[0] + 20, 30)
            assert wait_for(lambda: pb.acked_count() > acked[1] + 20, 30)
        assert pa.statuses["accepted"] and pb.statuses["accepted"]
        # Every acked recipient arrives; no suppressed address ever does.
        for producer, node in ((pa, a), (pb, b)):
            assert wait_for(
                lambda p=producer, n=node: not missing_acked(p.acked, sink, n.setup), 120
            ), f"{len(missing_acked(producer.acked, sink, node.setup))} acked recipients missing"
        late_id = late["accepted"][0]["message_id"]
        final = wait_for(
            lambda: [
                e
                for e in b.setup.events()
                if e.get("message_id") == late_id and e["type"] == "suppressed"
            ],
            60,
            0.2,
        )
        assert final, "the job queued on b before the outage was not suppressed"
        mailed = {r.lower() for m in sink.snapshot() for r in m.rcpts}
        assert not mailed & set(SUPPRESSED)


def test_jobs_get_retry_while_redis_is_down_by_default(tmp_path):
    with (
        RedisServer() as redis,
        AioSink("127.0.0.2") as sink,
        two_nodes(tmp_path, redis, sink) as (a, b),
    ):
        assert submit(a, "up-1", ["u@example.org"])["status"] == "accepted"
        redis.kill()
        reply = submit(a, "down-1", ["d@example.org"])
        assert reply["status"] == "retry" and "Redis" in reply["error"], reply
        redis.start()

        def accepted():
            return submit(b, "down-1", ["d@example.org"])["status"] == "accepted"

        assert wait_for(accepted, 15, 0.2)
        assert wait_for(lambda: len(sink.snapshot()) >= 2, 60)
        time.sleep(1)
        assert sorted(r for m in sink.snapshot() for r in m.rcpts) == [
            "d@example.org",
            "u@example.org",
        ]
