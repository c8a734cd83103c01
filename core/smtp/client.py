"""The sans-IO SMTP client: bytes in, bytes and events out, no sockets, no clock.

Theory of operation
-------------------
The client is a session state machine (``State``) whose every legal move is listed in
``_TRANSITIONS``; anything else is a :class:`LocalProtocolError` (our bug) when we asked
for it, or a :class:`SMTPProtocolError` (their bug) when a reply caused it. Within the
TRANSACTION state the client keeps two queues of commands: *unsent* ones and *awaiting*
ones (sent, reply due). With PIPELINING (RFC 2920) the whole envelope, ``[RSET] MAIL RCPT..
DATA``, leaves in one write and the message follows the 354; without it one command leaves
per reply, and commands that can no longer matter (RCPT after a refused MAIL, DATA with no
accepted recipient) are never sent. With CHUNKING (RFC 3030) the message goes as one
``BDAT n LAST`` chunk, pipelined with the envelope when it is small, sent after the RCPT
replies when it is large (so a refused envelope does not cost the whole message).

The caller (a transport) loops: write ``data_to_send()``, read with the deadline of
``awaiting``, pass the bytes to ``receive_data()``, act on the returned events. On any
transport failure (timeout, EOF, reset, cancellation) it calls ``abort()``, which turns
whatever is still pending into stream-scope deferrals.
"""

from __future__ import annotations

import base64
import enum
import re
from collections import deque
from collections.abc import Callable, Sequence

from .capabilities import Capabilities
from .errors import LocalProtocolError, SMTPProtocolError
from .events import (
    AuthResult,
    Closed,
    Event,
    Ready,
    SessionRefused,
    StartTLS,
    StartTLSRefused,
    TransactionDone,
)
from .outcome import Outcome, Scope
from .reply import Reply, ReplyParser

__all__ = ["Phase", "SMTPClient", "State"]


class State(enum.Enum):
    """Where the session is."""

    __hash__ = object.__hash__  # members are singletons; Enum's own hash is Python code

    GREETING = "greeting"  # connected, waiting for the 220 banner
    EHLO = "ehlo"  # EHLO sent
    HELO = "helo"  # EHLO refused with 5yz, HELO sent
    READY = "ready"  # idle: a transaction, STARTTLS, AUTH or QUIT may start
    STARTTLS = "starttls"  # STARTTLS sent
    TLS = "tls"  # 220 to STARTTLS: the transport does the handshake
    AUTH = "auth"  # AUTH sent, maybe answering 334 challenges
    TRANSACTION = "transaction"  # MAIL .. end of message in flight
    QUIT = "quit"  # QUIT sent
    CLOSED = "closed"  # ended in order (QUIT answered, 421, refused): close the socket
    BROKEN = "broken"  # stream failure or protocol violation: close the socket


class _T(enum.Enum):
    """Triggers of state transitions: what we asked, or how a reply ended a command."""

    __hash__ = object.__hash__  # members are singletons; Enum's own hash is Python code

    OK = "ok"  # the awaited reply was positive
    FAILED = "failed"  # the awaited reply was negative
    FALLBACK = "fallback"  # EHLO refused with 5yz: try HELO
    MORE = "more"  # a reply arrived, more are due
    DONE = "done"  # the transaction has every reply it waits for
    SHUTDOWN = "shutdown"  # 421: the server is closing the connection
    EOF = "eof"  # the server closed the connection
    STARTTLS = "call starttls()"
    TLS_DONE = "call tls_established()"
    AUTH = "call login()"
    SEND = "call send_mail()"
    QUIT = "call quit()"


S = State
# Everything that moves the session lives here (h11 _state.py style).
_TRANSITIONS: dict[tuple[State, _T], State] = {
    (S.GREETING, _T.OK): S.EHLO,
    (S.GREETING, _T.FAILED): S.CLOSED,
    (S.EHLO, _T.OK): S.READY,
    (S.EHLO, _T.FALLBACK): S.HELO,
    (S.EHLO, _T.FAILED): S.CLOSED,
    (S.HELO, _T.OK): S.READY,
    (S.HELO, _T.FAILED): S.CLOSED,
    (S.READY, _T.STARTTLS): S.STARTTLS,
    (S.STARTTLS, _T.OK): S.TLS,
    (S.STARTTLS, _T.FAILED): S.READY,
    (S.TLS, _T.TLS_DONE): S.EHLO,
    (S.READY, _T.AUTH): S.AUTH,
    (S.AUTH, _T.MORE): S.AUTH,
    (S.AUTH, _T.OK): S.READY,
    (S.AUTH, _T.FAILED): S.READY,
    (S.READY, _T.SEND): S.TRANSACTION,
    (S.TRANSACTION, _T.MORE): S.TRANSACTION,
    (S.TRANSACTION, _T.DONE): S.READY,
    (S.TRANSACTION, _T.FAILED): S.CLOSED,
    (S.READY, _T.QUIT): S.QUIT,
    (S.QUIT, _T.OK): S.CLOSED,
    (S.QUIT, _T.FAILED): S.CLOSED,
    (S.READY, _T.EOF): S.CLOSED,  # idle connection closed by the server
    (S.QUIT, _T.EOF): S.CLOSED,
    (S.CLOSED, _T.EOF): S.CLOSED,
}
for _s in (S.GREETING, S.EHLO, S.HELO, S.READY, S.STARTTLS, S.AUTH, S.TRANSACTION, S.QUIT):
    _TRANSITIONS[_s, _T.SHUTDOWN] = S.CLOSED  # RFC 5321 3.8: 421 may come at any time
del _s
_ESTABLISHING = frozenset({S.GREETING, S.EHLO, S.HELO})


class Phase(enum.Enum):
    """Which reply is awaited: the transport picks its deadline from this."""

    __hash__ = object.__hash__  # members are singletons; Enum's own hash is Python code

    GREETING = "greeting"
    EHLO = "ehlo"
    HELO = "helo"
    STARTTLS = "starttls"
    AUTH = "auth"
    RSET = "rset"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"  # the 354 to DATA
    DATA_END = "data_end"  # the reply to the final dot, or to BDAT ... LAST
    QUIT = "quit"


# Enum members as module constants: ``State.READY`` costs ~50 ns a lookup in 3.11 (the
# EnumType attribute machinery), a module global ~7 ns; the hot path uses dozens.
_P_AUTH = Phase.AUTH
_P_DATA = Phase.DATA
_P_DATA_END = Phase.DATA_END
_P_EHLO = Phase.EHLO
_P_GREETING = Phase.GREETING
_P_HELO = Phase.HELO
_P_MAIL = Phase.MAIL
_P_QUIT = Phase.QUIT
_P_RCPT = Phase.RCPT
_P_RSET = Phase.RSET
_P_STARTTLS = Phase.STARTTLS
_S_BROKEN = State.BROKEN
_S_CLOSED = State.CLOSED
_S_GREETING = State.GREETING
_S_QUIT = State.QUIT
_S_READY = State.READY
_S_TLS = State.TLS

# RFC 5321 4.1.2 forbids these in a path; refusing them also stops command injection.
_BAD_PATH = re.compile(r"[\x00-\x20\x7f<>]")
_UTF8_REFUSED = (5, 6, 7)  # RFC 6533: non-ASCII address not permitted
_TOO_BIG = (5, 3, 4)  # RFC 3463: message too big for system


class _Transaction:
    __slots__ = (
        "accepted",
        "bdat",
        "index",
        "leaves_open",
        "mail_ok",
        "message",
        "open",
        "outcomes",
        "recipients",
        "unknown",
    )

    def __init__(self, index: int, recipients: Sequence[str], message: bytes) -> None:
        self.index = index
        self.recipients = list(recipients)
        self.outcomes: list[Outcome | None] = [None] * len(self.recipients)
        self.accepted: list[int] = []
        self.mail_ok: bool | None = None
        self.unknown = 0  # RCPTs sent or to send whose reply is not in yet
        self.message = message
        self.open = 0  # commands queued or sent whose reply is not handled yet
        self.bdat = False
        # The server may still hold this transaction after its last command (a refused
        # DATA or BDAT, no accepted recipient): the next MAIL needs an RSET first.
        self.leaves_open = False

    def fail_pending(self, make: Callable[[str], Outcome]) -> None:
        for i, outcome in enumerate(self.outcomes):
            if outcome is None:
                self.outcomes[i] = make(self.recipients[i])


class _Command:
    __slots__ = ("discard", "line", "phase", "pipelinable", "rcpt", "txn")

    def __init__(
        self,
        phase: Phase,
        line: bytes,
        txn: _Transaction | None = None,
        rcpt: int = -1,
        pipelinable: bool = True,
    ) -> None:
        self.phase = phase
        self.line = line
        self.txn = txn
        self.rcpt = rcpt  # index of the recipient for RCPT
        self.pipelinable = pipelinable
        self.discard = False  # the reply does not matter (a lone dot after a wrong 354)


class SMTPClient:
    """One SMTP client session over one connection.

    ``ehlo_name`` is our host name for EHLO/HELO. ``data_encoder`` turns a message into
    the DATA payload (line ends normalized, dot-stuffed, ``.\\r\\n`` appended); by default
    ``salvo.ext.mime.smtp_data``. Messages up to ``bdat_pipeline_limit`` octets are
    pipelined with the envelope when BDAT is used.
    """

    def __init__(
        self,
        ehlo_name: str,
        *,
        data_encoder: Callable[[bytes], bytes] | None = None,
        bdat_pipeline_limit: int = 64 * 1024,
    ) -> None:
        if _BAD_PATH.search(ehlo_name) or not ehlo_name:
            raise LocalProtocolError(f"invalid EHLO name {ehlo_name!r}")
        self._ehlo_name = ehlo_name
        self._encoder = data_encoder
        self._bdat_limit = bdat_pipeline_limit
        self._state = _S_GREETING
        self._parser = ReplyParser()
        self._out = bytearray()
        self._unsent: deque[_Command] = deque()
        self._awaiting: deque[_Command] = deque([_Command(_P_GREETING, b"")])
        self._txns: deque[_Transaction] = deque()  # unfinished, in wire order
        self._wire_txn: _Transaction | None = None  # owner of the last command sent
        self._data_waits = 0  # DATA commands sent whose 354 is not in: a group ends there
        self._events: list[Event] = []
        self._auth_steps: deque[bytes] = deque()
        self.capabilities = Capabilities()
        self.tls = False
        self.reply_count = 0
        self.splits = 0  # recipients refused as too many for one transaction, so far
        self.error: SMTPProtocolError | None = None  # why the session is BROKEN, if it is

    # -- what the transport asks ------------------------------------------------------

    @property
    def state(self) -> State:
        """The session state."""
        return self._state

    @property
    def awaiting(self) -> Phase | None:
        """The reply the server owes us next (its deadline applies), or None."""
        return self._awaiting[0].phase if self._awaiting else None

    @property
    def reusable(self) -> bool:
        """Another transaction may start on this connection."""
        return self._state is _S_READY

    def data_to_send(self) -> bytes | bytearray:
        """Bytes to write to the server now, in order; empties the outbound buffer.

        The buffer itself is handed over (no copy); the client starts a new one.
        """
        out = self._out
        if not out:
            return b""
        self._out = bytearray()
        return out

    def receive_data(self, data: bytes) -> list[Event]:
        """Take bytes read from the server (``b""`` at EOF); return what happened."""
        if self._state is _S_BROKEN:
            raise LocalProtocolError("the connection is broken; close it")
        if self._state is _S_CLOSED:
            return []  # the 221 after a refusal, or chatter after 421: nothing to act on
        if self._state is _S_TLS:
            raise LocalProtocolError("plaintext after STARTTLS; do the handshake first")
        if not data:
            return self._eof()
        replies, error = self._parser.feed_partial(data)
        events = self._events = []
        try:
            for reply in replies:
                self.reply_count += 1
                self._on_reply(reply)
                if self._state is _S_TLS or self._state is _S_CLOSED:
                    return events  # whatever follows was read ahead and must not be trusted
        except SMTPProtocolError as exc:
            error = exc
        if error is not None:
            self._state = _S_BROKEN
            self.error = error
            self._unsent.clear()
            self._awaiting.clear()
            if not any(isinstance(e, TransactionDone) for e in events):
                raise error
            # Transactions complete before the server went wrong keep their outcomes (a
            # 250 to the dot means delivered); the connection is BROKEN, and abort()
            # defers what is still pending.
        return events

    def abort(self, reason: str) -> list[Event]:
        """The connection failed (timeout, reset, cancelled...): give up on it.

        Returns a :class:`TransactionDone` for every transaction still in flight, its
        pending recipients deferred with stream scope. Idempotent.
        """
        self._state = _S_BROKEN
        self._unsent.clear()
        self._awaiting.clear()
        self._events = []
        return self._finish(lambda r: Outcome.deferred(r, Scope.STREAM, reason))

    # -- what the caller asks -----------------------------------------------------------

    def starttls(self) -> None:
        """Send STARTTLS (RFC 3207); the server must have offered it."""
        if not self.capabilities.starttls or self.tls:
            raise LocalProtocolError("STARTTLS not offered, or TLS already on")
        self._move(_T.STARTTLS)
        self._command(_P_STARTTLS, b"STARTTLS\r\n")

    def tls_established(self) -> None:
        """The TLS handshake is done: forget what was said in plaintext, EHLO again."""
        self._move(_T.TLS_DONE)
        self._parser.clear()
        self.tls = True
        self.capabilities = Capabilities()
        self._command(_P_EHLO, b"EHLO %s\r\n" % self._ehlo_name.encode())

    def login(self, username: str, password: str, *, allow_plaintext: bool = False) -> None:
        """Authenticate with AUTH PLAIN, or LOGIN when PLAIN is not offered (RFC 4954)."""
        if not (self.tls or allow_plaintext):
            raise LocalProtocolError("refusing to send a password without TLS")
        user, secret = username.encode(), password.encode()
        if "PLAIN" in self.capabilities.auth:
            token = base64.b64encode(b"\0" + user + b"\0" + secret)
            line, steps = b"AUTH PLAIN " + token + b"\r\n", [token]
        elif "LOGIN" in self.capabilities.auth:
            line = b"AUTH LOGIN " + base64.b64encode(user) + b"\r\n"
            steps = [base64.b64encode(secret)]
        else:
            raise LocalProtocolError("the server offers neither AUTH PLAIN nor AUTH LOGIN")
        self._move(_T.AUTH)
        self._auth_steps = deque(steps)
        self._command(_P_AUTH, line)

    def quit(self) -> None:
        """Send QUIT; a 221 (or EOF) then closes the session."""
        self._move(_T.QUIT)
        self._command(_P_QUIT, b"QUIT\r\n")

    def send_mail(
        self,
        mail_from: str,
        recipients: Sequence[str],
        message: bytes,
        *,
        smtputf8: bool = False,
    ) -> list[Event]:
        """Start one mail transaction; the events come back from ``receive_data``.

        ``message`` is the whole RFC 5322 message with CRLF line ends, not dot-stuffed.
        ``smtputf8`` says its headers need SMTPUTF8 even if the addresses are ASCII.
        Recipients refused locally (SMTPUTF8 or SIZE the server lacks, bad syntax, over
        the server's RCPTMAX) get their outcome without a byte sent; if none is left the
        :class:`TransactionDone` is returned at once.
        """
        return self.send_many(((mail_from, recipients, message, smtputf8),))

    def send_many(self, transactions: Sequence[Sequence]) -> list[Event]:
        """Start several mail transactions at once, pipelined across transactions.

        Each item is ``(mail_from, recipients, message)`` or ``(mail_from, recipients,
        message, smtputf8)``, as for :meth:`send_mail`. Every transaction ends in one
        :class:`TransactionDone` whose ``index`` is its position here; those refused
        entirely without a byte sent are returned at once, the others come back from
        ``receive_data`` in order.

        With PIPELINING (RFC 2920 3.1) the message and its final dot are followed in the
        same write by the next transaction's ``MAIL RCPT.. DATA``; with CHUNKING the
        whole batch can leave in one write, an ``RSET`` between transactions (the state
        after a failed ``BDAT .. LAST`` is undefined in RFC 3030, and the next MAIL is
        already on its way when that failure comes back).
        """
        if not transactions:
            raise LocalProtocolError("send_many needs at least one transaction")
        for item in transactions:
            if not item[1]:
                raise LocalProtocolError("a transaction needs at least one recipient")
        self._move(_T.SEND)
        events = self._events = []
        for index, item in enumerate(transactions):
            self._queue(index, item[0], item[1], item[2], len(item) > 3 and item[3])
        if self._txns:
            self._flush()
        else:
            self._move(_T.DONE)
        return events

    # -- internals --------------------------------------------------------------------

    def _queue(
        self, index: int, mail_from: str, recipients: Sequence[str], message: bytes, smtputf8: bool
    ) -> None:
        caps = self.capabilities
        txn = _Transaction(index, recipients, message)
        utf8 = smtputf8 or not mail_from.isascii()
        if _BAD_PATH.search(mail_from):
            esc = (5, 1, 7)
            txn.fail_pending(lambda r: Outcome.bounced(r, Scope.MESSAGE, "bad sender", esc))
        elif utf8 and not caps.smtputf8:
            text = "the message needs SMTPUTF8, which the server does not offer"
            txn.fail_pending(lambda r: Outcome.bounced(r, Scope.MESSAGE, text, _UTF8_REFUSED))
        elif caps.size is not None and len(message) > caps.size:
            text = f"message of {len(message)} octets over the server's SIZE {caps.size}"
            txn.fail_pending(lambda r: Outcome.bounced(r, Scope.MESSAGE, text, _TOO_BIG))
        rcpts = []
        for i, rcpt in enumerate(txn.recipients):
            if txn.outcomes[i] is not None:
                continue
            if _BAD_PATH.search(rcpt) or not rcpt:
                txn.outcomes[i] = Outcome.bounced(rcpt, Scope.RECIPIENT, "bad address", (5, 1, 3))
            elif not rcpt.isascii() and not caps.smtputf8:
                text = "non-ASCII address and the server does not offer SMTPUTF8"
                txn.outcomes[i] = Outcome.bounced(rcpt, Scope.RECIPIENT, text, _UTF8_REFUSED)
            elif caps.rcpt_max is not None and len(rcpts) >= caps.rcpt_max:
                text = f"over the server's {caps.rcpt_max} recipients per transaction"
                txn.outcomes[i] = Outcome.split_off(rcpt, text)
                self.splits += 1
            else:
                utf8 = utf8 or not rcpt.isascii()
                rcpts.append(i)
        if not rcpts:
            self._events.append(TransactionDone(tuple(txn.outcomes), txn.index))  # type: ignore[arg-type]
            return
        self._txns.append(txn)
        self._envelope(txn, mail_from, rcpts, utf8)

    def _move(self, trigger: _T) -> None:
        new = _TRANSITIONS.get((self._state, trigger))
        if new is None:
            if trigger.value.startswith("call "):
                raise LocalProtocolError(f"cannot {trigger.value[5:]} in state {self._state.name}")
            state, self._state = self._state, _S_BROKEN
            raise SMTPProtocolError(f"unexpected {trigger.value} in state {state.name}")
        self._state = new

    def _command(self, phase: Phase, line: bytes, *, pipelinable: bool = True) -> None:
        self._unsent.append(_Command(phase, line, None, -1, pipelinable))
        self._flush()

    def _envelope(self, txn: _Transaction, mail_from: str, rcpts: list[int], utf8: bool) -> None:
        caps, unsent = self.capabilities, self._unsent
        params = []
        if caps.size_offered:
            params.append(b" SIZE=%d" % len(txn.message))
        if caps.eightbitmime and not txn.message.isascii():
            params.append(b" BODY=8BITMIME")
        if utf8:
            params.append(b" SMTPUTF8")
        line = b"MAIL FROM:<%s>%s\r\n" % (mail_from.encode(), b"".join(params))
        unsent.append(_Command(_P_MAIL, line, txn))
        for i in rcpts:
            rcpt = txn.recipients[i].encode()
            unsent.append(_Command(_P_RCPT, b"RCPT TO:<%s>\r\n" % rcpt, txn, i))
        txn.unknown = len(rcpts)
        txn.open = len(rcpts) + 2
        if caps.chunking:
            txn.bdat = True
            message = txn.message
            if not message.endswith(b"\r\n"):
                message += b"\r\n"
            small = len(message) <= self._bdat_limit
            line = b"BDAT %d LAST\r\n%s" % (len(message), message)
            unsent.append(_Command(_P_DATA_END, line, txn, -1, small))
        else:
            unsent.append(_Command(_P_DATA, b"DATA\r\n", txn))

    def _flush(self) -> None:
        """Move commands from unsent to the wire, as far as pipelining allows.

        A group ends at DATA (RFC 2920 3.1): nothing follows it before its 354 is in
        and the message is written. The first command of a transaction is preceded by
        ``RSET`` when the transaction sent before it may have left the server with an
        open one.
        """
        pipelining = self.capabilities.pipelining
        unsent, awaiting = self._unsent, self._awaiting
        while unsent:
            cmd = unsent[0]
            if awaiting and (self._data_waits or not (pipelining and cmd.pipelinable)):
                break
            txn = cmd.txn
            if txn is not None and txn is not self._wire_txn:
                prev, self._wire_txn = self._wire_txn, txn
                if prev is not None and (prev.leaves_open or (prev.bdat and prev.open)):
                    txn.open += 1
                    unsent.appendleft(_Command(_P_RSET, b"RSET\r\n", txn))
                    continue
            unsent.popleft()
            # Pointless only once MAIL was refused or every RCPT is answered.
            if (
                txn is not None
                and (txn.mail_ok is False or not txn.unknown)
                and self._pointless(cmd, txn)
            ):
                continue
            self._out += cmd.line
            awaiting.append(cmd)
            if cmd.phase is _P_DATA:
                self._data_waits += 1

    def _pointless(self, cmd: _Command, txn: _Transaction) -> bool:
        """A command whose result is already known from earlier replies."""
        if cmd.phase is _P_RCPT and txn.mail_ok is False:
            txn.unknown -= 1
            self._settle(txn)
            return True
        if cmd.phase in (_P_DATA, _P_DATA_END) and txn.unknown == 0 and not txn.accepted:
            txn.leaves_open = bool(txn.mail_ok)
            self._settle(txn)
            return True
        return False

    def _settle(self, txn: _Transaction) -> None:
        """One command of ``txn`` is answered (or dropped); the last one ends it."""
        txn.open -= 1
        if txn.open:
            return
        txns = self._txns
        if txns[0] is txn:
            txns.popleft()
        else:  # pragma: no cover - transactions end in wire order
            txns.remove(txn)
        self._events.append(TransactionDone(tuple(txn.outcomes), txn.index))  # type: ignore[arg-type]

    def _eof(self) -> list[Event]:
        if self._state in (_S_READY, _S_QUIT):
            self._move(_T.EOF)
            return [Closed(None)]
        what = self.awaiting.value.upper() if self.awaiting else self._state.name
        self._state = _S_BROKEN
        raise SMTPProtocolError(f"connection closed by the server while waiting for {what}")

    def _on_reply(self, reply: Reply) -> None:
        if not self._awaiting:
            if reply.code == 421:
                self._move(_T.SHUTDOWN)
                self._events.append(Closed(reply))
                return
            self._state = _S_BROKEN
            raise SMTPProtocolError(f"reply out of turn: {reply}")
        cmd = self._awaiting.popleft()
        if reply.code == 421 and cmd.phase is not _P_QUIT:
            self._shutdown(reply)
            return
        _HANDLERS[cmd.phase](self, reply, cmd)

    def _shutdown(self, reply: Reply) -> None:
        refused = self._state in _ESTABLISHING
        self._move(_T.SHUTDOWN)
        self._unsent.clear()
        self._awaiting.clear()
        self._finish(lambda r: Outcome.deferred(r, Scope.SITE, "", reply))
        self._events.append(SessionRefused(reply) if refused else Closed(reply))

    def _refused(self, reply: Reply) -> None:
        self._move(_T.FAILED)
        self._out += b"QUIT\r\n"  # RFC 5321 3.1: a server that refused waits for QUIT
        self._events.append(SessionRefused(reply))

    def _on_greeting(self, reply: Reply, cmd: _Command) -> None:
        if reply.code != 220:
            return self._refused(reply)
        self._move(_T.OK)
        self._command(_P_EHLO, b"EHLO %s\r\n" % self._ehlo_name.encode())

    def _on_ehlo(self, reply: Reply, cmd: _Command) -> None:
        if reply.is_positive:
            self._move(_T.OK)
            self.capabilities = Capabilities.from_ehlo(reply)
            self._events.append(Ready(self.capabilities))
        elif reply.is_permanent:  # RFC 5321 4.1.4: an old server; HELO will do
            self._move(_T.FALLBACK)
            self._command(_P_HELO, b"HELO %s\r\n" % self._ehlo_name.encode())
        else:
            self._refused(reply)

    def _on_helo(self, reply: Reply, cmd: _Command) -> None:
        if not reply.is_positive:
            return self._refused(reply)
        self._move(_T.OK)
        self.capabilities = Capabilities()
        self._events.append(Ready(self.capabilities))

    def _on_starttls(self, reply: Reply, cmd: _Command) -> None:
        if reply.code != 220:
            self._move(_T.FAILED)
            self._events.append(StartTLSRefused(reply))
            return
        self._move(_T.OK)
        self._parser.clear()  # CVE-2011-0411: nothing read before the handshake counts
        self._events.append(StartTLS())

    def _on_auth(self, reply: Reply, cmd: _Command) -> None:
        if reply.code == 334:  # a challenge; with nothing left to say, cancel (RFC 4954 4)
            self._move(_T.MORE)
            step = self._auth_steps.popleft() if self._auth_steps else b"*"
            self._command(_P_AUTH, step + b"\r\n")
            return
        self._auth_steps.clear()
        self._move(_T.OK if reply.is_positive else _T.FAILED)
        self._events.append(AuthResult(reply))

    def _on_quit(self, reply: Reply, cmd: _Command) -> None:
        self._move(_T.OK if reply.is_positive else _T.FAILED)
        self._events.append(Closed(reply))

    def _on_rset(self, reply: Reply, cmd: _Command) -> None:
        if reply.is_positive:
            self._settle(cmd.txn)  # type: ignore[arg-type]
            return self._progress()
        # The server cannot clear its state: nothing on this connection can be trusted.
        self._move(_T.FAILED)
        self._unsent.clear()
        self._awaiting.clear()
        self._out += b"QUIT\r\n"
        self._finish(lambda r: Outcome.deferred(r, Scope.SITE, "RSET failed", reply))
        self._events.append(Closed(reply))

    def _on_mail(self, reply: Reply, cmd: _Command) -> None:
        txn = cmd.txn
        assert txn is not None
        txn.mail_ok = ok = 200 <= reply.code < 300
        if not ok:  # Postfix smtp_mesg_fail: sender or message refused
            txn.fail_pending(lambda r: Outcome.from_reply(r, reply, Scope.MESSAGE))
        self._settle(txn)
        self._progress()

    def _on_rcpt(self, reply: Reply, cmd: _Command) -> None:
        txn = cmd.txn
        assert txn is not None
        txn.unknown -= 1
        i = cmd.rcpt
        if txn.outcomes[i] is not None:
            pass  # MAIL was refused: this 503 adds nothing
        elif 200 <= reply.code < 300:
            txn.accepted.append(i)
        elif _too_many(reply, bool(txn.accepted)):
            txn.outcomes[i] = Outcome.split_off(txn.recipients[i], reply.text, reply)
            self.splits += 1
        else:
            txn.outcomes[i] = Outcome.from_reply(txn.recipients[i], reply, Scope.RECIPIENT)
        self._settle(txn)
        self._progress()

    def _on_data(self, reply: Reply, cmd: _Command) -> None:
        txn = cmd.txn
        assert txn is not None
        self._data_waits -= 1
        if reply.code == 354:
            # The DATA command becomes the wait for the reply to the final dot.
            cmd.phase = _P_DATA_END
            if txn.mail_ok and txn.accepted:
                self._out += self._encode(txn.message)
            else:  # RFC 2920 3.1: no recipient, yet 354: send an empty message and reset
                self._out += b".\r\n"
                cmd.discard = True
                txn.leaves_open = True
            self._awaiting.append(cmd)
            return self._progress()
        txn.leaves_open = bool(txn.mail_ok)
        for i in txn.accepted:
            txn.outcomes[i] = Outcome.from_reply(txn.recipients[i], reply, Scope.MESSAGE)
        self._settle(txn)
        self._progress()

    def _on_data_end(self, reply: Reply, cmd: _Command) -> None:
        txn = cmd.txn
        assert txn is not None
        if not cmd.discard:
            recipients, outcomes = txn.recipients, txn.outcomes
            if 200 <= reply.code < 300:
                for i in txn.accepted:
                    outcomes[i] = Outcome.delivered(recipients[i], reply)
            else:
                for i in txn.accepted:
                    outcomes[i] = Outcome.from_reply(recipients[i], reply, Scope.MESSAGE)
                if txn.bdat:
                    txn.leaves_open = True  # RFC 3030: after a failed BDAT the state is unknown
        self._settle(txn)
        self._progress()

    def _progress(self) -> None:
        # While a DATA waits for its 354 nothing more can go (the batch's next envelopes
        # wait behind it), and TRANSACTION stays TRANSACTION while any is in flight.
        if self._unsent and not (self._data_waits and self._awaiting):
            self._flush()
        if not self._txns:
            self._move(_T.DONE)

    def _finish(self, pending: Callable[[str], Outcome] | None) -> list[Event]:
        """End every transaction in flight, ``pending`` giving the missing outcomes."""
        events, txns = self._events, self._txns
        if not txns:
            return []
        done = []
        while txns:
            txn = txns.popleft()
            if pending is not None:
                txn.fail_pending(pending)
            done.append(TransactionDone(tuple(txn.outcomes), txn.index))  # type: ignore[arg-type]
        self._data_waits = 0
        events += done
        return done

    def _encode(self, message: bytes) -> bytes:
        if self._encoder is None:
            from salvo.ext.mime import smtp_data  # the native encoder, loaded on first use

            self._encoder = smtp_data
        return self._encoder(message)


_HANDLERS = {phase: getattr(SMTPClient, "_on_" + phase.value) for phase in Phase}


def _too_many(reply: Reply, some_accepted: bool) -> bool:
    """RFC 5321 4.5.3.1.10: 452 (or the old 552) for too many recipients in one go."""
    if reply.esc is not None:
        return reply.esc[1:] == (5, 3) and reply.code in (452, 552)
    return reply.code == 452 and some_accepted
