"""The spool's records (msgspec Structs) and key encodings.

Values are msgpack-encoded ``array_like`` Structs: compact, and schema evolution works by
appending fields with defaults (older readers skip trailing fields they do not know).
Keys are fixed-width big-endian integers so LMDB's byte order is numeric order; text keys
use NUL as a separator (ids, tenants and campaigns may not contain NUL).

Submissions are :class:`salvo.core.protocol.Job` values, as the ingress decodes them; the
records below keep their own layout (``""`` where the protocol has ``None``). A job's
rejected recipients are stored as :class:`salvo.core.protocol.Rejected` (a ``{to, reason}``
map, the same bytes as before; ``text`` is added only where one is given).
"""

from __future__ import annotations

import struct

import msgspec

from salvo.core.protocol import Rejected

__all__ = [
    "FINAL_STATES",
    "Attempt",
    "JobHead",
    "JobRecord",
    "RcptRecord",
]

QUEUED = "queued"
IN_FLIGHT = "in-flight"
DELIVERED = "delivered"
DEFERRED = "deferred"
BOUNCED = "bounced"
EXPIRED = "expired"
SUPPRESSED = "suppressed"
FAILED = "failed"  # the message could not be made at send time: final, not a bounce
CANCELLED = "cancelled"  # the operator cancelled its campaign or tenant before it was sent
STATES = (QUEUED, IN_FLIGHT, DELIVERED, DEFERRED, BOUNCED, FAILED, EXPIRED, SUPPRESSED, CANCELLED)
FINAL_STATES = frozenset({DELIVERED, BOUNCED, FAILED, EXPIRED, SUPPRESSED, CANCELLED})
WAITING_STATES = frozenset({QUEUED, DEFERRED})
# What an erased address becomes in a record, a rejection or an event (core/erasure), and
# the text of the cancel that ends it or of the rejection of a new job to it.
ERASED_ADDRESS = "erased@erased.invalid"
ERASED_TEXT = "erased"


# ---- stored records ----------------------------------------------------------------------


class Attempt(msgspec.Struct, frozen=True, array_like=True):
    """One entry of a recipient's history: a state change and the reply that caused it."""

    at: float
    state: str
    code: int = 0
    enhanced: str = ""
    text: str = ""
    host: str = ""
    # Where a delivery attempt went out: the feedback loop counts a later complaint or
    # bounce against them (warm-up lanes, the source's and provider's KPIs).
    source: str = ""
    provider: str = ""


class RcptRecord(msgspec.Struct, frozen=True, array_like=True):
    """A recipient's state; small (its variables live in the ``vars`` sub-database)."""

    to: str
    key: str
    message_id: str
    state: str
    attempts: int
    next_attempt: float
    expires_at: float
    last: Attempt | None = None
    history: tuple[Attempt, ...] = ()


class JobHead(msgspec.Struct, frozen=True, array_like=True):
    """The leading fields of a JobRecord: decoding a record as this skips the bodies."""

    id: str
    tenant: str
    campaign: str
    traffic: str
    from_: str
    return_path: str
    submitted: float
    send_after: float | None
    expires_at: float
    n_recipients: int
    status: str
    rejected: list[Rejected]
    error: str | None
    finished: float | None = None


class JobRecord(JobHead, frozen=True, array_like=True):
    """A job stored once: its fields, the reply parts not kept per recipient, the bodies.

    The bodies come last; a finished job is rewritten without them (the small record).
    In an encrypted spool the five body fields are empty and ``sealed`` holds them, as the
    msgpack array ``[subject, text, html, headers, raw]`` sealed by
    :mod:`salvo.core.spool_crypto`; the spool opens it when it hands the job out.
    """

    subject: str | None = None
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] = {}
    raw: str | None = None
    sealed: bytes | None = None


# ---- keys --------------------------------------------------------------------------------

SEQ = _SEQ = struct.Struct(">Q")
RCPT = _RCPT = struct.Struct(">QI")
TIME_SEQ = _TIME_SEQ = struct.Struct(">QQ")
TIME_RCPT = _TIME_RCPT = struct.Struct(">QQI")
U32 = struct.Struct(">I")


def ms(t: float) -> int:
    """Seconds to whole milliseconds, clamped at 0 (keys are unsigned)."""
    return max(0, int(t * 1000))


def seq_key(seq: int) -> bytes:
    return _SEQ.pack(seq)


def seq_of(key: bytes) -> int:
    return _SEQ.unpack_from(key)[0]


def rcpt_key(seq: int, idx: int) -> bytes:
    return _RCPT.pack(seq, idx)


def rcpt_of(key: bytes) -> tuple[int, int]:
    return _RCPT.unpack(key)


def due_key(t: float, seq: int, idx: int) -> bytes:
    return _TIME_RCPT.pack(ms(t), seq, idx)


def due_of(key: bytes) -> tuple[int, int, int]:
    """``(time_ms, seq, idx)`` of a due-index key."""
    return _TIME_RCPT.unpack(key)


def time_seq_key(t: float, seq: int) -> bytes:
    return _TIME_SEQ.pack(ms(t), seq)


def time_seq_of(key: bytes) -> tuple[int, int]:
    return _TIME_SEQ.unpack(key)


def idem_key(job_id: str, tenant: str) -> bytes:
    return f"{job_id}\0{tenant}".encode()


def tc_key(tenant: str, campaign: str, seq: int) -> bytes:
    return f"{tenant}\0{campaign}\0".encode() + _SEQ.pack(seq)


def dom_key(domain: str, seq: int, idx: int) -> bytes:
    return domain.encode() + b"\0" + _RCPT.pack(seq, idx)


ENC = msgspec.msgpack.Encoder()
DEC_RCPT = msgspec.msgpack.Decoder(RcptRecord)
DEC_JOB = msgspec.msgpack.Decoder(JobRecord)
DEC_HEAD = msgspec.msgpack.Decoder(JobHead)
BODY = tuple[str | None, str | None, str | None, dict[str, str], str | None]
DEC_BODY = msgspec.msgpack.Decoder(BODY)
