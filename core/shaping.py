"""Traffic shaping: the limits of one (source address, provider), as pure state machines.

A provider sees our source address, not our queues: each (source, provider) pair gets a
:class:`Shaper` that decides when a connection may open and when a message may go.

- **Concurrency**: at most ``max_connections`` connections (times the backoff factor,
  never below 1). A connection above the current limit finishes its message and closes.
- **Rates** by GCRA (the generic cell rate algorithm, as in ATM networks and KumoMTA's
  throttles): ``max_new_connections_per_minute``, ``max_messages_per_second`` and
  ``max_messages_per_hour``. A GCRA keeps one number, the theoretical arrival time (TAT)
  of the next cell; a cell conforms when it comes no earlier than ``TAT - tolerance``.
  The burst is a tenth of the period's allowance (at least 1): at most
  ``burst + t / interval`` cells in any ``t`` seconds. A cell that does not conform is
  told how long to wait: shaping waits, it never drops.
- **Adaptive concurrency** (Postfix's concurrency feedback, SCHEDULER_README, in its
  simplest form: multiplicative decrease, additive increase): a "too fast" signal halves
  the factor that scales concurrency and the connection and hourly rates, at most once per
  :data:`HOLD` seconds; after ``backoff_time`` without a new signal the factor grows by
  :data:`RECOVERY_STEP` every ``recovery_interval`` until it is back to 1.
- **Adaptive message rate** (salvo.core.adaptive): the same signals lower the messages per
  second to a little below what the provider accepted, and health raises it again,
  between a floor and ``max_messages_per_second`` (none configured: no ceiling).
- **Signals**: a throttle reply (any 421, or a reply matching the provider's throttling
  signature), a refused connection while others are open, a high deferral ratio, and a
  rising DATA reply time (:class:`~salvo.core.adaptive.Signals`).
- **Dead destination** (Postfix declares one when its concurrency falls to zero): a
  connection attempt that reached no host while no other connection is open pauses new
  connections for ``connect_backoff``, doubling with each consecutive failure up to
  ``max_connect_backoff``; the first successful connection ends the pause. A failed
  attempt while other connections are open is a refusal, not a dead destination: no pause.

Time is passed in (``now``, seconds on any monotonic clock): no I/O, no clock reads.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from .adaptive import HOLD, AdaptiveRate, Signals

__all__ = [
    "CONNECTION_LIMIT",
    "GCRA",
    "HOLD",
    "MIN_FACTOR",
    "RECOVERY_STEP",
    "Limits",
    "Shaper",
    "is_throttle",
]

MIN_FACTOR = 1 / 64  # the factor never goes below this (rates stay > 0)
RECOVERY_STEP = 0.1  # additive increase per recovery interval, of the configured limits


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits of one (source address, provider); 0 means no limit for a rate."""

    max_connections: int = 32
    max_messages_per_connection: int = 1000
    max_new_connections_per_minute: float = 0.0
    max_messages_per_second: float = 0.0
    max_messages_per_hour: float = 0.0
    idle_timeout: float = 5.0
    backoff_time: float = 300.0  # a throttle signal's halving holds this long
    recovery_interval: float = 60.0  # then +RECOVERY_STEP of the limits per interval
    connect_backoff: float = 10.0  # the first pause after a failed connection attempt
    max_connect_backoff: float = 600.0
    # Over all sources (and, in a cluster, all nodes) of the provider; 0: no cap. The
    # Shaper ignores them: salvo.core.cluster_throttle applies them.
    total_max_messages_per_second: float = 0.0
    total_max_connections: int = 0


class GCRA:
    """A generic cell rate algorithm throttle: ``rate`` cells per ``period`` seconds.

    :meth:`wait` says how long until a cell conforms (0: now); :meth:`take` takes a cell
    if it conforms and returns 0, else returns the wait and changes nothing. The rate can
    be scaled (:meth:`set_rate`) without losing the throttle's history.
    """

    __slots__ = ("burst", "interval", "tat", "tolerance")

    def __init__(self, rate: float, period: float, burst: int | None = None) -> None:
        if rate <= 0 or period <= 0:
            raise ValueError("a GCRA needs a rate and a period above 0")
        self.burst = burst if burst is not None else max(1, math.floor(rate / 10))
        self.tat = -math.inf
        self.interval = period / rate
        self.tolerance = self.interval * (self.burst - 1)

    def set_rate(self, rate: float, period: float) -> None:
        """A new rate (same burst): the next cells are spaced by the new interval."""
        self.interval = period / rate
        self.tolerance = self.interval * (self.burst - 1)

    def wait(self, now: float) -> float:
        """Seconds until a cell conforms; 0 when it does now."""
        return max(0.0, self.tat - self.tolerance - now)

    def take(self, now: float) -> float:
        """Take a cell if it conforms now (returns 0), else return the wait."""
        delay = self.wait(now)
        if delay <= 0:
            self.tat = max(self.tat, now) + self.interval
        return delay


# A 421 that ends a connection at its message limit asks for a new connection, not for a
# slower pace: no signal (else a provider closing every 100th message would look like one
# throttling all the time).
CONNECTION_LIMIT = re.compile(
    r"\b(messages|mails?|recipients|transactions)\b.{0,20}\b(on|per|for|in) "
    r"(this |a |the |one )?(connection|session)\b",
    re.IGNORECASE,
)


def is_throttle(code: int | None, text: str, signatures: tuple[re.Pattern[str], ...]) -> bool:
    """A provider asking us to slow down: a reply matching its signatures, or a 421 (but
    not one at a per-connection message limit: :data:`CONNECTION_LIMIT`)."""
    if any(pattern.search(text) for pattern in signatures):
        return True
    return code == 421 and not CONNECTION_LIMIT.search(text)


@dataclass(slots=True)
class Shaper:
    """The shaping state of one (source address, provider); see the module docstring.

    Connections: :meth:`open_wait` (may one open now?), :meth:`opened` (it is counted),
    :meth:`closed`, :meth:`over_limit` (above the current limit: close after this
    message). Messages: :meth:`take_message`. Feedback: :meth:`throttled`,
    :meth:`connect_failed`, :meth:`connect_succeeded`; :meth:`tick` applies recovery.
    """

    limits: Limits
    active: int = 0
    factor: float = 1.0
    throttled_at: float = -math.inf
    recover_from: float = math.inf  # when the next recovery step is due
    failures: int = 0  # consecutive connection attempts that reached no host
    paused_until: float = -math.inf
    adaptive: AdaptiveRate = field(init=False)
    signals: Signals = field(default_factory=Signals)
    _connect_rate: GCRA | None = field(default=None, repr=False)
    _per_second: GCRA | None = field(default=None, repr=False)
    _per_hour: GCRA | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        lim = self.limits
        if lim.max_new_connections_per_minute > 0:
            self._connect_rate = GCRA(lim.max_new_connections_per_minute, 60.0)
        self.adaptive = AdaptiveRate(
            lim.max_messages_per_second or math.inf, release_after=lim.backoff_time
        )
        self._sync_rate()
        if lim.max_messages_per_hour > 0:
            self._per_hour = GCRA(lim.max_messages_per_hour, 3600.0)

    # -- the current limits ---------------------------------------------------------------

    @property
    def max_connections(self) -> int:
        """The concurrency allowed now: the configured one times the factor, at least 1."""
        return max(1, math.floor(self.limits.max_connections * self.factor))

    @property
    def message_rate(self) -> float:
        """The messages per second allowed now (``math.inf``: no limit)."""
        return self.adaptive.rate

    def rates(self) -> dict[str, float]:
        """The rates allowed now (0: no limit), for statistics and logs."""
        lim, f = self.limits, self.factor
        rate = self.adaptive.rate
        return {
            "new_connections_per_minute": lim.max_new_connections_per_minute * f,
            "messages_per_second": 0.0 if math.isinf(rate) else rate,
            "messages_per_hour": lim.max_messages_per_hour * f,
        }

    def _sync_rate(self) -> None:
        """The per-second GCRA follows the adaptive rate (none while it is unlimited)."""
        rate = self.adaptive.rate
        if math.isinf(rate):
            self._per_second = None
        elif self._per_second is None:
            self._per_second = GCRA(rate, 1.0)
        elif self._per_second.interval != 1.0 / rate:
            # The burst follows too (a tenth of a second's messages): a burst sized for
            # the ceiling would undo a decrease at every pause.
            self._per_second.burst = max(1, math.floor(rate / 10))
            self._per_second.set_rate(rate, 1.0)

    def _set_factor(self, factor: float) -> None:
        self.factor = min(1.0, max(MIN_FACTOR, factor))
        lim = self.limits
        for gcra, rate, period in (
            (self._connect_rate, lim.max_new_connections_per_minute, 60.0),
            (self._per_hour, lim.max_messages_per_hour, 3600.0),
        ):
            if gcra is not None:
                gcra.set_rate(rate * self.factor, period)

    # -- connections ----------------------------------------------------------------------

    def open_wait(self, now: float) -> float:
        """0 when a new connection may open now; else seconds until it may be worth asking
        again (``math.inf``: only when a connection closes)."""
        self.tick(now)
        if self.active >= self.max_connections:
            return math.inf
        wait = max(0.0, self.paused_until - now)
        if self._connect_rate is not None:
            wait = max(wait, self._connect_rate.wait(now))
        return wait

    def opened(self, now: float) -> bool:
        """Count a new connection if :meth:`open_wait` allows one now; True if counted."""
        if self.open_wait(now) > 0:
            return False
        if self._connect_rate is not None:
            self._connect_rate.take(now)
        self.active += 1
        return True

    def closed(self) -> None:
        self.active = max(0, self.active - 1)

    def over_limit(self, now: float) -> bool:
        """More connections than allowed now (after a backoff): this one should close."""
        self.tick(now)
        return self.active > self.max_connections

    def pause_left(self, now: float) -> float:
        """Seconds left of the pause after failed connection attempts (0: none)."""
        return max(0.0, self.paused_until - now)

    # -- messages -------------------------------------------------------------------------

    def take_message(self, now: float) -> float:
        """Take a message slot from the rates (returns 0) or say how long to wait."""
        self.tick(now)
        wait = 0.0
        for gcra in (self._per_second, self._per_hour):
            if gcra is not None:
                wait = max(wait, gcra.wait(now))
        if wait > 0:
            return wait
        for gcra in (self._per_second, self._per_hour):
            if gcra is not None:
                gcra.take(now)
        return 0.0

    # -- feedback -------------------------------------------------------------------------

    def throttled(self, now: float) -> bool:
        """A "too fast" signal: halve concurrency (once per HOLD seconds; the halving holds
        for ``backoff_time``, then recovery begins) and decrease the message rate (once per
        HOLD). True if either went down."""
        self.tick(now)
        self.recover_from = now + self.limits.backoff_time
        slower = self.adaptive.decrease(now)
        if slower:
            self._sync_rate()
        if now - self.throttled_at < HOLD:
            return slower
        self.throttled_at = now
        self._set_factor(self.factor / 2)
        return True

    def answered(self, now: float, delivered: int, failed: int = 0) -> None:
        """Transactions answered: ``delivered`` accepted, ``failed`` refused for good (a
        5xx: the provider took the message's turn, not a sign of speed)."""
        self.adaptive.meter.add(now, delivered)
        outcome = self.signals.outcome
        for _ in range(delivered + failed):
            outcome(False)

    def deferred(self, now: float) -> bool:
        """A temporary failure; a signal when the deferral ratio gets high. True if the
        limits went down."""
        return self.signals.outcome(True) and self.throttled(now)

    def reply_time(self, now: float, seconds: float) -> bool:
        """A DATA reply time; a signal when its p90 rises far above its baseline. True if
        the limits went down."""
        return self.signals.reply_time(seconds) and self.throttled(now)

    def tick(self, now: float) -> None:
        """Additive increase of the message rate (salvo.core.adaptive) and of the factor:
        each ``recovery_interval`` after the backoff time, it grows by RECOVERY_STEP, up
        to 1."""
        adaptive = self.adaptive
        if adaptive.rate < adaptive.ceiling:
            adaptive.tick(now)
            self._sync_rate()
        if self.factor >= 1.0 or now < self.recover_from:
            return
        interval = max(self.limits.recovery_interval, 1e-3)
        steps = 1 + math.floor((now - self.recover_from) / interval)
        self.recover_from += steps * interval
        self._set_factor(self.factor + steps * RECOVERY_STEP)
        if self.factor >= 1.0:
            self.recover_from = math.inf

    def connect_failed(self, now: float) -> float:
        """A connection attempt reached no host. Returns the pause in seconds it started.

        While other connections are open (``active`` counts the failed one too) the
        destination works and this attempt was refused: a "too fast" signal, no pause, 0.
        Else the destination is dead: pause new connections, doubling with each
        consecutive dead attempt up to ``max_connect_backoff``.
        """
        if self.active > 1:
            self.throttled(now)
            return 0.0
        self.failures += 1
        lim = self.limits
        pause = min(
            lim.max_connect_backoff, lim.connect_backoff * 2.0 ** min(self.failures - 1, 30)
        )
        self.paused_until = max(self.paused_until, now + pause)
        return pause

    def connect_succeeded(self) -> None:
        """A connection got through: the destination is alive, no pause."""
        self.failures = 0
        self.paused_until = -math.inf
