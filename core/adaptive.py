"""Adaptive message rate of one (source address, provider): AIMD on what the provider
signals, as pure state with time passed in (docs/delivery.md, "Adaptive shaping").

A provider rarely publishes the rate it accepts; it says "too fast" instead. The lane's
*current* message rate follows those signals between a floor and the configured ceiling
(``max_messages_per_second``; none configured: no ceiling, the rate starts unlimited):

- **Multiplicative decrease** on a signal, at most once per :data:`HOLD` seconds: the rate
  becomes :data:`DECREASE` times the lower of the current rate and the rate the provider
  actually accepted over the last :data:`WINDOW` seconds. Basing it on what got through
  (not on what was allowed) lands near the provider's rate in one or two steps, even from
  "unlimited".
- **Additive increase** while healthy (no signal for :data:`HOLD` seconds): the rate grows
  by :data:`INCREASE` of the rate set by the last decrease per second (at least
  :data:`MIN_STEP` msg/s per second, and :data:`CEILING_STEP` of the ceiling), up to the
  ceiling. Scaling the step by that rate makes each probe above the provider's limit take
  as long at 20 msg/s as at 2,000 msg/s, so the number of throttled replies per minute
  does not grow with the rate. Without a ceiling, the rate is let go (unlimited) after
  ``release_after`` seconds without a signal.

The signals (:class:`Signals` turns observations into them): a throttle reply (a 421 but
one at a per-connection limit, the provider table's patterns: salvo.core.policy.throttles),
a refused connection while others are open, a deferral ratio (other 4xx, 4.7.x included:
one by one they are greylisting or policy) of at least :data:`DEFERRAL_RATIO` over the last
:data:`DEFERRAL_WINDOW` outcomes, and a DATA reply time whose p90 over the last
:data:`LATENCY_WINDOW` samples is at least :data:`LATENCY_FACTOR` times its baseline (the
lowest p90 of the previous windows) and at least :data:`LATENCY_MIN` seconds.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field

__all__ = [
    "CEILING_STEP",
    "DECREASE",
    "DEFERRAL_RATIO",
    "DEFERRAL_WINDOW",
    "FLOOR",
    "HOLD",
    "INCREASE",
    "LATENCY_FACTOR",
    "LATENCY_MIN",
    "LATENCY_WINDOW",
    "MIN_SPAN",
    "MIN_STEP",
    "WINDOW",
    "AdaptiveRate",
    "RateMeter",
    "Signals",
]

HOLD = 2.0  # seconds: signals closer than this decrease once (one storm, one decrease)
DECREASE = 0.8  # of the accepted rate: gentle, as repeated signals compound (0.8^5 = 0.33)
INCREASE = 0.02  # per second, of the rate set by the last decrease: back in ~10 s
MIN_STEP = 0.5  # msg/s per second: the smallest additive step (slow lanes recover too)
CEILING_STEP = 0.002  # of the ceiling per second: from the floor to any ceiling in ~8 min
FLOOR = 1.0  # msg/s: never slower (or the configured ceiling, if lower)
WINDOW = 5.0  # seconds of accepted messages the decrease is based on
MIN_SPAN = 1.0  # seconds: the shortest span a rate is measured over (a first burst is not one)
BIN = 0.25  # seconds per bin of the rate meter
DEFERRAL_RATIO = 0.25  # temporary failures among the last outcomes that mean "too fast"
DEFERRAL_WINDOW = 40  # outcomes the deferral ratio is taken over
LATENCY_WINDOW = 32  # DATA reply times per p90 sample
LATENCY_FACTOR = 3.0  # a p90 this many times its baseline is a signal...
# ...if also at least this many seconds: a provider that takes seconds to answer DATA is
# struggling; a slow but steady receiver (tenths of a second) is not, and a cut rate
# recovers only additively (docs/delivery.md).
LATENCY_MIN = 2.0
LATENCY_HISTORY = 16  # previous p90s the baseline is the lowest of


class RateMeter:
    """Messages counted in bins of :data:`BIN` seconds; :meth:`rate` over :data:`WINDOW`
    (over the time since the first message, at least :data:`MIN_SPAN`, before that)."""

    __slots__ = ("_bins", "_first", "_head")

    def __init__(self) -> None:
        self._bins = [0] * int(WINDOW / BIN)
        self._head = -1  # the bin index (time // BIN) of the latest count
        self._first = math.inf  # when the first message was counted

    def _advance(self, now: float) -> int:
        index = math.floor(now / BIN)
        if index > self._head:
            n = len(self._bins)
            for i in range(max(self._head + 1, index - n + 1), index + 1):
                self._bins[i % n] = 0
            self._head = index
        return index

    def add(self, now: float, count: int = 1) -> None:
        index = self._advance(now)
        if index >= self._head - len(self._bins) + 1:
            self._bins[index % len(self._bins)] += count
        self._first = min(self._first, now)

    def rate(self, now: float) -> float:
        """Messages per second over the last :data:`WINDOW` seconds (or since the first)."""
        self._advance(now)
        span = min(WINDOW, max(MIN_SPAN, now - self._first))
        return sum(self._bins) / span if span > 0 else 0.0


@dataclass(slots=True)
class AdaptiveRate:
    """The current message rate of one lane; see the module docstring.

    ``rate`` is ``math.inf`` while unlimited (no ceiling and no signal, or let go).
    """

    ceiling: float = math.inf  # the configured rate (msg/s); inf: none
    release_after: float = 300.0  # no ceiling: unlimited again after this long healthy
    rate: float = math.inf
    base: float = math.inf  # the rate set by the last decrease
    signalled_at: float = -math.inf
    grown_to: float = -math.inf  # the additive increase is applied up to this time
    meter: RateMeter = field(default_factory=RateMeter)

    def __post_init__(self) -> None:
        if not self.ceiling > 0:
            raise ValueError("the ceiling is a rate above 0 (math.inf: none)")
        self.rate = self.ceiling

    @property
    def floor(self) -> float:
        return min(FLOOR, self.ceiling)

    def accepted(self, now: float, count: int = 1) -> None:
        """Messages the provider accepted (the basis of the next decrease)."""
        self.meter.add(now, count)

    def decrease(self, now: float) -> bool:
        """A signal: the multiplicative decrease, once per :data:`HOLD`. True if it did."""
        if now - self.signalled_at < HOLD:
            return False
        self.tick(now)
        self.signalled_at = self.grown_to = now
        measured = self.meter.rate(now)
        basis = min(self.rate, measured) if measured > 0 else self.rate
        if math.isinf(basis):  # nothing got through yet, and no rate to scale
            return False
        self.rate = self.base = min(self.ceiling, max(self.floor, DECREASE * basis))
        return True

    def tick(self, now: float) -> None:
        """The additive increase up to ``now``; let go of the rate when due."""
        if self.rate >= self.ceiling:
            return
        healthy_from = self.signalled_at + HOLD
        if now <= healthy_from:
            return
        if math.isinf(self.ceiling) and now - self.signalled_at >= self.release_after:
            self.rate = self.base = math.inf
            return
        start = max(self.grown_to, healthy_from)
        if now > start:
            step = max(MIN_STEP, INCREASE * self.base)
            if not math.isinf(self.ceiling):
                step = max(step, CEILING_STEP * self.ceiling)
            self.rate = min(self.ceiling, self.rate + step * (now - start))
            self.grown_to = now


@dataclass(slots=True)
class Signals:
    """Turns outcomes and reply times into "too fast" signals (see the module docstring):
    :meth:`outcome` and :meth:`reply_time` return True when one is due."""

    _outcomes: collections.deque[bool] = field(
        default_factory=lambda: collections.deque(maxlen=DEFERRAL_WINDOW)
    )
    _deferred: int = 0
    _times: list[float] = field(default_factory=list)
    _p90s: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=LATENCY_HISTORY)
    )

    def outcome(self, deferred: bool) -> bool:
        """One transaction's outcome (deferred: a temporary failure). True when the ratio
        of deferrals over the window reaches :data:`DEFERRAL_RATIO`; the window starts
        over then, so one bad stretch is one signal."""
        window = self._outcomes
        if len(window) == window.maxlen and window[0]:
            self._deferred -= 1
        window.append(deferred)
        self._deferred += deferred
        if len(window) == window.maxlen and self._deferred >= DEFERRAL_RATIO * len(window):
            window.clear()
            self._deferred = 0
            return True
        return False

    def deferral_ratio(self) -> float:
        return self._deferred / len(self._outcomes) if self._outcomes else 0.0

    def reply_time(self, seconds: float) -> bool:
        """One DATA reply time. True when a window's p90 is far above the baseline."""
        self._times.append(seconds)
        if len(self._times) < LATENCY_WINDOW:
            return False
        times = sorted(self._times)
        self._times.clear()
        p90 = times[min(len(times) - 1, math.ceil(0.9 * len(times)) - 1)]
        baseline = min(self._p90s) if self._p90s else math.inf
        self._p90s.append(p90)
        return p90 >= LATENCY_MIN and p90 >= LATENCY_FACTOR * baseline

    def baseline(self) -> float | None:
        """The reply time p90 the latency signal compares with (None: not known yet)."""
        return min(self._p90s) if self._p90s else None
