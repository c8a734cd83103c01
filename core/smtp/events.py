"""What the SMTP client reports to its transport, one frozen dataclass per event."""

from __future__ import annotations

from dataclasses import dataclass

from .capabilities import Capabilities
from .outcome import Outcome
from .reply import Reply

__all__ = [
    "AuthResult",
    "Closed",
    "Event",
    "Ready",
    "SessionRefused",
    "StartTLS",
    "StartTLSRefused",
    "TransactionDone",
]


@dataclass(frozen=True, slots=True)
class Ready:
    """The session is established (after EHLO/HELO, and again after STARTTLS)."""

    capabilities: Capabilities


@dataclass(frozen=True, slots=True)
class SessionRefused:
    """Greeting, EHLO or HELO refused: a site failure; the session is CLOSED."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class StartTLS:
    """The server said 220 to STARTTLS: drop buffered input, handshake, tls_established()."""


@dataclass(frozen=True, slots=True)
class StartTLSRefused:
    """The server refused STARTTLS; the session is READY in plaintext."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The final reply to AUTH (235 is success)."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class TransactionDone:
    """Every recipient of the transaction has its outcome, in the order given.

    ``index`` is the transaction's position in the ``send_many`` call that started it
    (0 for ``send_mail``).
    """

    outcomes: tuple[Outcome, ...]
    index: int = 0


@dataclass(frozen=True, slots=True)
class Closed:
    """The server ended the session (221 to QUIT, 421, EOF when idle)."""

    reply: Reply | None


Event = Ready | SessionRefused | StartTLS | StartTLSRefused | AuthResult | TransactionDone | Closed
