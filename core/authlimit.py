"""Failed authentications, limited per client address; and a budget for logging them.

A token bucket per address: each failure takes a token, ``burst`` tokens at most,
refilled at ``burst`` per ``period`` seconds. An address with no token left is refused
before its token is even compared (429 with ``Retry-After``) until one has grown back.
Time is passed in. Memory is bounded: at most ``max_addresses`` buckets, those that are
full again are forgotten first, then the oldest.
"""

from __future__ import annotations

import math


class FailureLimiter:
    def __init__(self, *, burst: int = 10, period: float = 60.0, max_addresses: int = 10_000):
        if burst < 1 or period <= 0:
            raise ValueError("burst must be >= 1 and period > 0")
        self.burst = burst
        self.rate = burst / period  # tokens per second
        self.max_addresses = max_addresses
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def _tokens(self, address: str, now: float) -> float:
        tokens, at = self._buckets.get(address, (float(self.burst), now))
        return min(float(self.burst), tokens + max(0.0, now - at) * self.rate)

    def retry_after(self, address: str, now: float) -> int:
        """0 when ``address`` may try; else the seconds until it may (at least 1)."""
        if address not in self._buckets:
            return 0
        tokens = self._tokens(address, now)
        if tokens >= 1.0:
            return 0
        return max(1, math.ceil((1.0 - tokens) / self.rate))

    def failed(self, address: str, now: float) -> None:
        """Count one failed authentication from ``address``."""
        tokens = self._tokens(address, now)
        self._buckets.pop(address, None)  # re-inserted last: dict order is age order
        self._buckets[address] = (max(0.0, tokens - 1.0), now)
        if len(self._buckets) > self.max_addresses:
            self._forget(now)

    def _forget(self, now: float) -> None:
        for address in [a for a in self._buckets if self._tokens(a, now) >= self.burst]:
            del self._buckets[address]
        while len(self._buckets) > self.max_addresses:
            del self._buckets[next(iter(self._buckets))]

    def __len__(self) -> int:
        return len(self._buckets)


class LogBudget:
    """At most ``lines`` log lines per ``period``; says how many were held back."""

    def __init__(self, *, lines: int = 20, period: float = 60.0) -> None:
        self.lines = lines
        self.period = period
        self._start = -math.inf
        self._used = 0
        self._held = 0

    def take(self, now: float) -> tuple[bool, int]:
        """(log this line?, lines held back since the last one logged)."""
        if now - self._start >= self.period:
            self._start, self._used = now, 0
        if self._used >= self.lines:
            self._held += 1
            return False, 0
        self._used += 1
        held, self._held = self._held, 0
        return True, held
