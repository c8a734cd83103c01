"""Delivery: per-(source, provider) queues of signed messages and the SMTP connections
that drain them, within each provider's limits (docs/delivery.md).

A *lane* is one source address towards one provider (salvo.core.providers: every domain
hosted by Google is one provider). Its :class:`~salvo.core.shaping.Shaper` holds the
limits: concurrency, new connections per minute, messages per second and per hour
(GCRA), adaptive backoff on throttle replies, and a pause after failed connection
attempts. A *route* is the queue of one lane for one pool's settings (EHLO name, TLS).

Each route has a queue, its own connection tasks and one opener task that starts a
connection when messages wait, no idle connection can take them, and the lane's shaper
and the node-wide connection cap allow one; else it waits for a connection to close or
for the rate to allow one. A connection goes to the next host of its first message
(MX order), carries up to ``max_messages_per_connection`` messages (one transaction
each, up to ``BATCH`` pipelined in one exchange: docs/smtp.md "Batches"), waits for the
message rate before each, and closes after ``idle_timeout`` without work or when a
backoff lowered the lane's concurrency below its count.

- A soft failure of one host (``Outcome.try_next_host``: site or stream scope) sends the
  message to its next host; with no host left it is deferred.
- A 421, or a reply matching the provider's throttling signature, halves the lane's
  concurrency and rates (they recover step by step). When a 421 ends a session that had
  delivered (a server's per-connection limit), the messages it had not completed go back
  to the front of the queue: nothing of them was delivered. A 421 before anything was
  delivered defers them ("later").
- A connection attempt that reached none of its hosts while the lane has other open
  connections was refused, not a dead destination: its message goes back to the front of
  the queue (it was not tried), deferred only after :data:`MAX_REFUSED` such refusals in a
  row. With no other connection open the destination is dead (Postfix: concurrency fell
  to zero): every message queued on the route is deferred at once and the lane's new
  connections pause (doubling, capped); messages that arrive while it is paused are
  deferred without a connection. So a provider that refuses everything holds no
  connections. Deferrals for a paused lane carry a retry hint (:attr:`Result.retry_at`,
  the pause's end on :attr:`Delivery.clock`), and :meth:`Delivery.paused_for` lets the
  scheduler keep a paused provider's mail unsigned in the spool.
- Providers never wait for each other: each route has its own tasks; the only shared
  limit is the node-wide connection cap, and a waiting route holds none of it.

Every message ends in exactly one :class:`Result`, sent on the results channel.
"""

from __future__ import annotations

import collections
import logging
import math
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import trio

from salvo.actors.smtp_session import SMTPSession, SMTPSessionError, SMTPTimeouts, TLSPolicy
from salvo.core.providers import ProviderTable, route_key
from salvo.core.retry import after_pause
from salvo.core.shaping import Limits, Shaper, is_throttle
from salvo.core.smtp import Outcome, Scope

log = logging.getLogger("salvo.delivery")

MAX_OPENER_WAIT = 1.0  # seconds: an opener re-checks at least this often
BATCH = 32  # messages per pipelined send_many on one connection
MAX_REFUSED = 3  # refused connections in a row after which a message is deferred


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

    def __init__(self, source: str | None, provider: str, shaper: Shaper, signatures) -> None:
        self.source = source
        self.provider = provider
        self.shaper = shaper
        self.signatures = signatures
        self.routes: list[Route] = []

    def poke(self) -> None:
        for route in self.routes:
            route.poke()

    def feedback(self, outcome: Outcome | None, reply_code: int | None, text: str) -> None:
        """Halve the lane's limits on a throttle signal."""
        if outcome is not None and not outcome.is_temporary:
            return
        throttle = is_throttle(reply_code, text, self.signatures)
        if throttle and self.shaper.throttled(trio.current_time()):
            log.info(
                "%s from %s: throttled (%s); concurrency now %d",
                self.provider,
                self.source or "default source",
                text[:120],
                self.shaper.max_connections,
            )


class Route:
    """The queue, opener and connections of one lane for one pool's settings."""

    def __init__(self, lane: Lane, settings: RouteSettings, delivery: Delivery) -> None:
        self.lane = lane
        self.source = lane.source
        self.settings = settings
        self._delivery = delivery
        self.queue: collections.deque[Message] = collections.deque()
        self.connections = 0
        self._starting = 0  # connections that have not taken their first message yet
        self._idle = 0
        self._ready = trio.lowlevel.ParkingLot()  # idle connections, woken one at a time
        self._poke = trio.Event()
        self._opening = False
        self._ssl: ssl.SSLContext | None = None
        lane.routes.append(self)

    @property
    def limits(self) -> Limits:
        return self.lane.shaper.limits

    def _ssl_context(self) -> ssl.SSLContext | None:
        """The route's TLS context, made once: loading the system's trust store takes
        about 18 ms of CPU, which per connection blocked the whole core process."""
        if self._ssl is None and self.settings.tls != "off":
            self._ssl = ssl.create_default_context()
            if self.settings.tls == "opportunistic":  # as SMTPSession.connect's default
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        return self._ssl

    def poke(self) -> None:
        self._poke.set()

    def put(self, message: Message) -> None:
        shaper = self.lane.shaper
        left = shaper.pause_left(trio.current_time())
        if left > 0:  # a dead destination: no connection until the pause ends
            text = (
                f"{self.lane.provider}: new connections paused for {left:.0f} s after "
                f"{shaper.failures} failed connection attempt(s)"
            )
            outcome = Outcome.deferred(message.rcpt, Scope.SITE, text)
            self._report(message, outcome, "", self._after_pause())
            return
        self.queue.append(message)
        self._queued()

    def _queued(self) -> None:
        """Wake an idle connection and the opener (started if it ended) for a queued message.

        One idle connection per batch's worth of queued messages: a woken connection takes
        what is queued when it runs (up to BATCH) and wakes the next if it leaves some, so
        a burst of puts wakes as many connections as it needs, not every idle one.
        """
        if len(self.queue) % BATCH == 1:
            self._ready.unpark()
        self._poke.set()
        if not self._opening:
            self._opening = True
            self._delivery.nursery.start_soon(self._opener)

    # -- opening connections ----------------------------------------------------------------

    async def _opener(self) -> None:
        """Start connections while messages wait and the limits allow; see the module
        docstring. Ends when the queue is empty."""
        delivery = self._delivery
        shaper = self.lane.shaper
        try:
            while self.queue:
                self._poke = trio.Event()
                wait = MAX_OPENER_WAIT
                if len(self.queue) > self._idle + self._starting:
                    now = trio.current_time()
                    allowed = shaper.open_wait(now)
                    if allowed <= 0 and delivery.connections >= delivery.max_connections:
                        delivery.starved.add(self)  # poked when any connection closes
                        allowed = math.inf
                    if allowed <= 0 and shaper.opened(now):
                        delivery.connections += 1
                        delivery.peak_connections = max(
                            delivery.peak_connections, delivery.connections
                        )
                        self.connections += 1
                        self._starting += 1
                        delivery.nursery.start_soon(self._connection)
                        continue
                    wait = min(wait, allowed)
                with trio.move_on_after(wait):
                    await self._poke.wait()
        finally:
            self._opening = False
            delivery.starved.discard(self)

    # -- connections --------------------------------------------------------------------------

    async def _get(self) -> Message | None:
        """The next message, or None once the connection has been idle ``idle_timeout``.

        A connection woken for a message that another one took meanwhile waits again: only
        the idle timeout closes a connection.
        """
        deadline = trio.current_time() + self.limits.idle_timeout
        while not self.queue:
            self._idle += 1
            try:
                with trio.move_on_at(deadline):
                    await self._ready.park()
            finally:
                self._idle -= 1
            if not self.queue and trio.current_time() >= deadline:
                return None
        return self.queue.popleft()

    async def _connect(self, message: Message) -> tuple[SMTPSession | None, str]:
        """A session with the next host of ``message`` (then the next...), or None when no
        host answered: then the message is queued again (the lane's other connections
        work) or reported, and for a dead destination the route's queue is deferred."""
        settings = self.settings
        error: SMTPSessionError | None = None
        host = ""
        while True:
            if message.hosts:
                name, address, port = message.hosts[min(message.tried, len(message.hosts) - 1)]
            else:  # pragma: no cover - the scheduler always sets hosts
                name, address, port = "", "", 25
            host = address
            try:
                session = await SMTPSession.connect(
                    address,
                    port,
                    ehlo_name=settings.ehlo,
                    source_address=self.source,
                    tls=settings.tls,
                    ssl_context=self._ssl_context(),
                    server_hostname=name or None,
                    timeouts=settings.timeouts,
                )
                if settings.auth is not None:
                    try:
                        await session.login(*settings.auth)
                    except SMTPSessionError:
                        await session.aclose()
                        raise
                self.lane.shaper.connect_succeeded()
                message.refused = 0
                return session, host
            except SMTPSessionError as exc:
                log.warning("%s: %s:%s: %s", self.lane.provider, address, port, exc)
                error = exc
                reply = exc.reply
                self.lane.feedback(None, reply.code if reply else None, reply.text if reply else "")
                message.tried += 1
                if message.tried >= len(message.hosts):
                    break
        assert error is not None
        pause = self.lane.shaper.connect_failed(trio.current_time())
        if not pause:  # refused while other connections work: a throttle, not an outage
            message.refused += 1
            if message.refused < MAX_REFUSED:
                message.tried = 0  # its hosts again, from the first, on another connection
                self.queue.appendleft(message)  # not tried: first in line
                self._queued()
            else:
                self._report(message, error.outcomes([message.rcpt])[0], host)
            return None, host
        log.warning(
            "%s from %s: no host answered; new connections paused for %.0f s",
            self.lane.provider,
            self.source or "default source",
            pause,
        )
        self._report(message, error.outcomes([message.rcpt])[0], host, self._after_pause())
        self._fail_queued(error, host)
        return None, host

    def _outcome(self, message: Message, outcome: Outcome, host: str, progress: bool) -> None:
        """Report ``outcome``, or queue the message again (next MX host; a session a 421
        ended after it had delivered). ``progress``: the session delivered something."""
        if outcome.is_temporary:
            self.lane.feedback(outcome, outcome.code, outcome.text)
        if outcome.try_next_host and message.tried + 1 < len(message.hosts):
            message.tried += 1
            self.queue.appendleft(message)  # to its next host, on another connection
            self._queued()
        elif outcome.code == 421 and progress:
            # The server ended a session that had delivered (a per-connection limit) before
            # this transaction completed: nothing of it was delivered, and the server takes
            # mail. Another connection takes it, instead of the spool's retry schedule and
            # a second signature. (A 421 before anything was delivered means "later": it
            # is deferred.) Each such session delivered one message at least: this ends.
            self.queue.appendleft(message)
            self._queued()
        else:
            self._report(message, outcome, host)

    async def _connection(self) -> None:
        delivery = self._delivery
        shaper = self.lane.shaper
        session = None
        starting = True
        try:
            message = self.queue.popleft() if self.queue else None
            if message is None:
                return
            self._starting -= 1
            starting = False
            session, host = await self._connect(message)
            if session is None:
                return
            limit = self.limits.max_messages_per_connection
            sent = 0
            progress = [False]  # the session has delivered something
            while message is not None:
                while (wait := shaper.take_message(trio.current_time())) > 0:
                    await trio.sleep(wait)  # the rate: wait, never drop
                # What is queued now and the rate allows goes in one pipelined batch (one
                # write and one read per message); never wait to fill a batch.
                batch = [message]
                cap = min(BATCH, limit - sent)
                while (
                    len(batch) < cap
                    and self.queue
                    and shaper.take_message(trio.current_time()) == 0
                ):
                    batch.append(self.queue.popleft())
                if self.queue:  # left some (past a batch, or by the rate): wake the next
                    self._ready.unpark()

                def done(i: int, outcomes: list[Outcome], batch=batch, progress=progress) -> None:
                    [outcome] = outcomes
                    progress[0] = progress[0] or outcome.is_delivered
                    self._outcome(batch[i], outcome, host, progress[0])

                await session.send_many([(m.mail_from, [m.rcpt], m.data) for m in batch], done)
                sent += len(batch)
                if not session.reusable or sent >= limit or shaper.over_limit(trio.current_time()):
                    break
                message = await self._get()
        finally:
            if starting:
                self._starting -= 1
            self.connections -= 1
            delivery.connections -= 1
            shaper.closed()
            if session is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    if session.reusable:
                        await session.quit()
                    await session.aclose()
            # Room for another connection: this route's opener, the lane's other routes,
            # and routes waiting for the node-wide cap. Not when cancelled (the node is
            # stopping): nothing new starts then.
            cancelled = trio.current_effective_deadline() == -math.inf
            if not cancelled:
                self.lane.poke()
                delivery.poke_starved()

    def _fail_queued(self, exc: SMTPSessionError, host: str) -> None:
        queued, self.queue = list(self.queue), collections.deque()
        for message in queued:
            self._report(message, exc.outcomes([message.rcpt])[0], host, self._after_pause())

    def _after_pause(self) -> float | None:
        """When a message deferred for the lane's pause is due again (on the delivery's
        clock), spread a little; None when the lane is not paused."""
        left = self.lane.shaper.pause_left(trio.current_time())
        return self._delivery.clock() + after_pause(left) if left > 0 else None

    def _report(
        self, message: Message, outcome: Outcome, host: str, retry_at: float | None = None
    ) -> None:
        self._delivery.report(Result(message, outcome, host, self.source or "", retry_at))


class _Sources:
    """Smooth weighted round robin (nginx's): each pick adds every weight to its current
    value, picks the largest and takes the total from it. Weights 2, 1 -> a, b, a, ..."""

    def __init__(self, sources: list[str], weights: list[int] | None) -> None:
        self.sources = sources
        self.weights = list(weights) if weights else [1] * len(sources)
        self.current = [0] * len(sources)
        self.total = sum(self.weights)

    def next(self) -> str:
        best = 0
        for i, weight in enumerate(self.weights):
            self.current[i] += weight
            if self.current[i] > self.current[best]:
                best = i
        self.current[best] -= self.total
        return self.sources[best]


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
        self._lanes: dict[tuple[str | None, str], Lane] = {}
        self._provider_lanes: dict[str, list[Lane]] = {}
        self._routes: dict[tuple[str | None, str, RouteSettings], Route] = {}
        self._sources: dict[tuple[tuple[str, ...], tuple[int, ...]], _Sources] = {}
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
            lane = self._lanes[(source, provider)] = Lane(
                source, provider, Shaper(limits), signatures
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

    def pick_source(self, sources: list[str], weights: list[int] | None = None) -> str | None:
        """The next source address of a pool (weighted round robin); None: the system's."""
        if not sources:
            return None
        key = (tuple(sources), tuple(weights or ()))
        picker = self._sources.get(key)
        if picker is None:
            picker = self._sources[key] = _Sources(sources, weights)
        return picker.next()

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
        source = self.pick_source(sources, weights)
        provider = provider or route_key(host, port)
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

    def report(self, result: Result) -> None:
        """Hand a result to the scheduler (the channel is unbounded in practice)."""
        self.in_flight -= 1
        self._results.send_nowait(result)
