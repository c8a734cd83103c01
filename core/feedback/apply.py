"""Tie a report to the messages this node sent, and apply the policy, in one transaction.

A report's recipient is tied to a spool recipient (seq, idx) by, in order:

1. a VERP token: the envelope recipient the report was sent to (``b-TOKEN@domain``) or
   the token the parser found (``Report.verp_token``), read with the node's secret;
2. the original message's Message-ID (``Report.original_message_id``; every recipient
   has a Message-ID of its own);
3. only for a report the operator ingested with ``--trust``: the address the report
   names, for the tenant given.

A report that ties to nothing changes nothing (docs/feedback.md, "Bad input"). What is
suppressed is always the address this node sent to (the spool's record), never the text
of the report. An envelope recipient ``u-TOKEN@domain`` is a mailto unsubscribe: the
token gives the spool recipient (seq, idx), hence its tenant and address, whoever sent the
message (RFC 2369/8058 practice).

Everything runs inside the write transaction given (``txn``): the report's deletion from
the store of pending reports, the suppressions, the counters, all or nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from salvo.core.address import mailbox_key
from salvo.core.errors import InvalidAddressError
from salvo.core.events import Event
from salvo.core.spool_records import DEC_HEAD, RcptRecord, seq_key

from . import policy as pol
from .report import Kind, RecipientReport, Report
from .store import RawReport
from .tokens import UNSUBSCRIBE_PREFIX, VERP_PREFIX, read_unsubscribe_mailto_token, read_verp_token

if TYPE_CHECKING:
    from salvo.core.spool import Spool

__all__ = ["Applied", "apply_report_in", "tie", "unsubscribe_in"]


class Applied(msgspec.Struct):
    """What applying one report did: its events, and how each recipient was tied."""

    events: list[Event]
    tied: int = 0  # recipients tied to a message this node sent (or trusted)
    untied: int = 0  # recipients the report names that could not be tied


class _Tie(msgspec.Struct, frozen=True):
    seq: int
    idx: int
    record: RcptRecord | None  # None: trusted, by address only
    tenant: str
    job: str
    campaign: str
    address: str  # what is suppressed: the spool record's address, or the trusted one
    key: str


def _local(address: str) -> tuple[str, str]:
    local, _, domain = address.rpartition("@")
    return local, domain.lower()


def _tokens(raw: RawReport, report: Report | None, prefix: str) -> list[str]:
    found = []
    for rcpt in raw.rcpts:
        local, _ = _local(rcpt)
        if local[: len(prefix)].lower() == prefix:
            found.append(local[len(prefix) :])
    if prefix == VERP_PREFIX and report is not None and report.verp_token:
        token = report.verp_token
        found.append(token[len(prefix) :] if token.lower().startswith(prefix) else token)
    return list(dict.fromkeys(found))


def _spool_tie(spool: Spool, txn: Any, seq: int, idx: int, rec: RcptRecord) -> _Tie | None:
    raw_job = txn.get(seq_key(seq), db=spool.store.dbs["jobs"])
    if raw_job is None:
        return None
    head = DEC_HEAD.decode(raw_job)
    return _Tie(seq, idx, rec, head.tenant, head.id, head.campaign, rec.to, rec.key)


def tie(spool: Spool, txn: Any, raw: RawReport, report: Report, secret: bytes | None) -> list[_Tie]:
    """The spool recipients (or trusted addresses) this report is about."""
    ties: list[_Tie] = []
    if secret:
        for token in _tokens(raw, report, VERP_PREFIX):
            found = read_verp_token(secret, token)
            if found is None:
                continue
            rec = spool.get_recipient_in(txn, *found)
            if rec is not None and (t := _spool_tie(spool, txn, *found, rec)) is not None:
                ties.append(t)
    if not ties and report.original_message_id:
        found_mid = spool.find_message_in(txn, report.original_message_id)
        if found_mid is not None and (t := _spool_tie(spool, txn, *found_mid)) is not None:
            ties.append(t)
    if not ties and raw.trusted:
        for rr in report.recipients:
            try:
                key, _ = mailbox_key(rr.address)
            except InvalidAddressError:
                continue
            ties.append(_Tie(0, 0, None, raw.tenant, "", "", rr.address, key))
    return list({(t.seq, t.idx, t.key): t for t in ties}.values())


def _entry_for(t: _Tie, report: Report) -> RecipientReport | None:
    """The report's entry about the tied recipient: the one naming its address (or alias),
    else the only one; a complaint need not name anyone (ARF often redacts it)."""
    for rr in report.recipients:
        for name in (rr.address, rr.alias):
            try:
                if name and mailbox_key(name)[0] == t.key:
                    return rr
            except InvalidAddressError:
                continue
    if len(report.recipients) == 1:
        return report.recipients[0]
    if report.kind is Kind.COMPLAINT:
        return RecipientReport(address=t.address, reason="feedback")
    return None


def apply_report_in(
    spool: Spool,
    txn: Any,
    raw: RawReport,
    report: Report | None,
    *,
    secret: bytes | None,
    policy: pol.FeedbackPolicy,
    now: float,
) -> Applied:
    """Apply one report (``report``: the parser's reading of ``raw.data``, or None when
    only its envelope matters); see the module docstring."""
    applied = Applied(events=[])
    if secret:
        for token in _tokens(raw, None, UNSUBSCRIBE_PREFIX):
            found = read_unsubscribe_mailto_token(secret, token)
            rec = spool.get_recipient_in(txn, *found) if found is not None else None
            t = _spool_tie(spool, txn, *found, rec) if rec is not None else None
            if t is not None:
                applied.events += unsubscribe_in(
                    spool, txn, t.tenant, t.address, now=now, source="mailto", tie=t
                )
                applied.tied += 1
    if report is None or report.kind not in (Kind.BOUNCE, Kind.COMPLAINT):
        return applied
    ties = tie(spool, txn, raw, report, secret)
    applied.untied = max(0, len(report.recipients) - len(ties))
    for t in ties:
        entry = _entry_for(t, report)
        decision = pol.decide(report.kind, entry, report.feedback_type)
        if not decision.event:
            continue
        applied.tied += 1
        applied.events.append(_apply(spool, txn, t, entry, report, decision, policy, now))
    return applied


def _apply(
    spool: Spool,
    txn: Any,
    t: _Tie,
    entry: RecipientReport | None,
    report: Report,
    decision: pol.Decision,
    policy: pol.FeedbackPolicy,
    now: float,
) -> Event:
    fb = spool.feedback
    entry = entry or RecipientReport(address=t.address)
    scope = t.tenant if decision.per_tenant else ""
    reason = decision.suppress
    source = f"{report.kind.value} {entry.reason} {entry.status}".strip()
    if decision.soft:
        count = fb.soft_bounce_in(txn, scope, t.key, now, policy.soft_bounce_window)
        if pol.soft_limit_reached(count, policy):
            reason = "soft-bounce"
            source = f"{count} soft bounces, last {entry.reason} {entry.status}".strip()
    suppressed = False
    if reason:
        suppressed = _suppress_in(spool, txn, t.address, scope, reason, source, now)
        fb.clear_soft_in(txn, scope, t.key)
    if decision.count_complaint:
        fb.add_in(txn, f"complaint:{t.tenant}\0{t.campaign}".encode())
    sent = _sent_attempt(t.record)
    return Event(
        type=decision.event,
        ts=now,
        job=t.job,
        recipient=t.address,
        message_id=t.record.message_id if t.record is not None else "",
        tenant=t.tenant,
        campaign=t.campaign,
        code=entry.code,
        status=entry.status,
        text=entry.diagnostic,
        reason=entry.reason if decision.event == "bounced" else reason,
        async_=decision.event == "bounced",
        hard=entry.hard if decision.event == "bounced" else False,
        feedback_type=report.feedback_type,
        suppressed=suppressed,
        source=sent.source if sent is not None else "",
        provider=sent.provider if sent is not None else "",
    )


def _sent_attempt(record):
    """The attempt that sent the reported message: the last delivered one in its history
    (None when the record is gone or holds none)."""
    if record is None:
        return None
    for att in reversed(record.history):
        if att.state == "delivered":
            return att
    return None


def _suppress_in(
    spool: Spool, txn: Any, address: str, tenant: str, reason: str, source: str, now: float
) -> bool:
    """Suppress in ``tenant``'s scope ("" = global) unless that scope already has an
    entry for the address (a repeated click, a second report); whether it was added."""
    store = spool.suppression
    try:
        key, entry = store.make_entry(
            address, tenant=tenant, reason=reason, source=source[:200], created=now
        )
    except (InvalidAddressError, ValueError):
        return False
    if txn.get(key, db=spool.store.dbs["supp"]) is not None:
        return False
    store.put_in(txn, [(key, entry)])
    return True


def unsubscribe_in(
    spool: Spool,
    txn: Any,
    tenant: str,
    address: str,
    *,
    now: float,
    source: str,
    tie: _Tie | None = None,
) -> list[Event]:
    """Suppress ``address`` for ``tenant`` (reason ``unsubscribe``); its event (with the
    job and campaign of ``tie``, the message it came from, when known), or none when the
    address was already suppressed for the tenant (a repeated click)."""
    added = _suppress_in(spool, txn, address, tenant, "unsubscribe", source, now)
    if not added:
        return []
    return [
        Event(
            type="unsubscribed",
            ts=now,
            job=tie.job if tie else "",
            campaign=tie.campaign if tie else "",
            message_id=tie.record.message_id if tie and tie.record else "",
            recipient=address,
            tenant=tenant,
            reason="unsubscribe",
            text=source,
            suppressed=True,
        )
    ]


def count_report_in(spool: Spool, txn: Any, report: Report | None, applied: Applied) -> None:
    """The report's counters: processed by kind, and recipients tied or not."""
    fb = spool.feedback
    fb.add_in(txn, f"report:{report.kind.value if report else 'unparsed'}".encode())
    if applied.untied:
        fb.add_in(txn, b"recipients:untied", applied.untied)
