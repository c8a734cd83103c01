"""One SMTP client connection over Trio: a thin transport around :mod:`salvo.core.smtp`.

Usage::

    session = await SMTPSession.connect(host, port, ehlo_name="mta.example")
    outcomes = await session.send(mail_from, recipients, message)  # one transaction
    results = await session.send_many([(mail_from, [rcpt], message), ...])  # pipelined
    ...                                                              # reuse while reusable
    await session.quit()

How failures come back:

- ``connect`` raises :class:`SMTPSessionError` when no session could be established (TCP
  connect, greeting, EHLO/HELO, STARTTLS under ``required``, timeouts, protocol errors on
  the way). It is always temporary and site-scoped; ``err.outcomes(recipients)`` gives
  the deferred :class:`Outcome` for each recipient that was meant to go there.
- ``send`` returns one :class:`Outcome` per recipient, in order, and never raises for what
  the server or the network did: a timeout, EOF or bad reply defers what was pending
  with stream scope and marks the session broken. It raises only for our own bugs
  (:class:`LocalProtocolError`, ``trio.BusyResourceError``, ``trio.ClosedResourceError``
  when sending on a session that is no longer ``reusable``) and for cancellation, which
  also marks the session broken (h11's ``examples/trio-server.py`` rule: any exception
  leaves the protocol unusable).
- Recipients refused as too many for one transaction (452 4.5.3, LIMITS RCPTMAX) are sent
  again at once in further transactions on the same connection, as long as each one
  makes progress.

Deadlines cover the whole reply, never one ``recv`` (RFC 5321 4.5.3.2), so a server
dripping one byte per second cannot hold a connection beyond its command's timeout.
"""

from __future__ import annotations

import contextlib
import math
import os
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import trio

from salvo.core.smtp import (
    AuthResult,
    Capabilities,
    Closed,
    Event,
    LocalProtocolError,
    Outcome,
    Phase,
    Ready,
    Scope,
    SessionRefused,
    SMTPClient,
    StartTLS,
    StartTLSRefused,
    State,
    TransactionDone,
)
from salvo.core.smtp.reply import Reply
from salvo.ext.errors import SalvoError

__all__ = ["SMTPSession", "SMTPSessionError", "SMTPTimeouts", "TLSPolicy"]

TLSPolicy = Literal["opportunistic", "required", "off"]
_RECV = 65536
_SEND = 65536
# A reply's deadline may come this much early: a reused connection's deadlines move a few
# ms per message, and moving a Trio deadline costs more than the read it guards.
DEADLINE_SLACK = 0.05  # seconds


def _move_deadline(scope: trio.CancelScope, deadline: float) -> None:
    """Set ``scope``'s deadline to ``deadline``, or leave it up to DEADLINE_SLACK earlier."""
    current = scope.deadline
    if deadline < current or deadline - current > DEADLINE_SLACK:
        scope.deadline = deadline


@dataclass(frozen=True, slots=True)
class SMTPTimeouts:
    """Seconds allowed per step, each over a whole reply (RFC 5321 4.5.3.2 defaults).

    ``connect`` is Postfix's ``smtp_connect_timeout`` (the RFC names none): a host that
    does not answer a SYN in 30 s will not do better later. ``data_block`` bounds every
    write of up to 64 KiB; ``starttls`` covers the 220 and the handshake.
    """

    connect: float = 30.0
    greeting: float = 300.0
    ehlo: float = 300.0
    starttls: float = 300.0
    auth: float = 300.0
    mail: float = 300.0
    rcpt: float = 300.0
    rset: float = 300.0
    data_init: float = 120.0
    data_block: float = 180.0
    data_end: float = 600.0
    quit: float = 300.0
    transaction: float = 900.0

    # ``transaction`` bounds one whole transaction, from the first byte of ``[RSET] MAIL``
    # to the last reply, on top of the per-reply deadlines: with pipelining each reply
    # gets its own deadline, so a batch of N commands could otherwise take N x ``rcpt``.

    def for_phase(self, phase: Phase) -> float:
        """The deadline of the reply awaited in ``phase``."""
        return {
            Phase.GREETING: self.greeting,
            Phase.EHLO: self.ehlo,
            Phase.HELO: self.ehlo,
            Phase.STARTTLS: self.starttls,
            Phase.AUTH: self.auth,
            Phase.RSET: self.rset,
            Phase.MAIL: self.mail,
            Phase.RCPT: self.rcpt,
            Phase.DATA: self.data_init,
            Phase.DATA_END: self.data_end,
            Phase.QUIT: self.quit,
        }[phase]


class SMTPSessionError(SalvoError):
    """No usable session with this host: defer its mail, throttle it or try the next MX."""

    temporary = True

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply

    def outcomes(self, recipients: Sequence[str]) -> list[Outcome]:
        """The deferred, site-scoped outcome of each recipient meant for this host."""
        return [Outcome.deferred(r, Scope.SITE, str(self), self.reply) for r in recipients]


class _Done:
    """The outcomes of a round of transactions, each passed on as soon as it is set."""

    __slots__ = ("on_done", "outcomes")

    def __init__(self, n: int, on_done: Callable[[int, list[Outcome]], None] | None) -> None:
        self.outcomes: list[tuple[Outcome, ...] | None] = [None] * n
        self.on_done = on_done

    def set(self, index: int, outcomes: tuple[Outcome, ...]) -> None:
        self.outcomes[index] = outcomes
        if self.on_done is not None and not any(o.split for o in outcomes):
            self.on_done(index, list(outcomes))


class _TLSFailed(Exception):
    """The handshake failed; under ``opportunistic`` we go again in plaintext."""


class SMTPSession:
    """An established SMTP session. Create it with :meth:`connect`."""

    def __init__(self, stream: trio.abc.Stream, client: SMTPClient, timeouts: SMTPTimeouts):
        self._stream = stream
        # Plain TCP: read and write the socket directly (see _PlainIO); TLS: the stream.
        self._io: _PlainIO | _StreamIO = _StreamIO(stream)
        if isinstance(stream, trio.SocketStream) and os.name == "posix":
            self._io = _PlainIO(stream.socket.fileno())
        self._client = client
        self._timeouts = timeouts
        self._deadlines = {phase: timeouts.for_phase(phase) for phase in Phase}
        self._broken = False
        self._closed = False
        self._busy = False

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int = 25,
        *,
        ehlo_name: str,
        source_address: str | None = None,
        tls: TLSPolicy = "opportunistic",
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeouts: SMTPTimeouts = SMTPTimeouts(),
        data_encoder: Callable[[bytes], bytes] | None = None,
    ) -> SMTPSession:
        """Connect, read the greeting, EHLO (HELO fallback), STARTTLS per ``tls``.

        ``tls="required"`` verifies the certificate against ``server_hostname`` (default:
        ``host``) with ``ssl_context`` (default: the system's trust store);
        ``"opportunistic"`` uses TLS when offered, unverified unless ``ssl_context`` says
        otherwise, and reconnects in plaintext if the handshake fails.
        """
        if tls not in ("opportunistic", "required", "off"):
            raise ValueError(f"tls must be opportunistic, required or off, not {tls!r}")
        if ssl_context is None and tls != "off":
            ssl_context = ssl.create_default_context()
            if tls == "opportunistic":  # RFC 7435: encrypt without demanding proof
                ssl_context.check_hostname = False
                ssl_context.verify_mode = ssl.CERT_NONE
        args = (host, port, ehlo_name, source_address, timeouts, data_encoder)
        try:
            return await cls._open(*args, tls, ssl_context, server_hostname or host)
        except _TLSFailed:
            return await cls._open(*args, "off", None, host)

    @classmethod
    async def _open(
        cls,
        host: str,
        port: int,
        ehlo_name: str,
        source_address: str | None,
        timeouts: SMTPTimeouts,
        data_encoder: Callable[[bytes], bytes] | None,
        tls: TLSPolicy,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str,
    ) -> SMTPSession:
        try:
            with trio.fail_after(timeouts.connect):
                stream = await trio.open_tcp_stream(host, port, local_address=source_address)
        except (OSError, trio.TooSlowError) as exc:
            raise SMTPSessionError(f"cannot connect to {host}:{port}: {exc!r}") from exc
        client = SMTPClient(ehlo_name, data_encoder=data_encoder)
        self = cls(stream, client, timeouts)
        try:
            await self._establish()
            if tls != "off" and client.capabilities.starttls:
                await self._starttls(ssl_context, server_hostname, tls)
            elif tls == "required":
                raise SMTPSessionError(f"{host}:{port} does not offer STARTTLS (TLS required)")
        except _TLSFailed:
            await self.aclose()
            raise
        except SMTPSessionError:
            await self.aclose()
            raise
        except BaseException as exc:
            self._broken = True
            await self.aclose()
            if isinstance(exc, Exception) and not isinstance(exc, LocalProtocolError):
                raise SMTPSessionError(f"session with {host}:{port} failed: {exc!r}") from exc
            raise
        return self

    async def _establish(self) -> None:
        events = await self._pump(Ready, SessionRefused)
        for event in events:
            if isinstance(event, SessionRefused):
                raise SMTPSessionError(f"refused: {event.reply}", event.reply)
        if not any(isinstance(e, Ready) for e in events):
            raise SMTPSessionError("the server closed the session while it was being set up")

    async def _starttls(self, ctx: ssl.SSLContext | None, hostname: str, tls: TLSPolicy) -> None:
        assert ctx is not None
        self._client.starttls()
        events = await self._pump(StartTLS, StartTLSRefused)
        if not any(isinstance(e, StartTLS) for e in events):
            if tls == "required":
                raise SMTPSessionError(f"STARTTLS refused (TLS required): {events}")
            return
        stream = trio.SSLStream(self._stream, ctx, server_hostname=hostname)
        try:
            with trio.fail_after(self._timeouts.starttls):
                await stream.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError) as exc:
            if tls == "opportunistic":
                raise _TLSFailed from exc
            raise SMTPSessionError(f"TLS handshake with {hostname} failed: {exc!r}") from exc
        self._stream, self._io = stream, _StreamIO(stream)
        self._client.tls_established()
        await self._establish()

    # -- public -----------------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        """What the server offered in its last EHLO."""
        return self._client.capabilities

    @property
    def tls(self) -> bool:
        """TLS is on for this session."""
        return self._client.tls

    @property
    def broken(self) -> bool:
        """The connection failed (timeout, EOF, protocol error, cancellation)."""
        return self._broken

    @property
    def reusable(self) -> bool:
        """Another :meth:`send` may follow on this connection."""
        return not (self._broken or self._closed) and self._client.reusable

    async def login(self, username: str, password: str) -> None:
        """AUTH PLAIN or LOGIN (over TLS only); raises :class:`SMTPSessionError` on refusal."""
        self._client.login(username, password)
        events = await self._guard(self._pump(AuthResult, Closed))
        result = next((e for e in events if isinstance(e, AuthResult)), None)
        if result is None or not result.reply.is_positive:
            reply = result.reply if result else None
            err = SMTPSessionError(f"authentication refused: {reply}", reply)
            err.temporary = reply is None or not reply.is_permanent
            raise err

    async def send(
        self, mail_from: str, recipients: Sequence[str], message: bytes, *, smtputf8: bool = False
    ) -> list[Outcome]:
        """Deliver ``message`` (CRLF line ends, not dot-stuffed) to ``recipients``.

        Returns each recipient's outcome, in order; see the module docstring.
        """
        [outcomes] = await self.send_many([(mail_from, recipients, message, smtputf8)])
        return outcomes

    async def send_many(
        self,
        transactions: Sequence[Sequence],
        on_done: Callable[[int, list[Outcome]], None] | None = None,
    ) -> list[list[Outcome]]:
        """Deliver several messages, one transaction each, pipelined across transactions.

        Each item is ``(mail_from, recipients, message)`` or ``(mail_from, recipients,
        message, smtputf8)``. Returns, for each item in order, each recipient's outcome
        in order, exactly as :meth:`send` would; the failure rules are the same, per
        transaction: a refused RCPT or DATA in one transaction does not touch the next;
        a 421 defers (site scope) and a timeout, EOF or bad reply defers (stream scope)
        everything still pending in every transaction of the batch, while transactions
        already answered keep their outcomes. With PIPELINING each message and its
        final dot leave in the same write as the next envelope: one write and one read
        per message in steady state.

        ``on_done(index, outcomes)`` is called for each transaction as soon as its final
        outcomes are known, before the rest of the batch is answered: a delivered
        message's outcome must reach the spool without waiting for its batch.
        """
        if self._busy:
            raise trio.BusyResourceError("another task is sending on this SMTP session")
        if self._broken or self._closed:
            raise trio.ClosedResourceError("this SMTP session is closed; connect again")
        self._busy = True
        try:
            splits = self._client.splits
            first = await self._transactions(transactions, on_done)
            if self._client.splits == splits:  # the usual case: nothing to send again
                return [list(outcomes) for outcomes in first]
            finals = await self._resend_splits(transactions, first)
            if on_done is not None:  # those held back for their split recipients
                for k, outcomes in enumerate(first):
                    if any(o.split for o in outcomes):
                        on_done(k, finals[k])
            return finals
        finally:
            self._busy = False

    async def _resend_splits(
        self, transactions: Sequence[Sequence], first: list[tuple[Outcome, ...]]
    ) -> list[list[Outcome]]:
        """Send recipients refused as too many (452 4.5.3, RCPTMAX) again at once, in
        further transactions, as long as each round makes progress."""
        recipients = [list(item[1]) for item in transactions]
        finals = [list(outcomes) for outcomes in first]
        todo = []
        for k, outcomes in enumerate(first):
            split = [i for i, o in enumerate(outcomes) if o.split]
            if split and len(split) < len(outcomes):
                todo.append((k, split))
        for _ in range(sum(map(len, recipients))):  # each round settles a recipient
            if not todo or not self.reusable:
                break
            batch = []
            for k, positions in todo:
                item = transactions[k]
                smtputf8 = len(item) > 3 and item[3]
                batch.append((item[0], [recipients[k][i] for i in positions], item[2], smtputf8))
            again = []
            for (k, positions), result in zip(todo, await self._transactions(batch), strict=True):
                split = []
                for i, outcome in zip(positions, result, strict=True):
                    finals[k][i] = outcome
                    if outcome.split:
                        split.append(i)
                if split and len(split) < len(positions):
                    again.append((k, split))
            todo = again
        return finals

    async def quit(self) -> None:
        """Say QUIT (waiting for the 221 at most the quit timeout), then close."""
        try:
            if self.reusable:
                self._client.quit()
                with contextlib.suppress(Exception):  # the mail is done; a rude bye is harmless
                    await self._pump(Closed)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the connection at once (no QUIT, no TLS close_notify wait)."""
        self._closed = True
        await self._close_transport()

    async def _close_transport(self) -> None:
        self._io = _StreamIO(self._stream)  # closed, it raises; a stale fd number might not
        await trio.aclose_forcefully(self._stream)

    # -- internals --------------------------------------------------------------------

    async def _transactions(
        self, batch: Sequence[Sequence], on_done: Callable[[int, list[Outcome]], None] | None = None
    ) -> list[tuple[Outcome, ...]]:
        """One round of transactions on the wire; each one's outcomes, in order, also
        passed to ``on_done`` as each is known (unless a recipient of it was split)."""
        done = _Done(len(batch), on_done)
        client = self._client
        try:
            for event in client.send_many(batch):
                if type(event) is TransactionDone:
                    done.set(event.index, event.outcomes)
            if client.state is State.TRANSACTION:
                await self._pump_transactions(done)
            if client.state is State.BROKEN:  # a protocol error after some were answered
                for event in client.abort(f"protocol error: {client.error}"):
                    done.set(event.index, event.outcomes)  # type: ignore[attr-defined]
        except LocalProtocolError:
            raise
        except Exception as exc:
            self._broken = True
            for event in client.abort(_describe(exc)):
                done.set(event.index, event.outcomes)  # type: ignore[attr-defined]
            await self._close_transport()
        except BaseException:
            self._broken = True
            client.abort("cancelled")
            await self._close_transport()
            raise
        if not client.reusable:
            self._broken = self._broken or client.state is State.BROKEN
            await self.aclose()
        return done.outcomes  # type: ignore[return-value]

    async def _pump_transactions(self, done: _Done) -> None:
        """As :meth:`_pump`, until every transaction in flight has ended.

        Each transaction's outcomes go into ``done`` as soon as they are known, so that
        those answered before a failure keep them. ``transaction`` bounds each one,
        counted from the end of the one before.
        """
        client, io, deadlines = self._client, self._io, self._deadlines
        block, bound = self._timeouts.data_block, self._timeouts.transaction
        now = trio.current_time
        t = now()  # when the last reply completed: the next one's deadline counts from it
        until = t + bound
        with trio.CancelScope() as scope:
            while True:
                data = client.data_to_send()
                if data:
                    waited = False
                    for start in range(0, len(data), _SEND):
                        chunk = data[start : start + _SEND] if len(data) > _SEND else data
                        waited |= await io.send_all_within(chunk, scope, block, until)
                    if waited:  # a slow write does not eat into the reply's deadline
                        t = now()
                phase = client.awaiting
                if phase is None:
                    return
                count = client.reply_count
                deadline = min(t + deadlines[phase], until)
                ended = False
                while client.reply_count == count:  # each pass reads; the deadline ends it
                    # The reply cannot be there yet (we just wrote, or read a part of
                    # it): wait first, and save a read that would only say EAGAIN.
                    data = await io.receive_some(_RECV, scope, deadline, True)
                    for event in client.receive_data(data):
                        if type(event) is TransactionDone:
                            done.set(event.index, event.outcomes)
                            ended = True
                    if not data:
                        return
                t = now()
                if ended:
                    until = t + bound
        raise trio.TooSlowError  # only reached when the scope's deadline cancelled it

    async def _guard(self, pump: Awaitable[list[Event]]) -> list[Event]:
        try:
            return await pump
        except BaseException:
            self._broken = True
            self._client.abort("failed")
            await self._close_transport()
            raise

    async def _pump(self, *stop: type, until: float = math.inf) -> list[Event]:
        """Write what is due, then read reply after reply until an event in ``stop``.

        One cancel scope for the whole exchange, with the deadline of every write
        (``data_block``) and every awaited reply (that reply's timeout, over all the reads
        it takes), never beyond ``until``; the transport moves it there before it waits.
        Raises ``trio.TooSlowError`` when it expires.
        """
        client, events, deadlines = self._client, [], self._deadlines
        block = self._timeouts.data_block
        with trio.CancelScope() as scope:
            while True:
                data = client.data_to_send()
                for start in range(0, len(data), _SEND):
                    deadline = min(trio.current_time() + block, until)
                    await self._io.send_all(data[start : start + _SEND], scope, deadline)
                phase = client.awaiting
                if phase is None or any(isinstance(e, stop) for e in events):
                    return events
                count = client.reply_count
                deadline = min(trio.current_time() + deadlines[phase], until)
                while client.reply_count == count:  # each pass reads; the deadline ends it
                    data = await self._io.receive_some(_RECV, scope, deadline)
                    events += client.receive_data(data)
                    if not data:
                        return events
        raise trio.TooSlowError  # only reached when the scope's deadline cancelled it


class _PlainIO:
    """Reads and writes of a plain TCP socket without Trio's extra scheduling passes.

    ``trio.SocketStream`` yields to the scheduler after every successful send and recv
    (a checkpoint): four or more passes per message, a third of the CPU of a reused
    connection. Here a call that can complete at once does so; one that would block waits
    with ``wait_readable`` / ``wait_writable``, which are checkpoints and honour the
    caller's cancel scope (the deadlines). Every transaction waits for the server at least
    once, so other tasks still run. The fd stays owned by the ``SocketStream``.
    """

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    async def send_all_within(
        self, data: bytes, scope: trio.CancelScope, block: float, until: float
    ) -> bool:
        """:meth:`send_all` with the deadline ``min(now + block, until)``, computed only
        if the write has to wait (nearly never: the socket buffer takes a message).
        Returns whether it waited."""
        view, fd = memoryview(data), self._fd
        while view:
            try:
                sent = os.write(fd, view)
            except BlockingIOError:
                await self.send_all(view, scope, min(trio.current_time() + block, until))
                return True
            except OSError as exc:
                raise trio.BrokenResourceError(f"send failed: {exc!r}") from exc
            view = view[sent:]
        return False

    async def send_all(self, data: bytes, scope: trio.CancelScope, deadline: float) -> None:
        view, fd = memoryview(data), self._fd
        while view:
            try:
                sent = os.write(fd, view)
            except BlockingIOError:
                scope.deadline = deadline
                await trio.lowlevel.wait_writable(fd)
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(f"send failed: {exc!r}") from exc
            view = view[sent:]

    async def receive_some(
        self, max_bytes: int, scope: trio.CancelScope, deadline: float, wait: bool = False
    ) -> bytes:
        """Read what is there; ``wait``: wait for readability before the first read."""
        fd = self._fd
        if wait:
            _move_deadline(scope, deadline)
            await trio.lowlevel.wait_readable(fd)
        while True:
            try:
                return os.read(fd, max_bytes)
            except BlockingIOError:
                _move_deadline(scope, deadline)  # only now: it costs more than a read
                await trio.lowlevel.wait_readable(fd)
            except OSError as exc:
                raise trio.BrokenResourceError(f"receive failed: {exc!r}") from exc


class _StreamIO:
    """Any Trio stream (TLS, or a closed one) behind :class:`_PlainIO`'s interface."""

    __slots__ = ("_stream",)

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream

    async def send_all(self, data: bytes, scope: trio.CancelScope, deadline: float) -> None:
        scope.deadline = deadline
        await self._stream.send_all(data)

    async def send_all_within(
        self, data: bytes, scope: trio.CancelScope, block: float, until: float
    ) -> bool:
        await self.send_all(data, scope, min(trio.current_time() + block, until))
        return True

    async def receive_some(
        self, max_bytes: int, scope: trio.CancelScope, deadline: float, wait: bool = False
    ) -> bytes:
        scope.deadline = deadline
        return await self._stream.receive_some(max_bytes)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "timed out waiting for the server"
    return f"connection failed: {exc!r}"
