"""SMTP replies (RFC 5321 section 4.2) and an incremental, bounded reply parser.

The parser takes bytes as they arrive, split anywhere, and yields complete replies. It
holds at most one partial line plus the lines of one unfinished reply, so a hostile
server cannot make it grow: every bound violation, bad code or garbage byte raises
:class:`SMTPProtocolError` and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import SMTPProtocolError

__all__ = ["MAX_LINE", "MAX_LINES", "MAX_REPLY_BYTES", "Reply", "ReplyParser"]

# RFC 5321 4.5.3.1.5 says 512 octets per reply line; real providers exceed it with long
# texts and URLs, so allow Postfix's line_length_limit (2048) rather than defer their mail.
MAX_LINE = 2048
# An EHLO reply has about 10-30 lines; anything near this is a server looping.
MAX_LINES = 100
MAX_REPLY_BYTES = 64 * 1024

# Code: 2yz-5yz (1yz is unused in SMTP), second digit 0-5 (RFC 5321 4.2.1).
_LINE = re.compile(rb"([2-5][0-5][0-9])([ -]?)(.*)", re.DOTALL)
# Enhanced status code (RFC 3463): class.subject.detail, 1-3 digits each.
_ESC = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: +|$)")
# Text may hold TAB and printable characters; UTF-8 is allowed (RFC 6531), controls not.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


# One-line replies by their exact bytes (CR included): a server answers MAIL, RCPT and
# DATA with the same lines all day, and a Reply is immutable. Bounded: cleared when full.
_CACHE: dict[bytes, Reply] = {}
_CACHE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class Reply:
    """One complete SMTP reply.

    ``lines`` are the texts of its lines without code, separator or the enhanced status
    code, which is parsed from the first line into ``esc`` when its class matches the
    reply code (RFC 2034), for example ``(5, 1, 1)``.
    """

    code: int
    esc: tuple[int, int, int] | None = None
    lines: tuple[str, ...] = ("",)

    @property
    def is_positive(self) -> bool:
        """2yz: the command succeeded."""
        return 200 <= self.code < 300

    @property
    def is_intermediate(self) -> bool:
        """3yz: send more (the message after DATA's 354, an AUTH continuation)."""
        return 300 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        """4yz: failed now, may succeed later."""
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        """5yz: will never succeed as sent."""
        return self.code >= 500

    @property
    def text(self) -> str:
        """The text of all lines joined by spaces, for logs and events."""
        return " ".join(line for line in self.lines if line)

    @property
    def esc_text(self) -> str | None:
        """The enhanced status code as written, ``"5.1.1"``, or None."""
        return None if self.esc is None else ".".join(map(str, self.esc))

    def __str__(self) -> str:
        parts = [str(self.code), self.esc_text, self.text]
        return " ".join(p for p in parts if p)


class ReplyParser:
    """Incremental parser: ``feed(bytes) -> list[Reply]``.

    Lines end with CRLF; a bare LF is accepted as servers in the wild send it (Postfix
    accepts it too). After an error the parser stays failed.
    """

    __slots__ = ("_buf", "_code", "_failed", "_lines", "_reply_bytes")

    def __init__(self) -> None:
        self._buf = b""
        self._code: bytes | None = None
        self._lines: list[bytes] = []
        self._reply_bytes = 0
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes held for unfinished lines and replies (bounded by the limits above)."""
        return len(self._buf) + self._reply_bytes

    def clear(self) -> None:
        """Drop everything buffered: after STARTTLS, plaintext read ahead must not count."""
        self._buf = b""
        self._code = None
        self._lines = []
        self._reply_bytes = 0

    def feed(self, data: bytes) -> list[Reply]:
        """Take more bytes from the server and return the replies they complete."""
        replies, error = self.feed_partial(data)
        if error is not None:
            raise error
        return replies

    def feed_partial(self, data: bytes) -> tuple[list[Reply], SMTPProtocolError | None]:
        """As :meth:`feed`, but the replies completed before a protocol error come back
        with it: a 250 to the final dot followed by garbage still delivered the message."""
        if self._failed:
            return [], SMTPProtocolError("reply parser used after a protocol error")
        replies: list[Reply] = []
        try:
            self._feed(data, replies)
        except SMTPProtocolError as exc:
            self._failed = True
            self.clear()
            return replies, exc
        return replies, None

    def _feed(self, data: bytes, replies: list[Reply]) -> None:
        buf = self._buf + data if self._buf else data
        start = 0
        cache = _CACHE
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            if end + 1 - start > MAX_LINE:
                raise SMTPProtocolError(f"reply line longer than {MAX_LINE} octets")
            line = buf[start:end]
            start = end + 1
            if self._code is None:  # a one-line reply seen before: same bytes, same Reply
                reply = cache.get(line)
                if reply is not None:
                    replies.append(reply)
                    continue
            reply = self._line(line[:-1] if line.endswith(b"\r") else line)
            if reply is not None:
                replies.append(reply)
                if len(reply.lines) == 1:
                    if len(cache) >= _CACHE_SIZE:
                        cache.clear()
                    cache[line] = reply
        rest = buf[start:]
        if len(rest) > MAX_LINE:
            raise SMTPProtocolError(f"reply line longer than {MAX_LINE} octets")
        self._buf = rest

    def _line(self, line: bytes) -> Reply | None:
        m = _LINE.fullmatch(line)
        if m is None:
            raise SMTPProtocolError(f"malformed reply line {line[:40]!r}")
        code, sep, text = m.groups()
        if _CONTROL.search(text):
            raise SMTPProtocolError(f"control character in reply line {line[:40]!r}")
        if not sep and text:
            raise SMTPProtocolError(f"no space after reply code in {line[:40]!r}")
        if self._code is None:
            self._code = code
        elif code != self._code:
            raise SMTPProtocolError(
                f"reply code changed from {self._code.decode()} to {code.decode()} "
                "inside a multiline reply"
            )
        self._lines.append(text)
        self._reply_bytes += len(line) + 2
        if len(self._lines) > MAX_LINES:
            raise SMTPProtocolError(f"reply with more than {MAX_LINES} lines")
        if self._reply_bytes > MAX_REPLY_BYTES:
            raise SMTPProtocolError(f"reply longer than {MAX_REPLY_BYTES} octets")
        if sep == b"-":
            return None
        lines = self._lines
        self._code, self._lines, self._reply_bytes = None, [], 0
        return _make_reply(int(code), lines)


def _make_reply(code: int, raw_lines: list[bytes]) -> Reply:
    try:
        lines = [raw.decode() for raw in raw_lines]
    except UnicodeDecodeError:
        raise SMTPProtocolError(f"reply {code} text is neither ASCII nor UTF-8") from None
    m = _ESC.match(lines[0])
    if m is None or int(m.group(1)) != code // 100:
        return Reply(code, None, tuple(lines))
    esc = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
    prefix = m.group(0).rstrip()
    # Servers repeat the code on every line; strip it wherever it is repeated.
    stripped = tuple(
        line[len(prefix) :].lstrip(" ") if line.split(" ", 1)[0] == prefix else line
        for line in lines
    )
    return Reply(code, esc, stripped)
