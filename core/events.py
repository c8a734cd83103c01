"""Delivery events: one record per recipient state change, as published and logged.

An event is emitted only after the spool transaction that made the change has committed,
so the event stream never claims more than the spool holds. Its JSON form (one object per
line in the JSONL files, and the second frame on the PUB socket) is described in
``docs/events.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from salvo.core.feedback.reasons import classify
from salvo.core.spool_records import ERASED_ADDRESS, ERASED_TEXT

if TYPE_CHECKING:
    from salvo.core.spool import Change

EVENT_TYPES = (
    "accepted",
    "delivered",
    "deferred",
    "bounced",
    "failed",
    "expired",
    "suppressed",
    "cancelled",
    "complained",
    "unsubscribed",
    "alert",
    "content_warning",
    "content_rejected",
    "content_unchecked",  # [content]: docs/content.md
    "erased",  # an address was erased (docs/privacy.md): no recipient in it
)


class Event(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What happened to one recipient of one job."""

    type: str  # one of EVENT_TYPES
    ts: float  # when it happened, Unix time
    job: str  # the producer's job id
    recipient: str = ""
    message_id: str = ""
    tenant: str = ""
    campaign: str = ""
    attempt: int = 0  # delivery attempts so far, this one included
    host: str = ""  # the destination host that answered
    source: str = ""  # the source address the node connected from
    provider: str = ""  # the destination's provider (feedback: of the message reported on)
    code: int = 0  # SMTP reply code
    status: str = ""  # enhanced status code, e.g. "5.1.1"
    text: str = ""  # reply text or the reason
    queued_at: float = 0.0  # when the job was accepted
    next_attempt: float = 0.0  # for deferred: when the next try is due
    # The feedback loop (docs/feedback.md): a report that came back after the send.
    reason: str = ""  # the report's reason (userunknown, mailboxfull, ...) or the suppression's
    async_: bool = msgspec.field(default=False, name="async")  # a bounce reported later by mail
    hard: bool = False  # for an async bounce: the address itself is bad
    feedback_type: str = ""  # for complained: the ARF Feedback-Type (abuse, ...)
    suppressed: bool = False  # this report put the address on the suppression list
    # An alert (type ``alert``, docs/alerts.md): a rule fired or cleared for one scope value.
    state: str = ""  # fired or cleared
    rule: str = ""
    kpi: str = ""
    scope: str = ""  # campaign, tenant, provider, source or node
    name: str = ""  # the scope's value: the campaign's name, ...
    value: float = 0.0
    threshold: float = 0.0
    window: str = ""
    action: str = ""  # pause or notify
    score: float = 0.0  # content events: spamd's score of the job's template


def change_event(change: Change, job: Any, now: float, host: str = "", source: str = "") -> Event:
    """The event of a recipient's recorded change. ``job``: what is known of its job (any
    object with ``id``, ``tenant``, ``campaign`` and ``submitted``), or None; ``host``,
    ``source``: of the attempt, when the spool record has no host. A remote server's
    refusal gets the feedback loop's reason for it (salvo.core.feedback.reasons), so that a
    550 5.1.1 at RCPT and a later bounce report about it land in the same category."""
    record = change.record
    last = record.last
    reason, hard = "", False
    if last is not None and record.state in ("bounced", "deferred") and last.code:
        reason, hard = classify(last.code, last.enhanced, last.text)
    return Event(
        type=record.state,
        ts=last.at if last else now,
        job=job.id if job else "",
        recipient=record.to,
        message_id=record.message_id,
        tenant=job.tenant if job else "",
        campaign=job.campaign if job else "",
        attempt=record.attempts,
        host=(last.host if last else "") or host,
        source=source or (last.source if last else ""),
        provider=last.provider if last else "",
        code=last.code if last else 0,
        status=last.enhanced if last else "",
        text=last.text if last else "",
        queued_at=job.submitted if job else 0.0,
        next_attempt=record.next_attempt if record.state == "deferred" else 0.0,
        reason=reason,
        hard=hard,
    )


def submit_events(job: Any, reply: Any, now: float) -> list[Event]:
    """The events of a committed submission (salvo.core.protocol Job and Reply): one
    ``accepted`` per queued recipient, one ``suppressed`` per recipient refused because it
    is on the suppression list."""
    common = {"ts": now, "job": job.id, "tenant": job.tenant, "campaign": job.campaign or ""}
    events = [
        Event(type="accepted", recipient=a.to, message_id=a.message_id, queued_at=now, **common)
        for a in reply.accepted
    ]
    events += [
        Event(
            type="suppressed",
            # An erased address stays out of events too (docs/privacy.md).
            recipient=r.to if r.text != ERASED_TEXT else ERASED_ADDRESS,
            text="suppressed at intake",
            **common,
        )
        for r in reply.rejected
        if r.reason == "suppressed"
    ]
    return events


_encoder = msgspec.json.Encoder()


def encode_events(events: list[Event]) -> bytes:
    """The events as JSON lines, each ending in a newline (JSON strings escape newlines,
    so ``split(b"\\n")`` gives the lines back)."""
    return _encoder.encode_lines(events)


decode_event = msgspec.json.Decoder(Event).decode
