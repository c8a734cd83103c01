"""What happened to each recipient, classified by scope and permanence.

The model is Postfix's ``smtp_trouble.c``: a failure belongs to the *site* (the server
would not talk to us: connect, greeting, EHLO, STARTTLS, or a 421 at any time), the
*message* (MAIL FROM or the message data refused), one *recipient* (RCPT refused), or the
*stream* (timeout, lost connection, protocol violation: the connection is dead, nothing is
known). The reply's first digit decides the status, with one deliberate exception: a site
failure before any transaction is always deferred, because a bulk sender must not bounce a
campaign when one host refuses one source address (the engine tries other hosts, then
expires the mail after days).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .reply import Reply

__all__ = ["Outcome", "Scope", "Status"]


class Status(enum.Enum):
    """The fate of one recipient in one attempt."""

    DELIVERED = "delivered"
    DEFERRED = "deferred"  # temporary: retry later
    BOUNCED = "bounced"  # permanent: never retry
    FAILED = "failed"  # the message could not be made: final, and no answer of a destination


class Scope(enum.Enum):
    """Who a failure is about (Postfix ``smtp_site_fail`` / ``mesg`` / ``rcpt`` / stream)."""

    SITE = "site"  # this host (or our address at it): throttle or try another host
    MESSAGE = "message"  # this message from this sender
    RECIPIENT = "recipient"  # this address only
    STREAM = "stream"  # the connection broke: defer, never reuse it


_DELIVERED = Status.DELIVERED  # a module global: Enum member lookups cost ~50 ns in 3.11


@dataclass(frozen=True, slots=True)
class Outcome:
    """One recipient's result. ``code``/``esc`` are None when no reply explains it.

    ``split`` marks a too-many-recipients refusal (RFC 5321 4.5.3.1.10): not a failure of
    the address, send it again at once in a new transaction.
    """

    recipient: str
    status: Status
    scope: Scope | None = None
    code: int | None = None
    esc: tuple[int, int, int] | None = None
    text: str = ""
    split: bool = False

    @classmethod
    def delivered(cls, recipient: str, reply: Reply) -> Outcome:
        """The server took responsibility for this recipient."""
        return cls(recipient, _DELIVERED, None, reply.code, reply.esc, reply.text)

    @classmethod
    def from_reply(cls, recipient: str, reply: Reply, scope: Scope) -> Outcome:
        """A failure reply: 5yz bounces, anything else defers."""
        status = Status.BOUNCED if reply.is_permanent else Status.DEFERRED
        return cls(recipient, status, scope, reply.code, reply.esc, reply.text)

    @classmethod
    def deferred(
        cls, recipient: str, scope: Scope, text: str, reply: Reply | None = None
    ) -> Outcome:
        """A temporary failure, with the reply that caused it if there was one."""
        if reply is None:
            return cls(recipient, Status.DEFERRED, scope, None, None, text)
        return cls(recipient, Status.DEFERRED, scope, reply.code, reply.esc, text or reply.text)

    @classmethod
    def bounced(cls, recipient: str, scope: Scope, text: str, esc: tuple[int, int, int]) -> Outcome:
        """A permanent failure decided locally, before anything was sent."""
        return cls(recipient, Status.BOUNCED, scope, None, esc, text)

    @classmethod
    def failed(cls, recipient: str, text: str) -> Outcome:
        """The message could not be made (a template or encoding error at send time): final,
        but not a bounce, since no destination refused anything."""
        return cls(recipient, Status.FAILED, Scope.MESSAGE, None, None, text)

    @classmethod
    def split_off(cls, recipient: str, text: str, reply: Reply | None = None) -> Outcome:
        """Too many recipients for one transaction: send again at once in a new one."""
        code, esc = (None, None) if reply is None else (reply.code, reply.esc)
        return cls(recipient, Status.DEFERRED, Scope.RECIPIENT, code, esc, text, split=True)

    @property
    def is_delivered(self) -> bool:
        """The server accepted the message for this recipient."""
        return self.status is Status.DELIVERED

    @property
    def is_temporary(self) -> bool:
        """Retry later."""
        return self.status is Status.DEFERRED

    @property
    def is_permanent(self) -> bool:
        """Never retry; report a bounce."""
        return self.status is Status.BOUNCED

    @property
    def try_next_host(self) -> bool:
        """A soft failure of this host or connection: another MX host may do better."""
        return self.status is Status.DEFERRED and self.scope in (Scope.SITE, Scope.STREAM)

    @property
    def esc_text(self) -> str | None:
        """The enhanced status code as written, ``"4.7.0"``, or None."""
        return None if self.esc is None else ".".join(map(str, self.esc))
