"""What a report that came back says: the data every part of the feedback loop shares.

A *report* is one message received by the feedback listener (or ingested from a file): a
non-delivery report (DSN, RFC 3464, or one of the common non-standard formats), a
complaint (ARF, RFC 5965), an auto-reply (RFC 3834), or none of these. The parser
(:mod:`salvo.core.feedback.parse`) turns raw bytes into a :class:`Report`; the feedback
policy decides what each recipient's entry does (suppress now, count a soft bounce, count
a complaint). Reasons come from one vocabulary (:mod:`salvo.core.feedback.reasons`,
sisimai's names), shared with the synchronous SMTP replies of delivery.
"""

from __future__ import annotations

import enum

import msgspec

__all__ = ["Kind", "RecipientReport", "Report"]


class Kind(enum.Enum):
    BOUNCE = "bounce"  # a non-delivery report (or a delivery delay report: soft)
    COMPLAINT = "complaint"  # an ARF feedback report (abuse, opt-out, ...)
    AUTOREPLY = "autoreply"  # vacation / out-of-office (RFC 3834): never a bounce
    NONE = "none"  # anything else: no effect on any recipient


class RecipientReport(msgspec.Struct, frozen=True, kw_only=True):
    """One recipient named by a report."""

    address: str  # the recipient the report is about (lower-cased domain), "" if none found
    status: str = ""  # enhanced status code, "5.1.1"; "" for complaints and auto-replies
    code: int = 0  # SMTP reply code, 0 when none was given
    reason: str = "undefined"  # salvo.core.feedback.reasons: userunknown, mailboxfull, ...
    hard: bool = False  # the address itself is bad: suppress at once
    diagnostic: str = ""  # the remote server's text, one line, bounded
    alias: str = ""  # another spelling of the same recipient (Original-Recipient), if any


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """One parsed report."""

    kind: Kind
    recipients: tuple[RecipientReport, ...] = ()
    feedback_type: str = ""  # ARF Feedback-Type: abuse, opt-out, auth-failure, ...
    original_message_id: str = ""  # Message-ID of the message the report is about, <...>
    verp_token: str = ""  # the token of a VERP return path it was sent to, if any
