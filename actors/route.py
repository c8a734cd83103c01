"""A route: the queue of one lane (source address, provider) for one pool's settings, the
task that opens its connections and the connections that drain it (docs/delivery.md).

The opener starts a connection when messages wait, no idle connection can take them, and
the lane's shaper and the node-wide connection cap allow one; else it waits for a
connection to close or for the rate to allow one. A connection goes to the next host of
its first message (MX order), carries up to ``max_messages_per_connection`` messages (one
transaction each, up to ``BATCH`` pipelined in one exchange), waits for the message rate
before each, and closes after ``idle_timeout`` without work or when a backoff lowered the
lane's concurrency below its count. What an outcome or a failed connection means is
:mod:`salvo.core.policy`'s to say; a route does what it says.
"""

from __future__ import annotations

import collections
import logging
import math
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from salvo.actors.smtp_session import SMTPSession, SMTPSessionError
from salvo.core.policy import Next, after_failed_connect, after_pause, after_transaction
from salvo.core.shaping import Limits
from salvo.core.smtp import Outcome, Scope, Status

if TYPE_CHECKING:
    from salvo.actors.delivery import Delivery, Lane, Message, RouteSettings

log = logging.getLogger("salvo.delivery")

MAX_OPENER_WAIT = 1.0  # seconds: an opener re-checks at least this often
BATCH = 32  # messages per pipelined send_many on one connection
DELIVERED = Status.DELIVERED  # a module global: an Enum member lookup costs more


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
        throttle = self.lane.throttle
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
                    lease = None
                    if allowed <= 0 and throttle is not None:  # the limits shared by nodes
                        lease, allowed = await throttle.open()
                    if (
                        allowed <= 0
                        and delivery.connections < delivery.max_connections
                        and shaper.opened(trio.current_time())
                    ):
                        delivery.connections += 1
                        delivery.peak_connections = max(
                            delivery.peak_connections, delivery.connections
                        )
                        self.connections += 1
                        self._starting += 1
                        delivery.nursery.start_soon(self._connection, lease)
                        continue
                    if lease is not None:  # the node-wide cap filled meanwhile
                        throttle.close(lease)
                        allowed = max(allowed, 0.05)
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
        while True:
            while not self.queue:
                self._idle += 1
                try:
                    with trio.move_on_at(deadline):
                        await self._ready.park()
                finally:
                    self._idle -= 1
                if not self.queue and trio.current_time() >= deadline:
                    return None
            message = self._pop()
            if message is not None:
                return message

    def _pop(self) -> Message | None:
        """The next queued message that may go out; those a pause holds are handed back
        (one attribute test per message while nothing is paused)."""
        hold = self._delivery.hold
        queue = self.queue
        while queue:
            message = queue.popleft()
            if hold is None:
                return message
            held = hold(message, self.lane.provider)
            if held is None:
                return message
            self._delivery.hand_back(message, held)
        return None

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
        paused = self.lane.shaper.connect_failed(trio.current_time())
        if not paused:
            message.refused += 1
        decision = after_failed_connect(paused, message.refused)
        if decision is Next.AGAIN:
            message.tried = 0  # its hosts again, from the first, on another connection
            self._again(message)
        elif decision is Next.REPORT:
            self._report(message, error.outcomes([message.rcpt])[0], host)
        else:  # dead: this message and every queued one wait for the pause to end
            log.warning(
                "%s from %s: no host answered; new connections paused for %.0f s",
                self.lane.provider,
                self.source or "default source",
                paused,
            )
            self._report(message, error.outcomes([message.rcpt])[0], host, self._after_pause())
            self._fail_queued(error, host)
        return None, host

    def _outcome(self, message: Message, outcome: Outcome, host: str, progress: bool) -> None:
        """Report ``outcome``, or queue the message again (core.policy.after_transaction).
        ``progress``: the session delivered something."""
        if outcome.is_temporary:
            self.lane.feedback(outcome, outcome.code, outcome.text)
        else:  # refused for good: the provider answered, at its pace
            self.lane.shaper.answered(trio.current_time(), 0, 1)
        decision = after_transaction(outcome, message.tried, len(message.hosts), progress)
        if decision is Next.REPORT:
            self._report(message, outcome, host)
            return
        if decision is Next.NEXT_HOST:
            message.tried += 1
        self._again(message)

    def _again(self, message: Message) -> None:
        """First in line again, for another connection."""
        self.queue.appendleft(message)
        self._queued()

    def _take(self, shaper, throttle) -> bool:
        """A message slot now from the shared tokens and the lane's rates, or False."""
        if throttle is not None and not throttle.take_now():
            return False
        if shaper.take_message(trio.current_time()) == 0:
            return True
        if throttle is not None:
            throttle.give_back()
        return False

    async def _connection(self, lease=None) -> None:
        delivery = self._delivery
        lane = self.lane
        shaper = lane.shaper
        throttle = lane.throttle
        session = None
        starting = True
        answered = shaper.answered  # what the provider took: the adaptive rate's basis
        sent_at = 0.0
        try:
            message = self._pop()
            if message is None:
                return
            self._starting -= 1
            starting = False
            session, host = await self._connect(message)
            if session is None:
                return
            limit = self.limits.max_messages_per_connection
            sent = 0
            progress = False  # the session has delivered something
            batch: list[Message] = []

            def done(i: int, outcomes: Sequence[Outcome]) -> None:
                # Each transaction as soon as it is answered: a delivered message's record
                # must not wait for the rest of its batch.
                nonlocal progress
                if i == 0:  # the batch's first reply time: the provider's latency signal
                    lane.reply_time(trio.current_time() - sent_at)
                outcome = outcomes[0]
                if outcome.status is DELIVERED:  # nearly always: nothing to decide
                    progress = True
                    # Counted at once (at the batch's time): a decrease on another
                    # connection's signal is based on what every connection got through.
                    answered(sent_at, 1)
                    self._report(batch[i], outcome, host)
                else:
                    self._outcome(batch[i], outcome, host, progress)

            while message is not None:
                if throttle is not None:  # a token of the shared rates (granted in batches)
                    await throttle.take(len(self.queue) + 1)
                while (wait := shaper.take_message(trio.current_time())) > 0:
                    await trio.sleep(wait)  # the rate: wait, never drop
                # What is queued now and the rate allows goes in one pipelined batch (one
                # write and one read per message); never wait to fill a batch.
                batch = [message]
                cap = min(BATCH, limit - sent)
                while len(batch) < cap and self.queue and self._take(shaper, throttle):
                    more = self._pop()
                    if more is None:
                        break
                    batch.append(more)
                if self.queue:  # left some (past a batch, or by the rate): wake the next
                    self._ready.unpark()
                sent_at = trio.current_time()
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
            if lease is not None:
                throttle.close(lease)
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
        if left <= 0:
            return None
        return self._delivery.clock() + after_pause(left, rng=self._delivery.rng)

    def _report(
        self, message: Message, outcome: Outcome, host: str, retry_at: float | None = None
    ) -> None:
        self._delivery.report(message, outcome, host, self.source or "", retry_at)
