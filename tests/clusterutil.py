"""Helpers for the cluster tests: two real nodes sharing one real Redis (salvo.testing.redis)."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from nodeutil import AioSink, NodeProcess, NodeSetup, RawProducer, job

from salvo.testing.redis import RedisServer, available

needs_redis = pytest.mark.skipif(not available(), reason="redis-server is not installed")


def cluster_extra(redis_url: str, name: str, prefix: str, more: str = "") -> str:
    return f"""
[cluster]
redis = "{redis_url}"
node_name = "{name}"
prefix = "{prefix}"
{more}
"""


@contextlib.contextmanager
def two_nodes(
    root: Path, redis: RedisServer, sink: AioSink, more: str = ""
) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    """Nodes ``a`` and ``b`` (own data dirs and ports, one Redis; a fresh key prefix per
    test), both sending example.org to ``sink``."""
    prefix = "t" + uuid.uuid4().hex[:8]
    nodes = []
    try:
        for name in ("a", "b"):
            setup = NodeSetup(
                root / name,
                {"example.org": sink.address},
                extra=cluster_extra(redis.url, name, prefix, more),
            )
            nodes.append(NodeProcess(setup).start(wait=False))
        for node in nodes:
            node.wait_ready()
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            node.close()


def submit(node: NodeProcess, job_id: str, rcpts: list[str], **extra) -> dict:
    """One job to ``node``, its reply (bounded wait)."""
    producer = RawProducer(node.setup.endpoint)
    try:
        reply = producer.request(job(job_id, rcpts, **extra), timeout=30)
    finally:
        producer.close()
    assert reply is not None, f"no reply from node {node.setup.root.name}"
    return reply


def wait_suppressed_on(node: NodeProcess, address: str, timeout: float) -> float | None:
    """Submit one-recipient jobs to ``node`` until the recipient is rejected as
    suppressed; the seconds it took, or None after ``timeout``. The probes are due in an
    hour: one accepted before the suppression arrived is not mailed during the test."""
    start = time.monotonic()
    producer = RawProducer(node.setup.endpoint)
    try:
        n = 0
        while time.monotonic() - start < timeout:
            n += 1
            probe = job(f"probe-{uuid.uuid4().hex}", [address], send_after=time.time() + 3600)
            reply = producer.request(probe, timeout=10)
            assert reply is not None
            reasons = [r["reason"] for r in reply.get("rejected", [])]
            if "suppressed" in reasons:
                return time.monotonic() - start
            time.sleep(0.02)
        return None
    finally:
        producer.close()
