"""Auto-replies (RFC 3834): vacation and out-of-office messages. Never bounces.

Checked after the bounce checks: mailer daemons also send ``Auto-Submitted: auto-replied``.
"""

from __future__ import annotations

import re
from email.message import Message

from .mime import decode_header

__all__ = ["is_autoreply"]

_SUBJECT = re.compile(
    r"^\s*(?:auto(?:matic)?[\s_-]*(?:reply|response|answer|antwort)|auto:|out\s+of\s+(?:the\s+)?office|"
    r"away\b|vacation|on\s+leave|abwesenheit|r[eé]ponse\s+automatique|absence|"
    r"respuesta\s+autom|risposta\s+automatica|\u81ea\u52d5\u5fdc\u7b54|\u4e0d\u5728)"
    r"|\b(?:out\s+of\s+(?:the\s+)?office|on\s+vacation|auto[\s-]?reply|autoreply|"
    r"automatic\s+reply|away\s+until)\b",
    re.I,
)
_HEADERS = (
    "x-autoreply",
    "x-autorespond",
    "x-autoresponder",
    "x-auto-reply",
    "x-vacation",
    "x-apple-action",
    "x-mailautoreply",
)


def is_autoreply(msg: Message) -> bool:
    """Whether a message (not a bounce: checked before) is an automatic reply."""
    submitted = str(msg.get("Auto-Submitted", "")).strip().lower()
    if submitted.startswith("auto-replied"):
        return True
    for name in _HEADERS:
        if msg.get(name) is not None:
            return True
    precedence = str(msg.get("Precedence", "")).strip().lower()
    if precedence == "auto_reply":
        return True
    subject = decode_header(msg.get("Subject", ""))
    return bool(_SUBJECT.search(subject))
