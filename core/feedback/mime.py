"""The MIME side of the parser: bounded walking and decoding with Python's ``email``.

Everything here is best effort on hostile input: a part that cannot be decoded is skipped,
the number of parts visited and the bytes decoded are bounded, and nothing descends into
a returned message (``message/rfc822``): only the outermost report counts.
"""

from __future__ import annotations

import contextlib
import email
import email.header
import email.policy
import re
from email.message import Message

__all__ = [
    "MAX_BYTES",
    "MAX_PARTS",
    "Parts",
    "decode_header",
    "load",
    "part_text",
    "walk",
]

#: Bytes of a report that are parsed: the report's parts come first; a huge attachment in
#: the returned message is cut (its headers, which come before its body, are kept).
MAX_BYTES = 512 * 1024
#: Parts visited per report, and the deepest nesting followed.
MAX_PARTS = 64
MAX_DEPTH = 8
#: Characters of one text part kept after decoding.
MAX_TEXT = 64 * 1024

_MBOX_FROM = re.compile(rb"\AFrom [^\n]*\n")
_BOUNDARY = re.compile(rb"^--([!-~]{1,70}?)[ \t]*\r?\n(?:content-[a-z-]+:|\r?\n)", re.I | re.M)
_TAG = re.compile(r"<(?:script|style)\b.*?</(?:script|style)>|<[^>]{0,2000}>", re.I | re.S)
_BR = re.compile(r"<\s*(?:br|/p|/div|/tr|/li|/h\d)\b[^>]{0,200}>", re.I)
_ENTITIES = {"&nbsp;": " ", "&lt;": "<", "&gt;": ">", "&amp;": "&", "&quot;": '"', "&#39;": "'"}
_ENTITY = re.compile("|".join(_ENTITIES))


class Parts:
    """What the outermost report is made of."""

    __slots__ = ("delivery_status", "feedback", "returned", "returned_headers", "texts")

    def __init__(self) -> None:
        self.delivery_status: list[str] = []  # message/delivery-status bodies
        self.feedback: list[str] = []  # message/feedback-report bodies
        self.returned: Message | None = None  # the first message/rfc822 part
        self.returned_headers: str = ""  # a text/rfc822-headers part
        self.texts: list[str] = []  # decoded text/plain (and stripped text/html) parts


def load(raw: bytes) -> Message:
    """Parse the first ``MAX_BYTES`` of a report (an mbox ``From`` line is dropped)."""
    raw = raw[:MAX_BYTES]
    raw = _MBOX_FROM.sub(b"", raw, count=1)
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    if msg.get("Content-Type") is None:
        # A MIME body under headers that lost their Content-Type: its first boundary line
        # (followed by a part's header) names the boundary.
        _, sep, body = raw.partition(b"\n\n")
        if not sep:
            _, sep, body = raw.partition(b"\r\n\r\n")
        found = _BOUNDARY.search(body[:512])  # after a preamble line or two
        if found is not None and body.count(b"--" + found[1]) >= 2:
            boundary = found[1].decode("latin-1")
            fixed = f'Content-Type: multipart/mixed; boundary="{boundary}"\n'.encode("latin-1")
            msg = email.message_from_bytes(fixed + raw, policy=email.policy.compat32)
    return msg


def decode_header(value: object) -> str:
    """A header's text, RFC 2047 decoded where possible, never raising."""
    if value is None:
        return ""
    if isinstance(value, email.header.Header):  # raw 8-bit in the header (RFC 6532: UTF-8)
        value = "".join(
            _raw_text(chunk) if isinstance(chunk, bytes) else chunk
            for chunk, _ in email.header.decode_header(value)
        )
    text = str(value)
    if "=?" not in text:
        return text
    try:
        chunks = email.header.decode_header(text)
        out = []
        for chunk, charset in chunks:
            if isinstance(chunk, bytes):
                out.append(chunk.decode(_codec(charset), "replace"))
            else:
                out.append(chunk)
        return "".join(out)
    except Exception:
        return text


def _raw_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeError:
        return data.decode("latin-1")


def _codec(charset: str | None) -> str:
    if not charset:
        return "latin-1"
    charset = charset.strip().strip('"').lower()
    try:
        "".encode(charset)
    except (LookupError, ValueError):
        return "latin-1"
    return charset


def _payload_bytes(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if isinstance(data, bytes):
        return data[:MAX_BYTES]
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw.encode("latin-1", "replace")[:MAX_BYTES]
    return b""


def part_text(part: Message) -> str:
    """The decoded text of a leaf part (charset applied, CRLF made LF), bounded."""
    data = _payload_bytes(part)
    charset = _codec(part.get_content_charset())
    try:
        text = data.decode(charset, "replace")
    except Exception:
        text = data.decode("latin-1", "replace")
    if "\ufffd" in text:  # a mislabelled charset: the bytes may be UTF-8
        with contextlib.suppress(UnicodeError):
            text = data.decode("utf-8")
    if charset in ("latin-1", "us-ascii", "ascii") and b"\x1b$" in data:
        text = data.decode("iso-2022-jp", "replace")  # undeclared ISO-2022-JP
    text = text[:MAX_TEXT].replace("\r\n", "\n").replace("\r", "\n")
    if part.get_content_subtype() == "html":
        text = _html_text(text)
    return text


def _html_text(html: str) -> str:
    html = _BR.sub("\n", html)
    html = _TAG.sub(" ", html)
    return _ENTITY.sub(lambda m: _ENTITIES[m[0]], html)


def _block_text(part: Message) -> str:
    """A message/delivery-status (or feedback-report) body as text, however parsed."""
    payload = part.get_payload()
    if isinstance(payload, list):  # compat32 parses these into one Message per block
        blocks = []
        for block in payload[:MAX_PARTS]:
            if isinstance(block, Message):
                lines = [f"{k}: {v}" for k, v in block.items()]
                body = block.get_payload()
                if isinstance(body, str) and body.strip():
                    lines.append(body)  # a block the parser did not see as headers
                blocks.append("\n".join(lines))
        text = "\n\n".join(blocks)
        if "\x1b$" in text:  # undeclared ISO-2022-JP in a field (Domino's Japanese)
            text = text.encode("latin-1", "replace").decode("iso-2022-jp", "replace")
        return text
    return part_text(part)


def _split_lost_boundary(body: str) -> list[Message] | None:
    """The parts of a multipart body whose boundary parameter was lost, found from its
    first boundary line (followed by a part's header)."""
    data = body[:MAX_BYTES].encode("latin-1", "replace")
    found = _BOUNDARY.search(data[:512])
    if found is None or data.count(b"--" + found[1]) < 2:
        return None
    boundary = found[1].decode("latin-1")
    head = f'Content-Type: multipart/mixed; boundary="{boundary}"\n\n'.encode("latin-1")
    msg = email.message_from_bytes(head + data, policy=email.policy.compat32)
    payload = msg.get_payload()
    return payload if isinstance(payload, list) else None


def walk(msg: Message) -> Parts:
    """The parts of the outermost report (no descent into returned messages)."""
    parts = Parts()
    budget = [MAX_PARTS]
    _walk(msg, parts, 0, budget)
    return parts


def _walk(part: Message, parts: Parts, depth: int, budget: list[int]) -> None:
    if budget[0] <= 0 or depth > MAX_DEPTH:
        return
    budget[0] -= 1
    ctype = part.get_content_type()
    maintype, _, subtype = ctype.partition("/")
    if maintype == "multipart":
        payload = part.get_payload()
        if isinstance(payload, str) and not part.get_boundary():
            # its boundary parameter was lost (a header folded wrongly)
            payload = _split_lost_boundary(payload) or payload
        if isinstance(payload, list):
            for sub in payload:
                if isinstance(sub, Message):
                    _walk(sub, parts, depth + 1, budget)
            return
    if ctype in ("message/delivery-status", "message/global-delivery-status"):
        parts.delivery_status.append(_block_text(part))
    elif ctype == "message/feedback-report":
        parts.feedback.append(_block_text(part))
    elif ctype in ("message/rfc822", "message/global"):
        payload = part.get_payload()
        if parts.returned is None and isinstance(payload, list) and payload:
            inner = payload[0]
            if isinstance(inner, Message):
                parts.returned = inner
    elif ctype in ("text/rfc822-headers", "message/rfc822-headers", "text/rfc822-header"):
        if not parts.returned_headers:
            parts.returned_headers = part_text(part)
    elif maintype == "text" or (depth == 0 and not part.is_multipart()):
        if part.get_filename() and subtype not in ("plain", "html"):
            return
        parts.texts.append(part_text(part))
