"""Sans-IO SMTP client: replies, the session state machine and per-recipient outcomes.

No sockets and no clock here; :mod:`salvo.actors.smtp_session` drives it over Trio.
"""

from .capabilities import Capabilities
from .client import Phase, SMTPClient, State
from .errors import LocalProtocolError, SMTPProtocolError
from .events import (
    AuthResult,
    Closed,
    Event,
    Ready,
    SessionRefused,
    StartTLS,
    StartTLSRefused,
    TransactionDone,
)
from .outcome import Outcome, Scope, Status
from .reply import Reply, ReplyParser
from .timeouts import SMTPTimeouts

__all__ = [
    "AuthResult",
    "Capabilities",
    "Closed",
    "Event",
    "LocalProtocolError",
    "Outcome",
    "Phase",
    "Ready",
    "Reply",
    "ReplyParser",
    "SMTPClient",
    "SMTPProtocolError",
    "SMTPTimeouts",
    "Scope",
    "SessionRefused",
    "StartTLS",
    "StartTLSRefused",
    "State",
    "Status",
    "TransactionDone",
]
