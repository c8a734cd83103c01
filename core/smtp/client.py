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
from dataclasses import dataclass

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


# RFC 5321 4.1.2 forbids these in a path; refusing them also stops command injection.
_BAD_PATH = re.compile(r"[\x00-\x20\x7f<>]")
_UTF8_REFUSED = (5, 6, 7)  # RFC 6533: non-ASCII address not permitted
_TOO_BIG = (5, 3, 4)  # RFC 3463: message too big for system


@dataclass(slots=True)
class _Command:
    phase: Phase
    line: bytes
    rcpt: int = -1  # index of the recipient for RCPT
    pipelinable: bool = True
    discard: bool = False  # the reply does not matter (a lone dot after a wrong 354)


class _Transaction:
    __slots__ = ("accepted", "mail_ok", "message", "outcomes", "recipients", "unknown")

    def __init__(self, recipients: Sequence[str], message: bytes) -> None:
        self.recipients = list(recipients)
        self.outcomes: list[Outcome | None] = [None] * len(self.recipients)
        self.accepted: list[int] = []
        self.mail_ok: bool | None = None
        self.unknown = 0  # RCPTs sent or to send whose reply is not in yet
        self.message = message

    def fail_pending(self, make: Callable[[str], Outcome]) -> None:
        for i, outcome in enumerate(self.outcomes):
            if outcome is None:
                self.outcomes[i] = make(self.recipients[i])


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
        self._state = State.GREETING
        self._parser = ReplyParser()
        self._out = bytearray()
        self._unsent: deque[_Command] = deque()
        self._awaiting: deque[_Command] = deque([_Command(Phase.GREETING, b"")])
        self._txn: _Transaction | None = None
        self._need_rset = False
        self._auth_steps: deque[bytes] = deque()
        self.capabilities = Capabilities()
        self.tls = False
        self.reply_count = 0

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
        return self._state is State.READY

    def data_to_send(self) -> bytes:
        """Bytes to write to the server now, in order; empties the outbound buffer."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> list[Event]:
        """Take bytes read from the server (``b""`` at EOF); return what happened."""
        if self._state is State.BROKEN:
            raise LocalProtocolError("the connection is broken; close it")
        if self._state is State.CLOSED:
            return []  # the 221 after a refusal, or chatter after 421: nothing to act on
        if self._state is State.TLS:
            raise LocalProtocolError("plaintext after STARTTLS; do the handshake first")
        if not data:
            return self._eof()
        replies, error = self._parser.feed_partial(data)
        events: list[Event] = []
        try:
            for reply in replies:
                self.reply_count += 1
                events += self._on_reply(reply)
                if self._state in (State.TLS, State.CLOSED):
                    return events  # whatever follows was read ahead and must not be trusted
        except SMTPProtocolError as exc:
            error = exc
        if error is not None:
            self._state = State.BROKEN
            self._unsent.clear()
            self._awaiting.clear()
            if not any(isinstance(e, TransactionDone) for e in events):
                raise error
            # The transaction was complete before the server went wrong: its outcomes
            # stand (a 250 to the dot means delivered); the connection is BROKEN.
        return events

    def abort(self, reason: str) -> list[Event]:
        """The connection failed (timeout, reset, cancelled...): give up on it.

        Returns a :class:`TransactionDone` whose pending recipients are deferred with
        stream scope, if a transaction was in flight. Idempotent.
        """
        self._state = State.BROKEN
        self._unsent.clear()
        self._awaiting.clear()
        return self._finish(lambda r: Outcome.deferred(r, Scope.STREAM, reason))

    # -- what the caller asks -----------------------------------------------------------

    def starttls(self) -> None:
        """Send STARTTLS (RFC 3207); the server must have offered it."""
        if not self.capabilities.starttls or self.tls:
            raise LocalProtocolError("STARTTLS not offered, or TLS already on")
        self._move(_T.STARTTLS)
        self._command(Phase.STARTTLS, b"STARTTLS\r\n")

    def tls_established(self) -> None:
        """The TLS handshake is done: forget what was said in plaintext, EHLO again."""
        self._move(_T.TLS_DONE)
        self._parser.clear()
        self.tls = True
        self.capabilities = Capabilities()
        self._command(Phase.EHLO, b"EHLO %s\r\n" % self._ehlo_name.encode())

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
        self._command(Phase.AUTH, line)

    def quit(self) -> None:
        """Send QUIT; a 221 (or EOF) then closes the session."""
        self._move(_T.QUIT)
        self._command(Phase.QUIT, b"QUIT\r\n")

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
        if not recipients:
            raise LocalProtocolError("a transaction needs at least one recipient")
        self._move(_T.SEND)
        caps = self.capabilities
        txn = self._txn = _Transaction(recipients, message)
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
            else:
                utf8 = utf8 or not rcpt.isascii()
                rcpts.append(i)
        if not rcpts:
            self._move(_T.DONE)
            return self._finish(None)
        self._envelope(mail_from, rcpts, utf8)
        self._flush()
        return []

    # -- internals --------------------------------------------------------------------

    def _move(self, trigger: _T) -> None:
        new = _TRANSITIONS.get((self._state, trigger))
        if new is None:
            if trigger.value.startswith("call "):
                raise LocalProtocolError(f"cannot {trigger.value[5:]} in state {self._state.name}")
            state, self._state = self._state, State.BROKEN
            raise SMTPProtocolError(f"unexpected {trigger.value} in state {state.name}")
        self._state = new

    def _command(self, phase: Phase, line: bytes, *, pipelinable: bool = True) -> None:
        self._unsent.append(_Command(phase, line, pipelinable=pipelinable))
        self._flush()

    def _envelope(self, mail_from: str, rcpts: list[int], utf8: bool) -> None:
        txn, caps = self._txn, self.capabilities
        assert txn is not None
        if self._need_rset:
            self._unsent.append(_Command(Phase.RSET, b"RSET\r\n"))
            self._need_rset = False
        params = []
        if caps.size_offered:
            params.append(b" SIZE=%d" % len(txn.message))
        if caps.eightbitmime and not txn.message.isascii():
            params.append(b" BODY=8BITMIME")
        if utf8:
            params.append(b" SMTPUTF8")
        line = b"MAIL FROM:<%s>%s\r\n" % (mail_from.encode(), b"".join(params))
        self._unsent.append(_Command(Phase.MAIL, line))
        for i in rcpts:
            rcpt = txn.recipients[i].encode()
            self._unsent.append(_Command(Phase.RCPT, b"RCPT TO:<%s>\r\n" % rcpt, rcpt=i))
        txn.unknown = len(rcpts)
        if caps.chunking:
            message = txn.message
            if not message.endswith(b"\r\n"):
                message += b"\r\n"
            small = len(message) <= self._bdat_limit
            line = b"BDAT %d LAST\r\n%s" % (len(message), message)
            self._unsent.append(_Command(Phase.DATA_END, line, pipelinable=small))
        else:
            self._unsent.append(_Command(Phase.DATA, b"DATA\r\n"))

    def _flush(self) -> None:
        """Move commands from unsent to the wire, as far as pipelining allows."""
        pipelining = self.capabilities.pipelining
        txn = self._txn
        while self._unsent:
            cmd = self._unsent[0]
            if self._awaiting and not (pipelining and cmd.pipelinable):
                break
            self._unsent.popleft()
            if txn is not None and self._pointless(cmd, txn):
                continue
            self._out += cmd.line
            self._awaiting.append(cmd)

    def _pointless(self, cmd: _Command, txn: _Transaction) -> bool:
        """A command whose result is already known from earlier replies."""
        if cmd.phase is Phase.RCPT and txn.mail_ok is False:
            txn.unknown -= 1
            return True
        if cmd.phase in (Phase.DATA, Phase.DATA_END) and txn.unknown == 0 and not txn.accepted:
            self._need_rset = bool(txn.mail_ok)
            return True
        return False

    def _eof(self) -> list[Event]:
        if self._state in (State.READY, State.QUIT):
            self._move(_T.EOF)
            return [Closed(None)]
        what = self.awaiting.value.upper() if self.awaiting else self._state.name
        self._state = State.BROKEN
        raise SMTPProtocolError(f"connection closed by the server while waiting for {what}")

    def _on_reply(self, reply: Reply) -> list[Event]:
        if not self._awaiting:
            if reply.code == 421:
                self._move(_T.SHUTDOWN)
                return [Closed(reply)]
            self._state = State.BROKEN
            raise SMTPProtocolError(f"reply out of turn: {reply}")
        cmd = self._awaiting.popleft()
        if reply.code == 421 and cmd.phase is not Phase.QUIT:
            return self._shutdown(reply)
        return _HANDLERS[cmd.phase](self, reply, cmd)

    def _shutdown(self, reply: Reply) -> list[Event]:
        refused = self._state in _ESTABLISHING
        self._move(_T.SHUTDOWN)
        self._unsent.clear()
        self._awaiting.clear()
        events = self._finish(lambda r: Outcome.deferred(r, Scope.SITE, "", reply))
        return [*events, SessionRefused(reply) if refused else Closed(reply)]

    def _refused(self, reply: Reply) -> list[Event]:
        self._move(_T.FAILED)
        self._out += b"QUIT\r\n"  # RFC 5321 3.1: a server that refused waits for QUIT
        return [SessionRefused(reply)]

    def _on_greeting(self, reply: Reply, cmd: _Command) -> list[Event]:
        if reply.code != 220:
            return self._refused(reply)
        self._move(_T.OK)
        self._command(Phase.EHLO, b"EHLO %s\r\n" % self._ehlo_name.encode())
        return []

    def _on_ehlo(self, reply: Reply, cmd: _Command) -> list[Event]:
        if reply.is_positive:
            self._move(_T.OK)
            self.capabilities = Capabilities.from_ehlo(reply)
            return [Ready(self.capabilities)]
        if reply.is_permanent:  # RFC 5321 4.1.4: an old server; HELO will do
            self._move(_T.FALLBACK)
            self._command(Phase.HELO, b"HELO %s\r\n" % self._ehlo_name.encode())
            return []
        return self._refused(reply)

    def _on_helo(self, reply: Reply, cmd: _Command) -> list[Event]:
        if not reply.is_positive:
            return self._refused(reply)
        self._move(_T.OK)
        self.capabilities = Capabilities()
        return [Ready(self.capabilities)]

    def _on_starttls(self, reply: Reply, cmd: _Command) -> list[Event]:
        if reply.code != 220:
            self._move(_T.FAILED)
            return [StartTLSRefused(reply)]
        self._move(_T.OK)
        self._parser.clear()  # CVE-2011-0411: nothing read before the handshake counts
        return [StartTLS()]

    def _on_auth(self, reply: Reply, cmd: _Command) -> list[Event]:
        if reply.code == 334:  # a challenge; with nothing left to say, cancel (RFC 4954 4)
            self._move(_T.MORE)
            step = self._auth_steps.popleft() if self._auth_steps else b"*"
            self._command(Phase.AUTH, step + b"\r\n")
            return []
        self._auth_steps.clear()
        self._move(_T.OK if reply.is_positive else _T.FAILED)
        return [AuthResult(reply)]

    def _on_quit(self, reply: Reply, cmd: _Command) -> list[Event]:
        self._move(_T.OK if reply.is_positive else _T.FAILED)
        return [Closed(reply)]

    def _on_rset(self, reply: Reply, cmd: _Command) -> list[Event]:
        if reply.is_positive:
            return self._progress()
        # The server cannot clear its state: nothing on this connection can be trusted.
        self._move(_T.FAILED)
        self._unsent.clear()
        self._awaiting.clear()
        self._out += b"QUIT\r\n"
        events = self._finish(lambda r: Outcome.deferred(r, Scope.SITE, "RSET failed", reply))
        return [*events, Closed(reply)]

    def _on_mail(self, reply: Reply, cmd: _Command) -> list[Event]:
        txn = self._txn
        assert txn is not None
        txn.mail_ok = reply.is_positive
        if not txn.mail_ok:  # Postfix smtp_mesg_fail: sender or message refused
            txn.fail_pending(lambda r: Outcome.from_reply(r, reply, Scope.MESSAGE))
        return self._progress()

    def _on_rcpt(self, reply: Reply, cmd: _Command) -> list[Event]:
        txn = self._txn
        assert txn is not None
        txn.unknown -= 1
        rcpt = txn.recipients[cmd.rcpt]
        if txn.outcomes[cmd.rcpt] is not None:
            pass  # MAIL was refused: this 503 adds nothing
        elif reply.is_positive:
            txn.accepted.append(cmd.rcpt)
        elif _too_many(reply, bool(txn.accepted)):
            txn.outcomes[cmd.rcpt] = Outcome.split_off(rcpt, reply.text, reply)
        else:
            txn.outcomes[cmd.rcpt] = Outcome.from_reply(rcpt, reply, Scope.RECIPIENT)
        return self._progress()

    def _on_data(self, reply: Reply, cmd: _Command) -> list[Event]:
        txn = self._txn
        assert txn is not None
        if reply.code == 354:
            if txn.mail_ok and txn.accepted:
                self._out += self._encode(txn.message)
                self._awaiting.append(_Command(Phase.DATA_END, b""))
            else:  # RFC 2920 3.1: no recipient, yet 354: send an empty message and reset
                self._out += b".\r\n"
                self._awaiting.append(_Command(Phase.DATA_END, b"", discard=True))
                self._need_rset = True
            return self._progress()
        self._need_rset = bool(txn.mail_ok)
        for i in txn.accepted:
            txn.outcomes[i] = Outcome.from_reply(txn.recipients[i], reply, Scope.MESSAGE)
        return self._progress()

    def _on_data_end(self, reply: Reply, cmd: _Command) -> list[Event]:
        txn = self._txn
        assert txn is not None
        if not cmd.discard:
            for i in txn.accepted:
                rcpt = txn.recipients[i]
                if reply.is_positive:
                    txn.outcomes[i] = Outcome.delivered(rcpt, reply)
                else:
                    txn.outcomes[i] = Outcome.from_reply(rcpt, reply, Scope.MESSAGE)
            if cmd.line.startswith(b"BDAT") and not reply.is_positive:
                self._need_rset = True  # RFC 3030: after a failed BDAT the state is unknown
        return self._progress()

    def _progress(self) -> list[Event]:
        self._flush()
        if self._awaiting or self._unsent:
            self._move(_T.MORE)
            return []
        self._move(_T.DONE)
        return self._finish(None)

    def _finish(self, pending: Callable[[str], Outcome] | None) -> list[Event]:
        txn, self._txn = self._txn, None
        if txn is None:
            return []
        if pending is not None:
            txn.fail_pending(pending)
        return [TransactionDone(tuple(o for o in txn.outcomes if o is not None))]

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
