"""The node's link to the cluster's Redis, shared by the cluster actors (docs/cluster.md).

redis-py's asyncio client does not run under Trio: the sync client runs in worker threads
(a bounded limiter), each call one pipeline, so the cost is one round trip per batch, never
per message. A failed call marks Redis down; while down, calls fail at once (no connection
attempt per batch) until the next probe, one every ``PROBE_EVERY`` seconds.

:func:`start_cluster` wires the actors of a node with ``[cluster] redis``: the suppression
replication (:mod:`salvo.actors.cluster_suppression`) and the cluster-wide job id claims
(:mod:`salvo.actors.cluster_claims`). Later cluster actors (shared throttles, drain) take
the same :class:`RedisLink`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from salvo.core.cluster import ClusterKeys
from salvo.core.config import Config, parse_duration

__all__ = ["RedisDown", "RedisLink", "start_cluster"]

log = logging.getLogger("salvo.cluster")

R = TypeVar("R")
PROBE_EVERY = 0.5  # seconds between connection attempts while Redis is down
THREADS = 4  # worker threads doing Redis calls at once (the blocking read has its own)


class RedisDown(Exception):
    """Redis could not be reached (or timed out); the call was not done, or not known to be."""


class RedisLink:
    """One redis-py client (a bounded connection pool) and the up/down state of Redis.

    ``call(fn, *args)`` runs ``fn(client, *args)`` in a worker thread; ``blocking`` does the
    same on a connection of its own, for a blocking read that may be abandoned on cancel.
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float,
        command_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        options: dict[str, Any] = {
            "socket_connect_timeout": connect_timeout,
            "socket_timeout": command_timeout,
            "retry": Retry(NoBackoff(), 0),  # this link decides when to try again
            "max_connections": THREADS,
        }
        self.url = url
        self.client = redis.Redis.from_url(url, **options)
        self.reader = redis.Redis.from_url(url, **{**options, "max_connections": 1})
        self._errors = (redis.ConnectionError, redis.TimeoutError, OSError)
        self._limiter = trio.CapacityLimiter(THREADS)
        self._read_limiter = trio.CapacityLimiter(1)
        self._clock = clock
        self.command_timeout = command_timeout
        self.up = False
        self.ever_up = False
        self._probe_at = 0.0
        self.round_trips = 0
        self.failures = 0
        self.went_down = 0  # times Redis was lost after being reached

    async def call(self, fn: Callable[..., R], *args: Any) -> R:
        """``fn(client, *args)`` in a worker thread; RedisDown when Redis is unreachable."""
        self._gate()
        return await self._run(fn, self.client, args, self._limiter, False)

    async def blocking(self, fn: Callable[..., R], *args: Any) -> R:
        """``fn(reader, *args)`` on the link's own reading connection; on cancel the thread
        is abandoned (its call ends by the block timeout it was given)."""
        self._gate()
        return await self._run(fn, self.reader, args, self._read_limiter, True)

    def _gate(self) -> None:
        if not self.up and self._clock() < self._probe_at:
            raise RedisDown(f"Redis at {self.url} is down; next try in under {PROBE_EVERY} s")

    async def _run(self, fn: Callable, client: Any, args: tuple, limiter: Any, abandon: bool):
        try:
            result = await trio.to_thread.run_sync(
                lambda: fn(client, *args), limiter=limiter, abandon_on_cancel=abandon
            )
        except self._errors as exc:
            self.failures += 1
            self._probe_at = self._clock() + PROBE_EVERY
            if self.up:
                self.went_down += 1
                log.warning("Redis at %s is unreachable: %s", self.url, exc)
            self.up = False
            raise RedisDown(str(exc)) from exc
        self.round_trips += 1
        if not self.up:
            log.info("Redis at %s is reachable", self.url)
        self.up = self.ever_up = True
        return result

    def close(self) -> None:
        self.client.close()
        self.reader.close()


def _collector(link: RedisLink, sync: Any, claims: Any):
    """Gauges and counters of the cluster actors for the node's registry (docs/metrics.md)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector

    class _Cluster(Collector):
        def collect(self):
            yield GaugeMetricFamily(
                "salvo_cluster_redis_up", "1 when the cluster's Redis answered last.", link.up
            )
            yield CounterMetricFamily(
                "salvo_cluster_redis_round_trips", "Redis calls made.", link.round_trips
            )
            yield CounterMetricFamily(
                "salvo_cluster_redis_failures", "Redis calls that failed.", link.failures
            )
            yield GaugeMetricFamily(
                "salvo_cluster_suppression_outbox",
                "Local suppression changes not yet published to Redis.",
                sync.outbox_waiting,
            )
            applied = CounterMetricFamily(
                "salvo_cluster_suppressions_applied",
                "Suppression changes of other nodes applied here, by source.",
                labels=["source"],
            )
            applied.add_metric(["stream"], sync.applied)
            applied.add_metric(["snapshot"], sync.snapshot_applied)
            yield applied
            yield CounterMetricFamily(
                "salvo_cluster_suppressions_published",
                "Local suppression changes published to Redis.",
                sync.published,
            )
            claimed = CounterMetricFamily(
                "salvo_cluster_claims", "Job id claims by result.", labels=["result"]
            )
            for result, n in claims.counts.items():
                claimed.add_metric([result], n)
            yield claimed

    return _Cluster()


async def start_cluster(
    nursery: trio.Nursery, config: Config, spool: Any, writer: Any, metrics: Any = None
) -> RedisLink | None:
    """Start the cluster actors when ``[cluster] redis`` is set (None otherwise: the node
    runs alone, and its data dir stops publishing suppressions)."""
    from salvo.actors.cluster_suppression import SuppressionSync, leave_cluster

    cluster = config.cluster
    if not cluster.redis:
        await writer.run_sync(leave_cluster, spool)
        return None
    from salvo.actors.cluster_claims import Claims

    link = RedisLink(
        cluster.redis,
        connect_timeout=parse_duration(cluster.connect_timeout),
        command_timeout=parse_duration(cluster.command_timeout),
    )
    keys = ClusterKeys(cluster.prefix)
    node = config.node_name
    sync = SuppressionSync(link, keys, spool, writer, node, stream_max=cluster.stream_max)
    claims = Claims(
        link,
        keys,
        node,
        ttl=int(parse_duration(cluster.claim_ttl)),
        when_down=cluster.when_down,
    )
    writer.claims = claims
    if metrics is not None:
        metrics.registry.register(_collector(link, sync, claims))
    await nursery.start(sync.run)
    nursery.start_soon(claims.run)
    log.info("cluster: node %r on Redis %s (prefix %r)", node, cluster.redis, cluster.prefix)
    return link
