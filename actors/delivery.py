"""Delivery: per-(source, provider) queues of signed messages and the SMTP connections
that drain them, within each provider's limits (docs/delivery.md).

A *lane* is one source address towards one provider (salvo.core.providers: every domain
hosted by Google is one provider). Its :class:`~salvo.core.shaping.Shaper` holds the
limits: concurrency, new connections per minute, messages per second and per hour
(GCRA), adaptive backoff on throttle replies, and a pause after failed connection
attempts. A *route* (salvo.actors.route) is the queue of one lane for one pool's
settings (EHLO name, TLS), with its own opener and connection tasks. What each outcome
and each failed connection means is salvo.core.policy's.

Providers never wait for each other: each route has its own tasks; the only shared limit
is the node-wide connection cap, and a waiting route holds none of it. Deferrals for a
paused lane carry a retry hint (:attr:`Result.retry_at`, the pause's end on
:attr:`Delivery.clock`), and :meth:`Delivery.paused_for` lets the scheduler keep a paused
provider's mail unsigned in the spool. Every message ends in exactly one :class:`Result`,
sent on the results channel.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import trio

from salvo.actors.route import BATCH, Route
from salvo.actors.smtp_session import TLSPolicy
from salvo.core.policy import SourcePicker, throttles
from salvo.core.providers import ProviderTable, route_key
from salvo.core.shaping import CONNECTION_LIMIT, Limits, Shaper
from salvo.core.smtp import Outcome, Scope, SMTPTimeouts
from salvo.core.spool import Outcome as SpoolOutcome
from salvo.core.warmup import Caps, hold_delay

__all__ = ["BATCH", "Delivery", "Lane", "Message", "Result", "RouteSettings"]

log = logging.getLogger("salvo.delivery")


@dataclass(slots=True)
class Message:
    """One signed message for one recipient, and what the scheduler needs back."""

    seq: int
    idx: int
    rcpt: str
    mail_from: str
    data: bytes
    # MX routing: every (host name, address, port) to try, in order (salvo.core.mx's
    # MXPlan.destinations(); a static route is one entry). The scheduler queues the message
    # on the first; moving on to the next after a soft failure is the delivery engine's.
    hosts: list[tuple[str, str, int]] = field(default_factory=list)
    tried: int = 0  # hosts of ``hosts`` that failed softly for this message
    refused: int = 0  # connections in a row that reached no host while others worked


@dataclass(slots=True)
class Result:
    """What happened to a :class:`Message`."""

    message: Message
    outcome: Outcome
    host: str
    source: str
    # Deferred because the lane is paused: not due before this (Delivery.clock, seconds).
    retry_at: float | None = None
    # Handed back untried: an operator's or an alert's pause landed while it waited, or
    # every source of its pool is at its warm-up cap for the provider today. The spool
    # outcome to record as it is (queued, no attempt counted, no event).
    held: SpoolOutcome | None = None


@dataclass(frozen=True)
class RouteSettings:
    """How the connections of a route behave. The limits apply when the delivery has no
    provider table (benchmarks); with one, the provider's limits apply."""

    ehlo: str
    max_connections: int = 32
    max_messages_per_connection: int = 1000
    idle_timeout: float = 5.0
    tls: TLSPolicy = "opportunistic"
    timeouts: SMTPTimeouts = field(default_factory=SMTPTimeouts)
    auth: tuple[str, str] | None = None  # SMTP AUTH (username, password), over TLS only


class Lane:
    """One (source address, provider): its shaper, throttle signatures and routes."""

    def __init__(
        self, source: str | None, provider: str, shaper: Shaper, signatures, throttle=None
    ) -> None:
        self.source = source
        self.provider = provider
        self.shaper = shaper
        self.signatures = signatures
        # Limits shared with other lanes and nodes (salvo.actors.cluster_throttle), or None.
        self.throttle = throttle
        self.routes: list[Route] = []

    def poke(self) -> None:
        for route in self.routes:
            route.poke()

    def feedback(self, outcome: Outcome | None, reply_code: int | None, text: str) -> None:
        """A temporary reply (``outcome`` None: at connection level): a throttle signal
        (core.policy.throttles) lowers the lane's limits; a transaction's deferral counts
        towards the deferral ratio, which may. A 421 at the server's per-connection limit
        (the rest of its batch gets it too) is neither: it asks for a new connection."""
        shaper = self.shaper
        now = trio.current_time()
        if throttles(outcome, reply_code, text, self.signatures):
            self._slower(shaper.throttled(now), f"throttled ({text[:120]})")
        elif outcome is not None and not (reply_code == 421 and CONNECTION_LIMIT.search(text)):
            self._slower(shaper.deferred(now), "deferral ratio")

    def reply_time(self, seconds: float) -> None:
        """A DATA reply time (the first transaction of a pipelined batch)."""
        if self.shaper.reply_time(trio.current_time(), seconds):
            self._slower(True, f"reply time p90 up ({seconds:.2f} s)")

    def _slower(self, slower: bool, why: str) -> None:
        if slower:
            shaper = self.shaper
            rate = shaper.message_rate
            log.info(
                "%s from %s: %s; now %d connections, %s msg/s",
                self.provider,
                self.source or "default source",
                why,
                shaper.max_connections,
                "unlimited" if math.isinf(rate) else f"{rate:.1f}",
            )


class Delivery:
    """All lanes and routes; run :meth:`run` in a nursery, then :meth:`send` messages.

    ``providers`` (the provider table) gives each provider's limits and throttle
    signatures; without it, a route's :class:`RouteSettings` limits apply.
    ``max_connections`` caps connections across all providers (0: no cap). ``clock`` is
    the node's wall clock (the scheduler's): retry hints are given on it, while shaping
    runs on Trio's clock.
    """

    def __init__(
        self,
        results: trio.MemorySendChannel[Result],
        *,
        providers: ProviderTable | None = None,
        max_connections: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._results = results
        self.providers = providers
        self.max_connections = max_connections or math.inf
        self.clock = clock
        self.rng = random.Random()  # spread of the retry hints after a pause
        self._lanes: dict[tuple[str | None, str], Lane] = {}
        self._provider_lanes: dict[str, list[Lane]] = {}
        self._routes: dict[tuple[str | None, str, RouteSettings], Route] = {}
        self.paused_sources: frozenset[str] = frozenset()  # set by salvo.actors.control
        # While any pause is in effect (set by salvo.actors.control): (message, provider)
        # -> the hand-back of a queued message that must not go out, or None. Asked when a
        # connection takes a message, so a pause stops what already waits in a route.
        self.hold: Callable[[Message, str], SpoolOutcome | None] | None = None
        self.warmup: Caps | None = None  # daily caps of warming sources, set by the scheduler
        self.throttles = None  # shared limits (salvo.actors.cluster_throttle), set by the node
        self._sources: dict[tuple[tuple[str, ...], tuple[int, ...]], SourcePicker] = {}
        self.starved: set[Route] = set()
        self.nursery: trio.Nursery
        self.in_flight = 0
        self.connections = 0  # open (or opening) across every lane
        self.peak_connections = 0  # the most at once so far

    def configure(
        self,
        providers: ProviderTable | None,
        max_connections: int = 0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """Set the provider table, the node-wide connection cap and the wall clock (before
        sending)."""
        self.providers = providers
        self.max_connections = max_connections or math.inf
        if clock is not None:
            self.clock = clock

    async def run(self, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Host the connection tasks; returns when cancelled."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def poke_starved(self) -> None:
        for route in self.starved:
            route.poke()

    def lane(self, source: str | None, provider: str, settings: RouteSettings) -> Lane:
        """The lane of (source, provider), made on first use."""
        lane = self._lanes.get((source, provider))
        if lane is None:
            if self.providers is None:
                limits = Limits(
                    max_connections=settings.max_connections,
                    max_messages_per_connection=settings.max_messages_per_connection,
                    idle_timeout=settings.idle_timeout,
                )
                signatures = ()
            else:
                spec = self.providers.get(provider)
                limits, signatures = spec.limits, spec.throttle
            throttle = None
            if self.throttles is not None:
                throttle = self.throttles.lane(source, provider, limits)
            lane = self._lanes[(source, provider)] = Lane(
                source, provider, Shaper(limits), signatures, throttle
            )
            self._provider_lanes.setdefault(provider, []).append(lane)
        return lane

    def paused_for(self, provider: str) -> float:
        """Seconds until ``provider`` may be sent to again: the shortest pause of its lanes
        after failed connection attempts; 0 if any lane is not paused, or it has none."""
        lanes = self._provider_lanes.get(provider)
        if not lanes:
            return 0.0
        now = trio.current_time()
        return min(lane.shaper.pause_left(now) for lane in lanes)

    def message_rate(self, provider: str) -> float:
        """The messages per second ``provider``'s lanes allow now together (``math.inf``:
        no limit, or no lane yet)."""
        lanes = self._provider_lanes.get(provider)
        if not lanes:
            return math.inf
        return sum(lane.shaper.message_rate for lane in lanes)

    def pick_source(
        self,
        sources: list[str],
        weights: list[int] | None = None,
        full: frozenset[str] = frozenset(),
    ) -> str | None:
        """The next source address of a pool (weighted round robin); None: the system's.
        Sources in ``full`` (at their warm-up cap) never take a turn."""
        if not sources:
            return None
        key = (tuple(sources), tuple(weights or ()))
        picker = self._sources.get(key)
        if picker is None:
            picker = self._sources[key] = SourcePicker(sources, weights)
        # A source the operator paused sits out; should every one be paused (a message
        # signed before the pause), it goes out rather than being lost.
        if full:
            return picker.next(self.paused_sources | full) or picker.next(full)
        return picker.next(self.paused_sources) or picker.next()

    def _hold(self, message: Message, sources: list[str], provider: str, now: float) -> None:
        """Every source of the pool is at its warm-up cap for ``provider``: the message goes
        back to the queue until the next day (never dropped, no attempt counted)."""
        assert self.warmup is not None
        reopens = self.warmup.reopens(sources, provider, now)
        text = f"{provider}: every source is at its warm-up cap for today"
        outcome = Outcome.deferred(message.rcpt, Scope.SITE, text)
        retry_at = now + hold_delay(now, reopens, self.rng)
        held = SpoolOutcome(
            seq=message.seq, idx=message.idx, state="queued", text=text, next_attempt=retry_at
        )
        self._results.send_nowait(Result(message, outcome, "", "", retry_at, held))

    def send(
        self,
        message: Message,
        host: str,
        port: int,
        sources: list[str],
        settings: RouteSettings,
        *,
        provider: str | None = None,
        weights: list[int] | None = None,
    ) -> None:
        """Queue a message for ``provider`` (default: the route to host:port as its own
        provider) from one of ``sources``. ``message.hosts`` (default: host:port) are the
        hosts its connection may go to, in order."""
        if not message.hosts:
            message.hosts = [(host, host, port)]
        provider = provider or route_key(host, port)
        caps = self.warmup
        if caps:
            now = self.clock()
            full = caps.full(sources, provider, now)
            if full and full.issuperset(sources):
                self._hold(message, sources, provider, now)
                return
            source = self.pick_source(sources, weights, full)
            if source is not None:
                caps.take(source, provider, now)
        else:
            source = self.pick_source(sources, weights)
        if self.providers is not None:  # the provider's TLS policy (docs/smtp.md)
            tls = self.providers.get(provider).tls
            if tls != settings.tls:
                settings = replace(settings, tls=tls)
        route = self._routes.get((source, provider, settings))
        if route is None:
            lane = self.lane(source, provider, settings)
            route = self._routes[(source, provider, settings)] = Route(lane, settings, self)
        self.in_flight += 1
        route.put(message)

    def statistics(self) -> dict[str, dict]:
        """Per lane: connections, queued messages and the current limits."""
        out = {}
        for (source, provider), lane in self._lanes.items():
            shaper = lane.shaper
            out[f"{source or '-'} {provider}"] = {
                "connections": shaper.active,
                "queued": sum(len(r.queue) for r in lane.routes),
                "max_connections": shaper.max_connections,
                "factor": shaper.factor,
                "paused_for": shaper.pause_left(trio.current_time()),
                **shaper.rates(),
            }
        return out

    def hand_back(self, message: Message, held: SpoolOutcome) -> None:
        """Report a message that a pause holds back: recorded as ``held`` says, unsent."""
        outcome = Outcome.deferred(message.rcpt, Scope.MESSAGE, "held back by a pause")
        self.in_flight -= 1
        self._results.send_nowait(Result(message, outcome, "", "", None, held))

    def report(
        self,
        message: Message,
        outcome: Outcome,
        host: str,
        source: str,
        retry_at: float | None = None,
    ) -> None:
        """Hand a message's result to the scheduler (the channel is unbounded in practice)."""
        self.in_flight -= 1
        self._results.send_nowait(Result(message, outcome, host, source, retry_at))
