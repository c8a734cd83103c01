"""Cluster-wide throttles: the pure parts (docs/cluster.md, "Shared throttles").

The ``[providers.NAME]`` message rates of a lane (source address, provider) and the
provider's ``total_max_messages_per_second`` are GCRAs whose theoretical arrival times live
in Redis; a node asks for a *grant* of several message tokens at a time and spends them
locally (:class:`Tokens`), so a Redis round trip buys a batch of messages, never one.
Connection counts are leases in Redis sorted sets. While Redis is unreachable
(:class:`LocalShare`) each node applies the same arithmetic to its share of the limits.

Time is passed in (seconds); no I/O here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from salvo.core.shaping import Limits

__all__ = [
    "GRANT_SECONDS",
    "MAX_AHEAD",
    "MAX_GRANT",
    "ConnSpec",
    "LocalShare",
    "RateSpec",
    "Tokens",
    "conn_specs",
    "grant",
    "grant_size",
    "rate_specs",
]

GRANT_SECONDS = 0.25  # a grant covers about this long at the lane's smallest rate
MAX_GRANT = 500  # tokens per grant at most
MAX_AHEAD = 1.0  # seconds: no reservation usable later than this
TOKEN_TTL = 2.0  # seconds a granted token may wait to be spent before it is dropped


@dataclass(frozen=True, slots=True)
class RateSpec:
    """One shared GCRA: its key, the interval between cells and the burst tolerance."""

    key: bytes
    rate: float  # cells per second
    interval: float
    tolerance: float


@dataclass(frozen=True, slots=True)
class ConnSpec:
    """One shared connection count: its key and its cap."""

    key: bytes
    cap: int


def _rate(key: bytes, rate: float, period: float) -> RateSpec:
    per_second = rate / period
    # The burst of the local shaper (a tenth of the period's allowance), at least one grant.
    burst = max(1, math.floor(rate / 10), math.ceil(per_second * GRANT_SECONDS))
    interval = period / rate
    return RateSpec(key, per_second, interval, interval * (burst - 1))


def _name(text: str | None) -> bytes:
    return (text or "").encode()


def rate_specs(prefix: bytes, source: str | None, provider: str, limits: Limits) -> list[RateSpec]:
    """The shared rates of a lane: the per-source ones and the provider's total."""
    lane = prefix + b":rate:" + _name(provider) + b"\0" + _name(source)
    out = []
    if limits.max_messages_per_second > 0:
        out.append(_rate(lane + b":s", limits.max_messages_per_second, 1.0))
    if limits.max_messages_per_hour > 0:
        out.append(_rate(lane + b":h", limits.max_messages_per_hour, 3600.0))
    if limits.total_max_messages_per_second > 0:
        total = prefix + b":rate:" + _name(provider) + b":t"
        out.append(_rate(total, limits.total_max_messages_per_second, 1.0))
    return out


def conn_specs(prefix: bytes, source: str | None, provider: str, limits: Limits) -> list[ConnSpec]:
    """The shared connection counts of a lane: per source and the provider's total."""
    base = prefix + b":conn:" + _name(provider)
    out = [ConnSpec(base + b"\0" + _name(source), limits.max_connections)]
    if limits.total_max_connections > 0:
        out.append(ConnSpec(base + b":t", limits.total_max_connections))
    return out


def grant_size(specs: list[RateSpec], demand: int) -> int:
    """Tokens to ask for: about GRANT_SECONDS of the smallest rate, no more than the
    messages waiting (tokens not spent are lost to the other nodes)."""
    per_second = min(s.rate for s in specs)
    return max(1, min(MAX_GRANT, math.ceil(per_second * GRANT_SECONDS), demand))


def grant(
    tats: list[float], specs: list[RateSpec], want: int, now: float
) -> tuple[int, float, list[float]]:
    """A GCRA reservation over several keys (the Lua script does the same in Redis):
    ``want`` cells, usable once the last of them conforms on every key. Returns (cells,
    seconds until they may be spent, the new TATs); when that would be more than
    MAX_AHEAD away nothing is reserved: (0, seconds before asking again, the TATs).
    Reserving rather than refusing means one call per grant even when nodes contend."""
    delay, starts = 0.0, []
    for tat, spec in zip(tats, specs, strict=True):
        start = max(tat, now)
        starts.append(start)
        delay = max(delay, start + (want - 1) * spec.interval - spec.tolerance - now)
    if delay > MAX_AHEAD:
        return 0, delay - MAX_AHEAD, list(tats)
    new = [s + want * spec.interval for s, spec in zip(starts, specs, strict=True)]
    return want, delay, new


class Tokens:
    """Message tokens granted to a lane on this node, spent one by one."""

    __slots__ = ("expires", "left")

    def __init__(self) -> None:
        self.left = 0
        self.expires = -math.inf

    def add(self, n: int, now: float) -> None:
        self.left += n
        self.expires = now + TOKEN_TTL

    def take(self, now: float) -> bool:
        if self.left > 0 and now >= self.expires:
            self.left = 0  # stale: the shared rate has moved on without them
        if self.left > 0:
            self.left -= 1
            return True
        return False

    def give_back(self) -> None:
        self.left += 1


@dataclass(slots=True)
class LocalShare:
    """This node's share of the shared limits, used while Redis is unreachable: each rate
    and each connection cap divided by ``nodes`` (connections at least 1). Connections
    are counted here always (every connection of this node), so the count is right
    when Redis is lost."""

    nodes: int = 1
    tats: dict[bytes, float] = field(default_factory=dict)
    conns: dict[bytes, int] = field(default_factory=dict)

    def _scaled(self, spec: RateSpec) -> RateSpec:
        if self.nodes <= 1:
            return spec
        interval = spec.interval * self.nodes
        burst = max(1.0, (spec.tolerance / spec.interval + 1) / self.nodes)
        return RateSpec(spec.key, spec.rate / self.nodes, interval, interval * (burst - 1))

    def take(self, specs: list[RateSpec], want: int, now: float) -> tuple[int, float]:
        scaled = [self._scaled(s) for s in specs]
        want = grant_size(scaled, want)  # a share's grant: its rate's, not the whole one's
        tats = [self.tats.get(s.key, -math.inf) for s in specs]
        n, delay, new = grant(tats, scaled, want, now)
        for spec, tat in zip(specs, new, strict=True):
            self.tats[spec.key] = tat
        return n, delay

    def cap(self, spec: ConnSpec) -> int:
        return max(1, spec.cap // max(1, self.nodes))

    def may_open(self, specs: list[ConnSpec]) -> bool:
        return all(self.conns.get(s.key, 0) < self.cap(s) for s in specs)

    def opened(self, specs: list[ConnSpec]) -> None:
        for s in specs:
            self.conns[s.key] = self.conns.get(s.key, 0) + 1

    def closed(self, specs: list[ConnSpec]) -> None:
        for s in specs:
            left = self.conns.get(s.key, 0) - 1
            if left > 0:
                self.conns[s.key] = left
            else:
                self.conns.pop(s.key, None)
