"""What a report does to the recipient it is tied to: pure policy, time passed in.

The decision for one recipient of one report (docs/feedback.md, "Policy"):

- hard bounce: suppressed now (reason ``hard-bounce``); event ``bounced``, ``async: true``;
- soft bounce: counted; suppressed (reason ``soft-bounce``) once ``soft_bounce_limit`` of
  them fall within ``soft_bounce_window``; event ``bounced``, ``async: true``;
- complaint (ARF): suppressed now for the tenant (reason ``complaint``) and counted
  against the campaign; event ``complained``;
- unsubscribe (one-click or mailto): suppressed now for the tenant (reason
  ``unsubscribe``); event ``unsubscribed``;
- auto-reply, none: nothing.

Bounces suppress in the global scope, as a synchronous 5.1.x bounce does (the mailbox is
bad for every tenant); complaints and unsubscribes in the tenant's scope. ARF reports of
type ``not-spam`` or ``auth-failure`` (DMARC failure reports, not about the recipient)
change nothing.
"""

from __future__ import annotations

import msgspec

from salvo.core.config import Config, parse_duration

from .report import Kind, RecipientReport

__all__ = ["Decision", "FeedbackPolicy", "decide", "soft_limit_reached"]

DAY = 86400.0
#: ARF feedback types that are a recipient's complaint (RFC 5965 and its registry).
COMPLAINT_TYPES = frozenset({"", "abuse", "fraud", "virus", "other", "opt-out"})


class FeedbackPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """The knobs, from ``[feedback]``."""

    soft_bounce_limit: int = 5
    soft_bounce_window: float = 14 * DAY

    @classmethod
    def from_config(cls, config: Config) -> FeedbackPolicy:
        fb = config.feedback
        window = parse_duration(fb.soft_bounce_window, key="[feedback] soft_bounce_window")
        return cls(soft_bounce_limit=fb.soft_bounce_limit, soft_bounce_window=window)


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """What to do for one tied recipient.

    ``event``: the event type ("" for none); ``suppress``: the suppression reason now
    ("" for none); ``soft``: count a soft bounce (and suppress with reason ``soft-bounce``
    when :func:`soft_limit_reached`); ``per_tenant``: suppress in the tenant's scope (else
    global); ``count_complaint``: add one to the campaign's complaint counter.
    """

    event: str = ""
    suppress: str = ""
    soft: bool = False
    per_tenant: bool = False
    count_complaint: bool = False


NOTHING = Decision()


def decide(kind: Kind, recipient: RecipientReport | None, feedback_type: str = "") -> Decision:
    """The decision for a recipient a report of ``kind`` names (already tied to a
    message this node sent, or trusted by the operator)."""
    if kind is Kind.BOUNCE and recipient is not None:
        if recipient.hard:
            return Decision(event="bounced", suppress="hard-bounce")
        return Decision(event="bounced", soft=True)
    if kind is Kind.COMPLAINT and feedback_type.lower() in COMPLAINT_TYPES:
        return Decision(
            event="complained", suppress="complaint", per_tenant=True, count_complaint=True
        )
    return NOTHING


def unsubscribe() -> Decision:
    """The decision for a one-click or mailto unsubscribe."""
    return Decision(event="unsubscribed", suppress="unsubscribe", per_tenant=True)


def soft_limit_reached(count: int, policy: FeedbackPolicy) -> bool:
    """Whether ``count`` soft bounces within the window suppress the address."""
    return count >= policy.soft_bounce_limit
