"""Webhooks' policy, sans-IO: who gets which event, the POST's body and signature, and
when to try again (docs/webhooks.md).

The durable outbox is :mod:`salvo.core.outbox`; the actor that posts is
:mod:`salvo.actors.webhooks`. Time and randomness are passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from salvo.core.events import EVENT_TYPES

__all__ = [
    "WEBHOOK_EVENTS",
    "Route",
    "Subscriptions",
    "backoff",
    "event_id",
    "payload",
    "retry_after",
    "sign",
    "verdict",
]

# "alert" is the event of a fired alert rule (docs/metrics.md); it has no recipient.
WEBHOOK_EVENTS = (*EVENT_TYPES, "alert")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# What one POST's answer means for its batch.
OK = "ok"  # 2xx: delivered, delete the batch
RETRY = "retry"  # anything else: the same batch again after a backoff
SPLIT = "split"  # 413: the same events again, in smaller batches


class Route(msgspec.Struct, frozen=True):
    """One webhook's subscription: its name (the outbox's key prefix), the event types it
    takes, and the tenants it is limited to (empty: every tenant)."""

    name: str
    types: frozenset[str]
    tenants: frozenset[str] = frozenset()

    def takes(self, type_: str, tenant: str) -> bool:
        """Whether this webhook gets an event; one without a tenant (a node-wide alert)
        passes every tenant filter."""
        return type_ in self.types and (not self.tenants or not tenant or tenant in self.tenants)


class Subscriptions:
    """Every webhook's :class:`Route`; ``types`` is the union of their event types (empty
    when no webhook is configured: then nothing at all is built or written)."""

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self.routes = tuple(routes)
        self.types: frozenset[str] = frozenset().union(*(r.types for r in self.routes))

    def __bool__(self) -> bool:
        return bool(self.routes)

    def targets(self, type_: str, tenant: str) -> list[str]:
        """The names of the webhooks that take this event."""
        return [r.name for r in self.routes if r.takes(type_, tenant)]

    @classmethod
    def from_config(cls, hooks: Sequence[Any]) -> Subscriptions:
        """From the ``[[webhooks]]`` sections (salvo.core.config.WebhookSection)."""
        return cls(Route(h.name, frozenset(h.events), frozenset(h.tenants)) for h in hooks)


def event_id(store_id: str, seq: int) -> str:
    """An event's id for receivers to deduplicate with: the spool's random id and the
    outbox sequence number, unique across nodes and restarts, the same on every retry."""
    return f"{store_id}-{seq}"


def payload(name: str, events: Sequence[tuple[str, bytes]]) -> bytes:
    """The POST body ``{"webhook": NAME, "events": [...]}`` from (id, event JSON object)
    pairs; each event gets its ``id`` as the first field, without decoding it."""
    parts = [b'{"id":' + msgspec.json.encode(eid) + b"," + raw[1:] for eid, raw in events]
    head = b'{"webhook":' + msgspec.json.encode(name) + b',"events":['
    return head + b",".join(parts) + b"]}"


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """``X-Salvo-Signature``: ``sha256=`` and the hex HMAC-SHA256 of
    ``TIMESTAMP.BODY`` (the timestamp as in ``X-Salvo-Timestamp``, Unix seconds)."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verdict(status: int) -> str:
    """What a reply status means: 2xx delivered; 413 try smaller batches; everything
    else (5xx, 408, 429, and the other 4xx too) try the same batch again until the events
    expire: a receiver's 401 or 404 is usually a deploy or a proxy, not a verdict on the
    events, and dropping them would lose them for good."""
    if 200 <= status < 300:
        return OK
    if status == 413:
        return SPLIT
    return RETRY


def backoff(failures: int, first: float, cap: float, rng: Any) -> float:
    """Seconds before the next try after ``failures`` consecutive failures (1 or more):
    ``first`` doubled per failure up to ``cap``, times a random factor in [0.5, 1] so that
    several nodes do not hammer a receiver that comes back at the same instant."""
    base = min(cap, first * 2.0 ** min(failures - 1, 60))
    return base * rng.uniform(0.5, 1.0)


def retry_after(value: str | None, cap: float) -> float | None:
    """A ``Retry-After`` of seconds, capped at ``cap``; None when absent or a date."""
    if not value or not value.strip().isdigit():
        return None
    return min(float(value.strip()), cap)
