"""A sans-IO SMTP server: bytes in, replies and received messages out.

The feedback listener (:mod:`salvo.actors.feedback_listener`) drives it over Trio; no
socket, thread or clock here. One :class:`SMTPServer` per connection:

- :meth:`SMTPServer.greeting` is the first reply to send;
- :meth:`SMTPServer.receive` takes bytes as they arrive and returns what to do, in order:
  :class:`Reply` (send it; ``close`` after it when set) and :class:`Message` (a complete
  message: store it, then call :meth:`SMTPServer.stored` for its final reply). While a
  message waits for :meth:`SMTPServer.stored`, later input (pipelined commands) is kept
  and handled after it.

Commands: EHLO/HELO, MAIL (``SIZE``, ``BODY`` parameters), RCPT, DATA (dot-unstuffing),
RSET, NOOP, QUIT, VRFY (252), HELP. Advertised: PIPELINING, SIZE, 8BITMIME,
ENHANCEDSTATUSCODES. Bounded: command lines (``max_line``), the message (``max_size``,
refused at MAIL when announced, else at the end of DATA with 552 after reading it to
its end), recipients per message, messages per connection, bad commands per connection.
Unknown commands get 500, commands out of sequence 503. The only exception this module
raises is :class:`SMTPServerError`, for a caller that feeds a closed session.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import msgspec

from salvo.ext.errors import SalvoError

__all__ = ["Message", "Reply", "SMTPServer", "SMTPServerError"]

MAX_LINE = 1000  # octets of a command line, CRLF included (RFC 5321 allows 512)
MAX_BAD_COMMANDS = 10  # then 421 and close
MAX_RECIPIENTS = 100  # per message (RFC 5321 4.5.3.1.8: at least 100)
MAX_MESSAGES = 100  # per connection
# Commands per connection: each message takes a handful; more is a client that only talks
# (NOOP, RSET, VRFY...) to hold the connection.
MAX_COMMANDS = 1000

_PATH = re.compile(r"^\s*<([^<>\s]*)>\s*(.*)$")
_PARAM = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*)(?:=([!-<>-~]+))?$")


class SMTPServerError(SalvoError):
    """The caller used the session wrongly (input after it closed)."""


class Reply(msgspec.Struct, frozen=True):
    """One reply to send; ``close``: close the connection after sending it."""

    code: int
    text: str
    close: bool = False
    lines: tuple[str, ...] = ()  # extra lines before ``text`` (EHLO's extensions)

    def encode(self) -> bytes:
        out = [f"{self.code}-{line}\r\n" for line in self.lines]
        out.append(f"{self.code} {self.text}\r\n")
        return "".join(out).encode("ascii", "replace")


class Message(msgspec.Struct, frozen=True):
    """A complete message: the envelope and the content (dot-unstuffed, CRLF lines)."""

    mail_from: str
    rcpts: tuple[str, ...]
    data: bytes
    helo: str = ""


# States
_GREETED, _READY, _MAIL, _DATA, _STORING, _CLOSED = range(6)


class SMTPServer:
    """One SMTP session; see the module docstring.

    ``accept_rcpt(address) -> bool`` decides each RCPT (False: 550 5.7.1 relay denied).
    """

    def __init__(
        self,
        hostname: str,
        accept_rcpt: Callable[[str], bool],
        *,
        max_size: int = 10 * 1024 * 1024,
        max_line: int = MAX_LINE,
        max_recipients: int = MAX_RECIPIENTS,
        max_messages: int = MAX_MESSAGES,
        max_bad_commands: int = MAX_BAD_COMMANDS,
        max_commands: int = MAX_COMMANDS,
    ) -> None:
        self.hostname = hostname
        self._accept = accept_rcpt
        self.max_size = max_size
        self.max_line = max_line
        self.max_recipients = max_recipients
        self.max_messages = max_messages
        self.max_bad = max_bad_commands
        self.max_commands = max_commands
        self._commands = 0
        self._buf = bytearray()
        self._state = _GREETED
        self._helo = ""
        self._from = ""
        self._rcpts: list[str] = []
        self._data: list[bytes] = []
        self._size = 0
        self._too_big = False
        self._line_start = True  # DATA: the next byte starts a line
        self._skip_line = False  # a command line past max_line: drop up to its CRLF
        self._bad = 0
        self.messages = 0

    @property
    def closed(self) -> bool:
        return self._state == _CLOSED

    @property
    def in_data(self) -> bool:
        """Whether the session is reading a message (the caller's DATA deadline applies)."""
        return self._state == _DATA

    def greeting(self) -> Reply:
        return Reply(220, f"{self.hostname} ESMTP salvo feedback")

    def refuse(self, text: str = "4.7.0 too many connections, try later") -> Reply:
        """The reply for a connection the caller will not serve (it closes after)."""
        self._state = _CLOSED
        return Reply(421, f"{self.hostname} {text}", close=True)

    def timeout(self) -> Reply:
        """The reply when the caller's deadline passed; the session is closed."""
        self._state = _CLOSED
        return Reply(421, "4.4.2 timeout, closing", close=True)

    def receive(self, data: bytes) -> list[Reply | Message]:
        """Feed bytes; return the replies and messages they produce, in order."""
        if self._state == _CLOSED:
            raise SMTPServerError("the session is closed")
        self._buf += data
        return self._run()

    def stored(self, ok: bool, detail: str = "") -> list[Reply | Message]:
        """The final reply for the message last returned, then the input kept meanwhile.

        ``ok``: it is durably stored (250); else 451, the client tries again later.
        """
        if self._state != _STORING:
            raise SMTPServerError("no message is waiting to be stored")
        self._state = _READY
        self._reset()
        if ok:
            self.messages += 1
            out: list[Reply | Message] = [Reply(250, f"2.0.0 OK {detail}".rstrip())]
        else:
            out = [Reply(451, f"4.3.0 cannot store the message now, try later {detail}".rstrip())]
        return out + self._run()

    # -- input ---------------------------------------------------------------------------

    def _run(self) -> list[Reply | Message]:
        out: list[Reply | Message] = []
        while self._state not in (_STORING, _CLOSED):
            if self._state == _DATA:
                if not self._data_lines(out):
                    break
                continue
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) >= self.max_line and not self._skip_line:
                    self._skip_line = True
                    del self._buf[:]
                    self._bad_command(out, Reply(500, "5.5.2 line too long"))
                elif self._skip_line:
                    del self._buf[:]
                break
            line = bytes(self._buf[: end + 1])
            del self._buf[: end + 1]
            if self._skip_line:
                self._skip_line = False
                continue
            if len(line) > self.max_line:
                self._bad_command(out, Reply(500, "5.5.2 line too long"))
                continue
            self._command(line.rstrip(b"\r\n"), out)
        return out

    def _data_lines(self, out: list[Reply | Message]) -> bool:
        """Consume complete lines of DATA; False when more input is needed."""
        buf = self._buf
        while True:
            end = buf.find(b"\n")
            if end < 0:
                # A partial line: keep it, unless the message is already too big (then
                # only whether a line starts here matters).
                if self._size + len(buf) > self.max_size:
                    self._too_big = True
                    self._data.clear()
                    self._line_start = False
                    del buf[:]
                return False
            line = bytes(buf[: end + 1])
            del buf[: end + 1]
            starts = self._line_start
            # Only CRLF ends a line here: a bare LF followed by "." is content, not the
            # end of the message (no SMTP smuggling through this server).
            self._line_start = line.endswith(b"\r\n")
            if starts and line == b".\r\n":
                self._end_of_data(out)
                return True
            if starts and line.startswith(b"."):
                line = line[1:]
            self._size += len(line)
            if self._size > self.max_size:
                self._too_big = True
                self._data.clear()
            if not self._too_big:
                self._data.append(line)

    def _end_of_data(self, out: list[Reply | Message]) -> None:
        if self._too_big:
            self._state = _READY
            self._reset()
            out.append(Reply(552, f"5.3.4 message exceeds the size limit of {self.max_size}"))
            return
        data = b"".join(self._data)
        self._state = _STORING
        out.append(Message(self._from, tuple(self._rcpts), data, self._helo))

    # -- commands -------------------------------------------------------------------------

    def _bad_command(self, out: list[Reply | Message], reply: Reply) -> None:
        self._bad += 1
        if self._bad >= self.max_bad:
            self._state = _CLOSED
            out.append(Reply(421, "4.7.0 too many errors, closing", close=True))
        else:
            out.append(reply)

    def _command(self, line: bytes, out: list[Reply | Message]) -> None:
        self._commands += 1
        if self._commands > self.max_commands:
            self._state = _CLOSED
            out.append(Reply(421, "4.7.0 too many commands, closing", close=True))
            return
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self._bad_command(out, Reply(500, "5.5.2 command not understood (not UTF-8)"))
            return
        if not text.isprintable():
            self._bad_command(out, Reply(500, "5.5.2 command not understood (control bytes)"))
            return
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        handler = _COMMANDS.get(verb)
        if handler is None:
            self._bad_command(out, Reply(500, "5.5.2 command not recognized"))
            return
        handler(self, arg.strip(), out)

    def _reset(self) -> None:
        self._from = ""
        self._rcpts = []
        self._data = []
        self._size = 0
        self._too_big = False
        self._line_start = True

    def _ehlo(self, arg: str, out: list[Reply | Message], extended: bool = True) -> None:
        if not arg:
            self._bad_command(out, Reply(501, "5.5.4 a domain or address is required"))
            return
        self._helo = arg[:255]
        self._reset()
        self._state = _READY
        if not extended:
            out.append(Reply(250, self.hostname))
            return
        lines = (self.hostname, "PIPELINING", f"SIZE {self.max_size}", "8BITMIME")
        out.append(Reply(250, "ENHANCEDSTATUSCODES", lines=lines))

    def _helo_cmd(self, arg: str, out: list[Reply | Message]) -> None:
        self._ehlo(arg, out, extended=False)

    def _mail(self, arg: str, out: list[Reply | Message]) -> None:
        if self._state == _GREETED:
            self._bad_command(out, Reply(503, "5.5.1 send EHLO or HELO first"))
            return
        if self._state != _READY:
            self._bad_command(out, Reply(503, "5.5.1 nested MAIL command"))
            return
        if self.messages >= self.max_messages:
            self._state = _CLOSED
            out.append(Reply(421, "4.7.0 too many messages on one connection", close=True))
            return
        path = _path(arg, "FROM:")
        if path is None:
            self._bad_command(out, Reply(501, "5.5.4 syntax: MAIL FROM:<address>"))
            return
        address, params = path
        for name, value in params:
            if name == "SIZE":
                if value is None or not value.isdigit():
                    self._bad_command(out, Reply(501, "5.5.4 bad SIZE parameter"))
                    return
                if int(value) > self.max_size:
                    out.append(Reply(552, f"5.3.4 message size exceeds {self.max_size}"))
                    return
            elif name == "BODY":
                if (value or "").upper() not in ("7BIT", "8BITMIME"):
                    self._bad_command(out, Reply(501, "5.5.4 bad BODY parameter"))
                    return
            else:
                self._bad_command(out, Reply(555, f"5.5.4 unsupported parameter {name}"))
                return
        self._from = address
        self._state = _MAIL
        out.append(Reply(250, "2.1.0 OK"))

    def _rcpt(self, arg: str, out: list[Reply | Message]) -> None:
        if self._state != _MAIL:
            self._bad_command(out, Reply(503, "5.5.1 need MAIL before RCPT"))
            return
        path = _path(arg, "TO:")
        if path is None or not path[0]:
            self._bad_command(out, Reply(501, "5.5.4 syntax: RCPT TO:<address>"))
            return
        address, params = path
        if params:
            self._bad_command(out, Reply(555, "5.5.4 RCPT parameters are not supported"))
            return
        if len(self._rcpts) >= self.max_recipients:
            out.append(Reply(452, "4.5.3 too many recipients"))
            return
        try:
            accepted = bool(self._accept(address))
        except Exception:  # a bad address must get an answer, not end the session
            accepted = False
        if not accepted:
            out.append(Reply(550, "5.7.1 relay denied"))
            return
        self._rcpts.append(address)
        out.append(Reply(250, "2.1.5 OK"))

    def _data_cmd(self, arg: str, out: list[Reply | Message]) -> None:
        if arg:
            self._bad_command(out, Reply(501, "5.5.4 DATA takes no argument"))
            return
        if self._state != _MAIL:
            self._bad_command(out, Reply(503, "5.5.1 need MAIL before DATA"))
            return
        if not self._rcpts:
            out.append(Reply(554, "5.5.1 no valid recipients"))
            return
        self._state = _DATA
        self._line_start = True
        out.append(Reply(354, "end data with <CR><LF>.<CR><LF>"))

    def _rset(self, arg: str, out: list[Reply | Message]) -> None:
        self._reset()
        if self._state == _MAIL:
            self._state = _READY
        out.append(Reply(250, "2.0.0 OK"))

    def _noop(self, arg: str, out: list[Reply | Message]) -> None:
        out.append(Reply(250, "2.0.0 OK"))

    def _quit(self, arg: str, out: list[Reply | Message]) -> None:
        self._state = _CLOSED
        out.append(Reply(221, "2.0.0 bye", close=True))

    def _vrfy(self, arg: str, out: list[Reply | Message]) -> None:
        out.append(Reply(252, "2.5.0 cannot verify, send mail to try"))

    def _help(self, arg: str, out: list[Reply | Message]) -> None:
        out.append(Reply(214, "2.0.0 EHLO HELO MAIL RCPT DATA RSET NOOP QUIT"))

    def _not_here(self, arg: str, out: list[Reply | Message]) -> None:
        self._bad_command(out, Reply(502, "5.5.1 command not implemented"))


def _path(arg: str, prefix: str) -> tuple[str, list[tuple[str, str | None]]] | None:
    """``FROM:<addr> PARAMS`` -> (addr, [(NAME, value)]); None when malformed."""
    if arg[: len(prefix)].upper() != prefix:
        return None
    match = _PATH.match(arg[len(prefix) :])
    if match is None:
        return None
    address, rest = match.groups()
    if len(address) > 256:
        return None
    if ":" in address and address.startswith("@"):  # a source route: keep the mailbox
        address = address.rpartition(":")[2]
    params = []
    for word in rest.split():
        param = _PARAM.match(word)
        if param is None:
            return None
        params.append((param.group(1).upper(), param.group(2)))
    return address, params


_COMMANDS: dict[str, Callable[[SMTPServer, str, list], None]] = {
    "EHLO": SMTPServer._ehlo,
    "HELO": SMTPServer._helo_cmd,
    "MAIL": SMTPServer._mail,
    "RCPT": SMTPServer._rcpt,
    "DATA": SMTPServer._data_cmd,
    "RSET": SMTPServer._rset,
    "NOOP": SMTPServer._noop,
    "QUIT": SMTPServer._quit,
    "VRFY": SMTPServer._vrfy,
    "HELP": SMTPServer._help,
    "EXPN": SMTPServer._not_here,
    "BDAT": SMTPServer._not_here,
    "STARTTLS": SMTPServer._not_here,
    "AUTH": SMTPServer._not_here,
    "ETRN": SMTPServer._not_here,
}
