"""Cluster-wide throttles: message rates and connection counts shared through Redis
(docs/cluster.md, "Shared throttles"); the arithmetic is salvo.core.cluster_throttle's.

Each lane (source address, provider) with shared limits gets a :class:`LaneThrottle`. A
connection opens only with a lease in every sorted set of its counts (a Lua script: drop
expired leases, check the caps, add the lease with its expiry); the node renews its leases
every third of ``lease_ttl`` (with its own heartbeat in the node set) and removes a lease
when its connection closes, so a dead node's leases expire. Messages spend tokens granted
by a Lua GCRA over every rate key of the lane, a batch's worth per call. While Redis is
down the node applies its share of each limit (:class:`LocalShare`) and goes back to Redis
when it answers again; its open connections' leases are added back at the next renewal.
Without Redis (no ``[cluster] redis``) the same local arithmetic applies the providers'
``total_*`` limits to the node alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import trio

from salvo.actors.cluster import RedisDown, RedisLink
from salvo.core.cluster_throttle import (
    MAX_AHEAD,
    ConnSpec,
    LocalShare,
    RateSpec,
    Tokens,
    conn_specs,
    grant_size,
    rate_specs,
)
from salvo.core.config import Config, parse_duration
from salvo.core.shaping import Limits

__all__ = ["LaneThrottle", "Throttles", "start_throttles"]

log = logging.getLogger("salvo.cluster")

# KEYS: the lane's TAT keys; ARGV: want, the most seconds ahead a reservation may be, then
# each key's interval and tolerance (core.cluster_throttle.grant does the same).
# Redis's clock for every node: no skew between nodes.
GRANT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local want = tonumber(ARGV[1])
local ahead = tonumber(ARGV[2])
local delay = 0
local starts = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[1 + 2 * i])
  local tol = tonumber(ARGV[2 + 2 * i])
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  starts[i] = tat
  local d = tat + (want - 1) * interval - tol - now
  if d > delay then delay = d end
end
if delay > ahead then
  return {0, tostring(delay - ahead)}
end
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[1 + 2 * i])
  local tol = tonumber(ARGV[2 + 2 * i])
  local tat = starts[i] + want * interval
  redis.call('SET', key, string.format('%.6f', tat), 'PX',
    math.ceil((tat - now + tol) * 1000) + 1000)
end
return {want, tostring(delay)}
"""

# KEYS: the lane's connection sets; ARGV: lease id, ttl in ms, then each key's cap.
LEASE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= tonumber(ARGV[2 + i]) then return 0 end
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ttl, ARGV[1])
  redis.call('PEXPIRE', key, ttl * 2)
end
return 1
"""

# KEYS: the node set, then a set per lease; ARGV: node, ttl ms, then a lease id per key.
RENEW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[i], now + ttl, ARGV[1 + i])
  redis.call('PEXPIRE', KEYS[i], ttl * 2)
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return redis.call('ZCARD', KEYS[1])
"""

RETRY_FULL = 1.0  # seconds before asking again for a lease when a cap is full (or a close here)


class Lease:
    __slots__ = ("id", "specs")

    def __init__(self, lease_id: bytes, specs: list[ConnSpec]) -> None:
        self.id = lease_id
        self.specs = specs


class LaneThrottle:
    """The shared limits of one lane on this node: its tokens and its connection leases."""

    def __init__(self, owner: Throttles, rates: list[RateSpec], conns: list[ConnSpec]) -> None:
        self.owner = owner
        self.rates = rates
        self.conns = conns
        self.tokens = Tokens()
        self._refill: trio.Event | None = None
        self._full_until = 0.0

    # -- messages -------------------------------------------------------------------------

    def take_now(self) -> bool:
        """A token if one was granted and is still fresh (always, without shared rates)."""
        return not self.rates or self.tokens.take(trio.current_time())

    def give_back(self) -> None:
        if self.rates:
            self.tokens.give_back()

    async def take(self, demand: int) -> None:
        """Wait for one token, asking for a grant of about ``demand`` when none is left
        (one request per lane at a time; the lane's other connections wait for it)."""
        while not self.take_now():
            if self._refill is not None:
                await self._refill.wait()
                continue
            self._refill = event = trio.Event()
            try:
                n, delay = await self.owner.grant(self.rates, demand)
                await trio.sleep(min(delay, MAX_AHEAD))  # reserved: usable from then on
                if n:
                    self.tokens.add(n, trio.current_time())
            finally:
                self._refill = None
                event.set()

    # -- connections ----------------------------------------------------------------------

    async def open(self) -> tuple[Lease | None, float]:
        """A lease for a new connection, or (None, seconds before asking again)."""
        now = trio.current_time()
        if now < self._full_until:  # refused lately: no call per poke of the opener
            return None, self._full_until - now
        lease, wait = await self.owner.lease(self.conns)
        if lease is None:
            self._full_until = trio.current_time() + wait
        return lease, wait

    def close(self, lease: Lease) -> None:
        self._full_until = 0.0  # room here: the next opener asks at once
        self.owner.release(lease)


class Throttles:
    """Every lane's shared limits on this node, and the Redis calls they make."""

    def __init__(
        self,
        link: RedisLink | None,
        prefix: str,
        node: str,
        *,
        lease_ttl: float = 15.0,
        expected_nodes: int = 1,
    ) -> None:
        self.link = link
        self.prefix = prefix.encode()
        self.node = node
        self.lease_ttl = lease_ttl
        self.share = LocalShare(nodes=expected_nodes)
        self.nodes_key = self.prefix + b":nodes"
        self.leases: dict[bytes, Lease] = {}
        self.live_nodes = 0  # from the last heartbeat; 0: never known
        self._seq = 0
        self._tag = f"{node}:{os.getpid()}:".encode()
        self.nursery: trio.Nursery | None = None
        self.counts = {"grants": 0, "granted": 0, "local_grants": 0, "leases": 0, "full": 0}
        self._grant = self._lease = self._renew = None
        if link is not None:
            self._grant = link.client.register_script(GRANT_LUA)
            self._lease = link.client.register_script(LEASE_LUA)
            self._renew = link.client.register_script(RENEW_LUA)

    def lane(self, source: str | None, provider: str, limits: Limits) -> LaneThrottle | None:
        """The lane's throttle; None when nothing is shared (alone, no ``total_*`` limit)."""
        rates = rate_specs(self.prefix, source, provider, limits)
        conns = conn_specs(self.prefix, source, provider, limits)
        if self.link is None:
            # Alone, the node's shaper already holds the per-source limits.
            rates = [r for r in rates if r.key.endswith(b":t")]
            conns = [c for c in conns if c.key.endswith(b":t")]
            if not rates and not conns:
                return None
        return LaneThrottle(self, rates, conns)

    async def grant(self, specs: list[RateSpec], demand: int) -> tuple[int, float]:
        want = grant_size(specs, demand)
        if self.link is not None:
            args: list[Any] = [want, MAX_AHEAD]
            for spec in specs:
                args += [repr(spec.interval), repr(spec.tolerance)]
            keys = [s.key for s in specs]
            try:
                n, wait = await self.link.call(lambda c: self._grant(keys, args, client=c))
            except RedisDown:
                pass
            else:
                self.counts["grants"] += 1
                self.counts["granted"] += int(n)
                return int(n), float(wait)
        self.counts["local_grants"] += 1
        return self.share.take(specs, want, trio.current_time())

    async def lease(self, specs: list[ConnSpec]) -> tuple[Lease | None, float]:
        self._seq += 1
        lease = Lease(self._tag + str(self._seq).encode(), specs)
        if specs and self.link is not None:
            ttl = int(self.lease_ttl * 1000)
            args = [lease.id, ttl, *(s.cap for s in specs)]
            keys = [s.key for s in specs]
            try:
                ok = await self.link.call(lambda c: self._lease(keys, args, client=c))
            except RedisDown:
                ok = None
            if ok is not None:
                self.counts["leases"] += 1
                if not ok:
                    self.counts["full"] += 1
                    return None, RETRY_FULL
                self.share.opened(specs)
                self.leases[lease.id] = lease
                return lease, 0.0
        if not self.share.may_open(specs):
            self.counts["full"] += 1
            return None, RETRY_FULL
        self.share.opened(specs)
        self.leases[lease.id] = lease  # registered in Redis by the next renewal
        return lease, 0.0

    def release(self, lease: Lease) -> None:
        if self.leases.pop(lease.id, None) is None:
            return
        self.share.closed(lease.specs)
        if self.link is not None and lease.specs and self.nursery is not None:
            self.nursery.start_soon(self._remove, lease)

    async def _remove(self, lease: Lease) -> None:
        def remove(client):
            pipe = client.pipeline(transaction=False)
            for spec in lease.specs:
                pipe.zrem(spec.key, lease.id)
            pipe.execute()

        with contextlib.suppress(RedisDown):  # else it expires
            await self.link.call(remove)

    async def run(self, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Renew this node's leases and heartbeat every third of ``lease_ttl``."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            task_status.started()
            if self.link is None:
                await trio.sleep_forever()
            while True:
                await self.renew()
                await trio.sleep(self.lease_ttl / 3)

    async def renew(self) -> None:
        keys = [self.nodes_key]
        args: list[Any] = [self.node.encode(), int(self.lease_ttl * 1000)]
        for lease in list(self.leases.values()):
            for spec in lease.specs:
                keys.append(spec.key)
                args.append(lease.id)
        try:
            live = await self.link.call(lambda c: self._renew(keys, args, client=c))
        except RedisDown:
            return
        self.live_nodes = int(live)
        # The share while Redis is down: the nodes seen alive last (documented choice).
        self.share.nodes = max(1, self.live_nodes)


def _collector(throttles: Throttles):
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector

    class _Throttles(Collector):
        def collect(self):
            calls = CounterMetricFamily(
                "salvo_cluster_throttle_calls",
                "Throttle requests by kind: Redis token grants, local grants while Redis "
                "is down, connection lease requests, requests refused as full.",
                labels=["kind"],
            )
            c = throttles.counts
            for kind in ("grants", "local_grants", "leases", "full"):
                calls.add_metric([kind], c[kind])
            yield calls
            yield CounterMetricFamily(
                "salvo_cluster_throttle_tokens", "Message tokens granted by Redis.", c["granted"]
            )
            yield GaugeMetricFamily(
                "salvo_cluster_live_nodes",
                "Nodes alive at the last heartbeat (the share while Redis is down).",
                throttles.live_nodes,
            )

    return _Throttles()


async def start_throttles(
    nursery: trio.Nursery, config: Config, delivery: Any, link: RedisLink | None, metrics: Any
) -> Throttles | None:
    """Start the shared throttles of a cluster node, or of a lone node whose providers
    have ``total_*`` limits; None when neither."""
    if link is None and not any(
        p.total_max_messages_per_second or p.total_max_connections
        for p in config.providers.values()
    ):
        return None
    cluster = config.cluster
    throttles = Throttles(
        link,
        cluster.prefix,
        config.node_name,
        lease_ttl=parse_duration(cluster.lease_ttl),
        expected_nodes=cluster.expected_nodes,
    )
    await nursery.start(throttles.run)
    delivery.throttles = throttles
    if metrics is not None:
        metrics.registry.register(_collector(throttles))
    return throttles
