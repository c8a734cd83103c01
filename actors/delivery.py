"""Delivery: per-route queues of signed messages and the SMTP connections that drain them.

A route is a destination (host, port) reached from one source address. Each route has a
queue and up to ``max_connections`` connection tasks; a connection is opened when
messages wait and no idle connection can take them, carries up to
``max_messages_per_connection`` messages (one transaction each: every message is
personalized), and closes after ``idle_timeout`` without work. When a route cannot be
reached at all (connect, greeting or EHLO fails), every message queued for it is
deferred at once, instead of each waiting for its own failed connection.

Every message ends in exactly one :class:`Result`, sent on the results channel.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import ssl
from dataclasses import dataclass, field

import trio

from salvo.actors.smtp_session import SMTPSession, SMTPSessionError, SMTPTimeouts, TLSPolicy
from salvo.core.smtp import Outcome, Scope

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


@dataclass(slots=True)
class Result:
    """What happened to a :class:`Message`."""

    message: Message
    outcome: Outcome
    host: str
    source: str


@dataclass(frozen=True)
class RouteSettings:
    """How the connections of a route behave."""

    ehlo: str
    max_connections: int = 32
    max_messages_per_connection: int = 1000
    idle_timeout: float = 5.0
    tls: TLSPolicy = "opportunistic"
    timeouts: SMTPTimeouts = field(default_factory=SMTPTimeouts)


class Route:
    """The queue and connections of one (destination, source address)."""

    def __init__(
        self, host: str, port: int, source: str | None, settings: RouteSettings, delivery: Delivery
    ) -> None:
        self.host = host
        self.port = port
        self.source = source
        self.settings = settings
        self._delivery = delivery
        self.queue: collections.deque[Message] = collections.deque()
        self.connections = 0
        self._idle = 0
        self._ready = trio.Event()
        self._ssl: ssl.SSLContext | None = None

    def _ssl_context(self) -> ssl.SSLContext | None:
        """The route's TLS context, made once: loading the system's trust store takes
        about 18 ms of CPU, which per connection blocked the whole core process."""
        if self._ssl is None and self.settings.tls != "off":
            self._ssl = ssl.create_default_context()
            if self.settings.tls == "opportunistic":  # as SMTPSession.connect's default
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        return self._ssl

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"

    def put(self, message: Message) -> None:
        self.queue.append(message)
        self._ready.set()
        if self.connections < self.settings.max_connections and len(self.queue) > self._idle:
            self.connections += 1
            self._delivery.nursery.start_soon(self._connection)

    async def _get(self) -> Message | None:
        """The next message, or None once the connection has been idle ``idle_timeout``.

        A put wakes every idle connection; those that find the queue empty again (another
        took the message) keep waiting: only the idle timeout closes a connection.
        """
        deadline = trio.current_time() + self.settings.idle_timeout
        while not self.queue:
            if self._ready.is_set():  # set by a put whose message another connection took
                self._ready = trio.Event()
            self._idle += 1
            try:
                with trio.move_on_at(deadline):
                    await self._ready.wait()
            finally:
                self._idle -= 1
            if not self.queue and trio.current_time() >= deadline:
                return None
        message = self.queue.popleft()
        if not self.queue:
            self._ready = trio.Event()
        return message

    async def _connection(self) -> None:
        settings = self.settings
        session = None
        try:
            try:
                session = await SMTPSession.connect(
                    self.host,
                    self.port,
                    ehlo_name=settings.ehlo,
                    source_address=self.source,
                    tls=settings.tls,
                    ssl_context=self._ssl_context(),
                    timeouts=settings.timeouts,
                )
            except SMTPSessionError as exc:
                log.warning("%s: %s", self.label, exc)
                self._fail_queued(exc)
                return
            for _ in range(settings.max_messages_per_connection):
                message = await self._get()
                if message is None:
                    break
                smtputf8 = not (message.rcpt.isascii() and message.mail_from.isascii())
                outcomes = await session.send(
                    message.mail_from, [message.rcpt], message.data, smtputf8=smtputf8
                )
                self._report(message, outcomes[0])
                if not session.reusable:
                    break
        finally:
            self.connections -= 1
            if session is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    if session.reusable:
                        await session.quit()
                    await session.aclose()
            # Messages may have arrived while this connection was closing. Not when it was
            # cancelled (the node is stopping): the new one would be cancelled at once and
            # start another in its turn, for ever, and the core would never stop.
            cancelled = trio.current_effective_deadline() == -math.inf
            if (
                self.queue
                and self.connections < settings.max_connections
                and not self._idle
                and not cancelled
            ):
                self.connections += 1
                self._delivery.nursery.start_soon(self._connection)

    def _fail_queued(self, exc: SMTPSessionError) -> None:
        queued, self.queue = list(self.queue), collections.deque()
        self._ready = trio.Event()
        for message in queued:
            self._report(message, exc.outcomes([message.rcpt])[0])

    def _report(self, message: Message, outcome: Outcome) -> None:
        self._delivery.report(Result(message, outcome, self.host, self.source or ""))


class Delivery:
    """All routes; run :meth:`run` in a nursery, then :meth:`send` messages."""

    def __init__(self, results: trio.MemorySendChannel[Result]) -> None:
        self._results = results
        self._routes: dict[tuple[str, int, str | None], Route] = {}
        self._cycles: dict[tuple[str, ...], itertools.cycle] = {}
        self.nursery: trio.Nursery
        self.in_flight = 0

    async def run(self, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Host the connection tasks; returns when cancelled."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def send(
        self,
        message: Message,
        host: str,
        port: int,
        sources: list[str],
        settings: RouteSettings,
    ) -> None:
        """Queue a message for (host, port) from one of ``sources`` (round robin)."""
        source = None
        if sources:
            key = tuple(sources)
            cycle = self._cycles.get(key)
            if cycle is None:
                cycle = self._cycles[key] = itertools.cycle(sources)
            source = next(cycle)
        route = self._routes.get((host, port, source))
        if route is None:
            route = self._routes[(host, port, source)] = Route(host, port, source, settings, self)
        self.in_flight += 1
        route.put(message)

    def report(self, result: Result) -> None:
        """Hand a result to the scheduler (the channel is unbounded in practice)."""
        self.in_flight -= 1
        self._results.send_nowait(result)

    def defer_unroutable(self, message: Message, text: str) -> None:
        """A message with nowhere to go: deferred, site scope, without a connection."""
        self.in_flight += 1
        self.report(Result(message, Outcome.deferred(message.rcpt, Scope.SITE, text), "", ""))
