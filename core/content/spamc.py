"""The SPAMC/SPAMD protocol (SpamAssassin's spamd), sans-IO.

A request is one message with a header block, like HTTP::

    SYMBOLS SPAMC/1.5\\r\\n
    Content-length: 1234\\r\\n
    \\r\\n
    <the message>

spamd answers once and closes the connection::

    SPAMD/1.1 0 EX_OK\\r\\n
    Content-length: 55\\r\\n
    Spam: True ; 1000.0 / 5.0\\r\\n
    \\r\\n
    GTUBE,MSGID_SHORT,NO_RECEIVED

``SYMBOLS`` gives the names of the rules that fired (comma-separated); ``REPORT`` gives
spamd's text report, whose table also has each rule's points and description; ``CHECK``
gives the score only. A status other than 0 (``SPAMD/1.0 76 Bad header line: ...``) is
spamd refusing the request. :func:`parse_reply` turns the complete reply into a
:class:`Score` or raises :class:`SpamdReplyError`; :func:`reply_complete` tells the
reader when it has all of it (spamd also closes the connection after the reply).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from salvo.ext.errors import SalvoError

__all__ = [
    "MAX_REPLY",
    "Rule",
    "Score",
    "SpamdReplyError",
    "parse_reply",
    "reply_complete",
    "request",
]

Kind = Literal["CHECK", "SYMBOLS", "REPORT"]
KINDS = ("CHECK", "SYMBOLS", "REPORT")
MAX_REPLY = 1024 * 1024  # bytes; a reply past this is not spamd's

# sysexits.h names, as spamd reports them
_EXIT_NAMES = {
    64: "EX_USAGE",
    65: "EX_DATAERR",
    66: "EX_NOINPUT",
    67: "EX_NOUSER",
    68: "EX_NOHOST",
    69: "EX_UNAVAILABLE",
    70: "EX_SOFTWARE",
    71: "EX_OSERR",
    72: "EX_OSFILE",
    73: "EX_CANTCREAT",
    74: "EX_IOERR",
    75: "EX_TEMPFAIL",
    76: "EX_PROTOCOL",
    77: "EX_NOPERM",
    78: "EX_CONFIG",
}

_STATUS = re.compile(rb"SPAMD/(\d+)\.(\d+) +(\d+)(?: +([^\r\n]*))?")
_SPAM = re.compile(r"(?i)\s*(true|false|yes|no)\s*;\s*(-?\d+(?:\.\d+)?)\s*/\s*(-?\d+(?:\.\d+)?)\s*")
_RULE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
# A row of the REPORT table: points (right-aligned in 4 columns), rule name, description;
# a wrapped description goes on in lines indented past the points column.
_ROW = re.compile(r"^ {0,4}(-?\d+(?:\.\d+)?) +([A-Za-z0-9_.:-]+)(?: +(.*?))?\s*$")


class SpamdReplyError(SalvoError):
    """spamd's reply is not one this client understands, or spamd refused the request."""


@dataclass(frozen=True)
class Rule:
    """A rule that fired: its name, and from a REPORT its points and description."""

    name: str
    points: float | None = None
    description: str = ""


@dataclass(frozen=True)
class Score:
    """spamd's verdict on one message. ``threshold`` is spamd's own ``required_score``
    (the node applies its own ``reject_at`` and ``warn_at``)."""

    spam: bool
    score: float
    threshold: float
    rules: tuple[Rule, ...] = field(default=())

    @property
    def rule_names(self) -> tuple[str, ...]:
        return tuple(rule.name for rule in self.rules)


def request(kind: Kind, message: bytes, *, user: str = "") -> bytes:
    """The bytes of one request asking spamd ``kind`` about ``message``."""
    if kind not in KINDS:
        raise ValueError(f"unknown spamd request {kind!r}; one of {', '.join(KINDS)}")
    head = f"{kind} SPAMC/1.5\r\nContent-length: {len(message)}\r\n"
    if user:
        if not _RULE_NAME.fullmatch(user):
            raise ValueError(f"spamd user {user!r}: letters, digits, '_.:-' only")
        head += f"User: {user}\r\n"
    return head.encode("ascii") + b"\r\n" + message


def reply_complete(data: bytes) -> bool:
    """Whether ``data`` holds a whole reply: its headers, and as many body bytes as its
    ``Content-length`` says (a reply without one ends at the headers, or at the status
    line when spamd refused the request)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        line_end = data.find(b"\r\n")
        # A refusal is a status line alone: complete once it is a non-zero status.
        return line_end >= 0 and _refusal(data[:line_end])
    length = _content_length(data[:end])
    return length is None or len(data) - (end + 4) >= length


def _refusal(line: bytes) -> bool:
    match = _STATUS.fullmatch(line)
    return match is not None and int(match.group(3)) != 0


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"content-length":
            value = value.strip()
            if not value.isdigit() or len(value) > 9:
                raise SpamdReplyError(f"spamd reply: bad Content-length {_shown(value)}")
            return int(value)
    return None


def parse_reply(data: bytes, kind: Kind) -> Score:
    """The :class:`Score` in a whole reply to a ``kind`` request.

    Raises :class:`SpamdReplyError` naming what is wrong: a refusal (non-zero status), a
    status line or header that is not spamd's, no ``Spam:`` header, a body cut short.
    """
    if len(data) > MAX_REPLY:
        raise SpamdReplyError(f"spamd reply: longer than {MAX_REPLY} bytes")
    if not data:
        raise SpamdReplyError("spamd closed the connection without a reply")
    line_end = data.find(b"\r\n")
    status_line = data if line_end < 0 else data[:line_end]
    match = _STATUS.fullmatch(status_line)
    if match is None:
        raise SpamdReplyError(f"spamd reply: not a SPAMD status line: {_shown(status_line)}")
    code = int(match.group(3))
    if code != 0:
        name = _EXIT_NAMES.get(code, f"status {code}")
        text = (match.group(4) or b"").decode("utf-8", "replace")
        raise SpamdReplyError(f"spamd refused the request: {name}: {text}"[:300])
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise SpamdReplyError("spamd reply: the headers do not end (no blank line)")
    head, body = data[:end], data[end + 4 :]
    length = _content_length(head)
    if length is not None:
        if len(body) < length:
            raise SpamdReplyError(f"spamd reply: cut short: {len(body)} of {length} body bytes")
        body = body[:length]
    spam = None
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise SpamdReplyError(f"spamd reply: not a header line: {_shown(line)}")
        if name.strip().lower() == b"spam":
            spam = _SPAM.fullmatch(value.decode("latin-1"))
            if spam is None:
                raise SpamdReplyError(f"spamd reply: bad Spam header: {_shown(value)}")
    if spam is None:
        raise SpamdReplyError("spamd reply: no Spam header (not an answer to a check)")
    text = body.decode("utf-8", "replace")
    if kind == "SYMBOLS":
        rules = _symbols(text)
    elif kind == "REPORT":
        rules = _report_rules(text)
    else:
        rules = ()
    return Score(
        spam=spam.group(1).lower() in ("true", "yes"),
        score=float(spam.group(2)),
        threshold=float(spam.group(3)),
        rules=rules,
    )


def _symbols(text: str) -> tuple[Rule, ...]:
    names = [name.strip() for name in text.strip().split(",") if name.strip()]
    for name in names:
        if not _RULE_NAME.fullmatch(name):
            raise SpamdReplyError(f"spamd reply: not a rule name: {name[:60]!r}")
    return tuple(Rule(name) for name in names)


def _report_rules(text: str) -> tuple[Rule, ...]:
    """The rows of the report's table (after its ``---- ----`` rule line): a row is
    points, name, description; a line of only indented text continues the description
    above. The text before the table is spamd's report template, free text."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("----")), None)
    if start is None:
        return ()
    rules: list[Rule] = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        row = _ROW.match(line)
        if row is not None:
            rules.append(
                Rule(row.group(2), float(row.group(1)), " ".join((row.group(3) or "").split()))
            )
        elif rules and line[:1].isspace():
            last = rules[-1]
            rules[-1] = Rule(last.name, last.points, " ".join([last.description, *line.split()]))
        else:
            raise SpamdReplyError(f"spamd reply: not a row of the report: {line[:60]!r}")
    return tuple(rules)


def _shown(value: bytes) -> str:
    return repr(value[:60].decode("latin-1"))
