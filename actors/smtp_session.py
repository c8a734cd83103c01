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
from typing import Literal

import trio

from salvo.actors.smtp_io import PlainIO, StreamIO, exchange, exchange_transactions
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
    SMTPTimeouts,
    StartTLS,
    StartTLSRefused,
    State,
    TransactionDone,
)
from salvo.core.smtp.reply import Reply
from salvo.core.smtp.splits import SplitRounds
from salvo.ext.errors import SalvoError

__all__ = ["SMTPSession", "SMTPSessionError", "TLSPolicy"]

TLSPolicy = Literal["opportunistic", "required", "off"]
DEFAULT_TIMEOUTS = SMTPTimeouts()


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

    def __init__(self, n: int, on_done: Callable[[int, Sequence[Outcome]], None] | None) -> None:
        self.outcomes: list[tuple[Outcome, ...] | None] = [None] * n
        self.on_done = on_done

    def set(self, index: int, outcomes: tuple[Outcome, ...]) -> None:
        self.outcomes[index] = outcomes
        if self.on_done is None:
            return
        for outcome in outcomes:  # once per message: no generator
            if outcome.split:
                return
        self.on_done(index, outcomes)


class _TLSFailed(Exception):
    """The handshake failed; under ``opportunistic`` we go again in plaintext."""


class SMTPSession:
    """An established SMTP session. Create it with :meth:`connect`."""

    def __init__(self, stream: trio.abc.Stream, client: SMTPClient, timeouts: SMTPTimeouts):
        self._stream = stream
        # Plain TCP: read and write the socket directly (see PlainIO); TLS: the stream.
        self._io: PlainIO | StreamIO = StreamIO(stream)
        if isinstance(stream, trio.SocketStream) and os.name == "posix":
            self._io = PlainIO(stream.socket.fileno())
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
        timeouts: SMTPTimeouts = DEFAULT_TIMEOUTS,
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
        self._stream, self._io = stream, StreamIO(stream)
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
        on_done: Callable[[int, Sequence[Outcome]], None] | None = None,
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
            rounds = SplitRounds(transactions, first)
            while self.reusable and (batch := rounds.next_batch()):
                rounds.settle(await self._transactions(batch))
            if on_done is not None:  # those held back for their split recipients
                for k in rounds.held:
                    on_done(k, rounds.finals[k])
            return rounds.finals
        finally:
            self._busy = False

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
        self._io = StreamIO(self._stream)  # closed, it raises; a stale fd number might not
        await trio.aclose_forcefully(self._stream)

    # -- internals --------------------------------------------------------------------

    async def _transactions(
        self,
        batch: Sequence[Sequence],
        on_done: Callable[[int, Sequence[Outcome]], None] | None = None,
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
                await exchange_transactions(
                    client, self._io, self._deadlines, self._timeouts, done.set
                )
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

    async def _guard(self, pump: Awaitable[list[Event]]) -> list[Event]:
        try:
            return await pump
        except BaseException:
            self._broken = True
            self._client.abort("failed")
            await self._close_transport()
            raise

    async def _pump(self, *stop: type, until: float = math.inf) -> list[Event]:
        return await exchange(
            self._client, self._io, self._deadlines, self._timeouts.data_block, stop, until
        )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "timed out waiting for the server"
    return f"connection failed: {exc!r}"
