"""The producer protocol, sans-IO: jobs in, replies out, as msgpack frames.

A producer sends one msgpack map per job; the node answers one msgpack map per job (a
:class:`Reply`). This module turns frames into validated :class:`Job` values and replies
into frames; it does no I/O (the transport contract is in ``docs/protocol.md``).

Validation has two layers. The typed ``msgspec`` decoder checks shapes and types (a wrong
type of a known field is an error; unknown fields are ignored, so newer producers can talk
to older nodes). :func:`check_job` then checks what types cannot say: limits, the raw XOR
subject/body rule, header names, and control characters that would inject header lines.

``Job``, ``Recipient`` and ``Reply`` are ``gc=False`` Structs: the garbage collector does
not track them (a node holds tens of thousands in flight, and scanning them made up a
sizeable part of the intake's CPU time). They hold only decoded data (str, numbers, lists,
maps) and can be in a reference cycle only if a caller builds one on purpose (for example
a recipient whose ``vars`` map contains that recipient); such a cycle would never be freed.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from salvo.ext.errors import SalvoError

__all__ = [
    "MAX_JOB_BYTES",
    "MAX_RECIPIENTS",
    "PROTOCOL_VERSION",
    "Accepted",
    "InvalidJob",
    "Job",
    "JobTooLarge",
    "MalformedFrame",
    "ProtocolError",
    "Recipient",
    "Rejected",
    "Reply",
    "SchemaError",
    "check_job",
    "decode_job",
    "decode_reply",
    "encode_job",
    "encode_reply",
    "error_reply",
    "peek_job_id",
]

PROTOCOL_VERSION = 1
MAX_JOB_BYTES = 32 * 1024 * 1024
MAX_RECIPIENTS = 10_000
MAX_ID_CHARS = 255

Status = Literal["accepted", "partial", "rejected", "retry", "error"]


class ProtocolError(SalvoError, ValueError):
    """A frame is not a valid job; the node answers status "error" with this text.

    ``field`` is the path of the offending field (``recipients[3].to``) or ``None`` when
    the problem is the frame as a whole.
    """

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail, field)
        self.detail = detail
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.detail}" if self.field else self.detail


class MalformedFrame(ProtocolError):
    """The frame is not one well-formed msgpack value."""


class SchemaError(ProtocolError):
    """The msgpack value has the wrong shape: a missing field or a field of the wrong type."""


class InvalidJob(ProtocolError):
    """Well-typed, but a value breaks a rule (empty id, CR/LF in a header, raw and subject)."""


class JobTooLarge(ProtocolError):
    """The frame exceeds the size limit, or the job has too many recipients."""


class Recipient(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One recipient: the address, its template variables, and an optional Message-ID."""

    to: str
    vars: dict[str, Any] = {}
    message_id: str | None = None


UnixTime = Annotated[float, msgspec.Meta(ge=0)]
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]


class Job(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """One job: a message template (or a raw message) and its recipients.

    Wire name ``from`` is the attribute ``from_``. Defaults are documented in
    ``docs/protocol.md``; new fields are added with defaults (schema evolution).
    """

    id: str
    from_: str = msgspec.field(name="from")
    recipients: list[Recipient]
    tenant: str = "default"
    campaign: str | None = None
    traffic: str = "default"
    return_path: str | None = None
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] = {}
    raw: str | None = None
    send_after: UnixTime | AwareTime | None = None
    expires_in: Annotated[float, msgspec.Meta(gt=0)] | None = None
    v: int = PROTOCOL_VERSION

    def not_before(self) -> float | None:
        """``send_after`` as a Unix timestamp (seconds), or ``None`` for "now"."""
        if isinstance(self.send_after, datetime):
            return self.send_after.timestamp()
        return self.send_after


class Accepted(msgspec.Struct, frozen=True):
    """A recipient the node took: its Message-ID (stable across retries)."""

    to: str
    message_id: str


class Rejected(msgspec.Struct, frozen=True, omit_defaults=True):
    """A recipient the node refused, with a short reason (``suppressed``, ``invalid-address``,
    ``missing-variable``...) and, for some reasons, a ``text`` for people (the missing
    variables); an empty ``text`` is left out of the map."""

    to: str
    reason: str
    text: str = ""


class Reply(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The node's answer to one job, sent only after the job is durable in the spool.

    ``status``: ``accepted`` (all recipients), ``partial`` (some rejected), ``rejected``
    (none taken), ``retry`` (temporary refusal: resubmit the same id later), ``error``
    (the frame is not a valid job; ``error`` says why).
    """

    id: str
    status: Status
    accepted: list[Accepted] = []
    rejected: list[Rejected] = []
    error: str | None = None

    @property
    def temporary(self) -> bool:
        """True when resubmitting the same job later may succeed."""
        return self.status == "retry"


class _JobId(msgspec.Struct):
    id: str = ""


_job_decoder = msgspec.msgpack.Decoder(Job)
_id_decoder = msgspec.msgpack.Decoder(_JobId)
_reply_decoder = msgspec.msgpack.Decoder(Reply)
_encoder = msgspec.msgpack.Encoder()

# msgspec's messages end in " - at `$.path`" (or "`key` in `$.path`" for a map key).
_PATH = re.compile(r" - at (?:`key` in )?`\$\.?([^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `([^`]*)`")
# What would start a new header line or MIME part once rendered (as the renderer refuses).
_INJECTION = re.compile("[\r\n\x00\u2028\u2029]")
_HEADER_NAME = re.compile(r"[!-9;-~]{1,76}")
_RESERVED_HEADERS = frozenset(
    ("from", "to", "subject", "date", "message-id", "mime-version", "bcc", "return-path")
)


def decode_job(
    frame: bytes | memoryview,
    *,
    max_bytes: int = MAX_JOB_BYTES,
    max_recipients: int = MAX_RECIPIENTS,
) -> Job:
    """Decode and validate one job frame; raise a :class:`ProtocolError` subclass."""
    if len(frame) > max_bytes:
        raise JobTooLarge(f"job frame is {len(frame)} bytes; the limit is {max_bytes}")
    try:
        job = _job_decoder.decode(frame)
    except msgspec.ValidationError as exc:
        raise _schema_error(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise MalformedFrame(f"not a msgpack value: {exc}") from None
    except RecursionError:
        raise MalformedFrame("not a usable msgpack value: nested too deeply") from None
    check_job(job, max_recipients=max_recipients)
    return job


def _schema_error(message: str) -> SchemaError:
    path_match = _PATH.search(message)
    path = path_match.group(1) if path_match else ""
    detail = message[: path_match.start()] if path_match else message
    missing = _MISSING.match(detail)
    if missing:
        name = missing.group(1)
        return SchemaError("required field is missing", f"{path}.{name}" if path else name)
    if detail.startswith("Expected `object`") and not path:
        return SchemaError(f"a job must be a msgpack map; {detail[0].lower()}{detail[1:]}")
    return SchemaError(detail, path or None)


def check_job(job: Job, *, max_recipients: int = MAX_RECIPIENTS) -> None:
    """Check the rules types cannot express; raise :class:`InvalidJob` or :class:`JobTooLarge`."""
    if job.v != PROTOCOL_VERSION:
        raise InvalidJob(f"unsupported protocol version {job.v}; this node speaks 1", "v")
    if not job.id or len(job.id) > MAX_ID_CHARS or not job.id.isprintable():
        raise InvalidJob(f"must be 1 to {MAX_ID_CHARS} printable characters", "id")
    _no_injection(job.from_, "from")
    if not job.from_.strip():
        raise InvalidJob("must not be empty", "from")
    if job.return_path is not None:
        _no_injection(job.return_path, "return_path")
    count = len(job.recipients)
    if count == 0:
        raise InvalidJob("at least one recipient is required", "recipients")
    if count > max_recipients:
        raise JobTooLarge(f"{count} recipients; the limit is {max_recipients}", "recipients")
    if job.raw is not None:
        extra = [n for n in ("subject", "text", "html") if getattr(job, n) is not None]
        if extra or job.headers:
            both = ", ".join([*extra, *(["headers"] if job.headers else [])])
            raise InvalidJob(f"give either raw or subject/text/html/headers, not both ({both})")
    else:
        if job.subject is None:
            raise InvalidJob("required (or give raw)", "subject")
        if job.text is None and job.html is None:
            raise InvalidJob("give text, html or both (or raw)", "text")
        _no_injection(job.subject, "subject")
        for name, value in job.headers.items():
            _check_header(name, value)
    if job.expires_in is not None and not math.isfinite(job.expires_in):
        raise InvalidJob("must be a finite number of seconds", "expires_in")
    if isinstance(job.send_after, float) and not math.isfinite(job.send_after):
        raise InvalidJob("must be a finite Unix timestamp", "send_after")
    for i, rcpt in enumerate(job.recipients):
        if _INJECTION.search(rcpt.to) or not rcpt.to:
            raise InvalidJob("empty, or contains CR, LF or NUL", f"recipients[{i}].to")
        if rcpt.message_id is not None and (
            _INJECTION.search(rcpt.message_id) or not rcpt.message_id.isprintable()
        ):
            raise InvalidJob("contains control characters", f"recipients[{i}].message_id")


def _no_injection(value: str, field: str) -> None:
    if _INJECTION.search(value):
        raise InvalidJob("contains CR, LF or NUL (header injection)", field)


def _check_header(name: str, value: str) -> None:
    if not _HEADER_NAME.fullmatch(name):
        raise InvalidJob(
            f"invalid header name {name!r}: 1 to 76 printable ASCII characters, no ':'", "headers"
        )
    low = name.lower()
    if low in _RESERVED_HEADERS or low.startswith("content-"):
        raise InvalidJob(f"header {name!r} is set by salvo from the job's fields", "headers")
    _no_injection(value, f"headers[{name!r}]")


def peek_job_id(frame: bytes | memoryview) -> str:
    """The ``id`` of a frame that failed to decode, if it can be read; else ``""``."""
    try:
        job_id = _id_decoder.decode(frame).id
    except (msgspec.DecodeError, RecursionError):
        return ""
    return job_id if len(job_id) <= MAX_ID_CHARS and job_id.isprintable() else ""


def error_reply(frame: bytes | memoryview, exc: ProtocolError) -> Reply:
    """The reply to a frame that is not a valid job: status "error" and the reason."""
    return Reply(id=peek_job_id(frame), status="error", error=str(exc))


def encode_job(job: Job | dict[str, Any]) -> bytes:
    """One job frame. A dict is encoded as is (the node validates it)."""
    return _encoder.encode(job)


def encode_reply(reply: Reply) -> bytes:
    """One reply frame."""
    return _encoder.encode(reply)


def decode_reply(frame: bytes | memoryview) -> Reply:
    """Decode a reply frame; raise :class:`MalformedFrame` or :class:`SchemaError`."""
    try:
        return _reply_decoder.decode(frame)
    except msgspec.ValidationError as exc:
        raise _schema_error(str(exc)) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise MalformedFrame(f"not a msgpack reply: {exc}") from None
