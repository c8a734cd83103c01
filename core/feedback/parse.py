"""STAND-IN for the parser branch (``salvo.core.feedback.parse``): replaced at merge.

A trivial reader of RFC 3464 delivery status notifications, RFC 5965 ARF reports and
RFC 3834 auto-replies, enough for the listener's end-to-end tests: no non-standard
bounce formats, no reason vocabulary beyond a handful of status codes. The real parser
(branch ``parser``) replaces this file whole.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.message import Message

from .report import Kind, RecipientReport, Report

__all__ = ["parse_report"]

_ADDR = re.compile(r"^\s*(?:rfc822\s*;)?\s*<?([^<>\s;]+@[^<>\s;]+?)>?\s*$", re.IGNORECASE)


def _classify(code: int, status: str) -> tuple[str, bool]:
    if status.startswith("5.1."):
        return "userunknown", True
    if status in ("4.2.2", "5.2.2"):
        return "mailboxfull", False
    if status.startswith("5."):
        return "undefined", True
    return "undefined", False


def _address(value: str) -> str:
    match = _ADDR.match(value or "")
    if not match:
        return ""
    local, _, domain = match.group(1).rpartition("@")
    return f"{local}@{domain.lower()}"


def _original_message_id(msg: Message) -> str:
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
            if ctype == "message/rfc822" and part.is_multipart():
                inner = part.get_payload(0)
            else:
                payload = part.get_payload(decode=True) or b""
                inner = email.message_from_bytes(payload, policy=email.policy.compat32)
            mid = inner.get("Message-ID", "")
            if mid:
                return " ".join(str(mid).split())
    return ""


def _blocks(part: Message) -> list[dict[str, str]]:
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks = [{k.lower(): str(v) for k, v in p.items()} for p in payload]
    else:
        text = part.get_payload(decode=True) or b""
        blocks = []
        for chunk in re.split(rb"\r?\n\s*\r?\n", text):
            fields = {}
            for line in chunk.decode("utf-8", "replace").splitlines():
                key, sep, value = line.partition(":")
                if sep:
                    fields[key.strip().lower()] = value.strip()
            if fields:
                blocks.append(fields)
    return blocks


def parse_report(raw: bytes) -> Report:
    """A :class:`Report` from a message's bytes (stand-in: see the module docstring)."""
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    except Exception:
        return Report(kind=Kind.NONE)
    ctype = msg.get_content_type()
    rtype = (msg.get_param("report-type") or "").lower() if ctype == "multipart/report" else ""
    if rtype == "delivery-status":
        recipients = []
        for part in msg.walk():
            if part.get_content_type() != "message/delivery-status":
                continue
            for block in _blocks(part)[1:] or _blocks(part):
                address = _address(block.get("final-recipient", ""))
                if not address:
                    continue
                status = block.get("status", "").strip()
                diag = " ".join(block.get("diagnostic-code", "").split())
                code_match = re.search(r"\b([245]\d\d)\b", diag)
                code = int(code_match.group(1)) if code_match else 0
                reason, hard = _classify(code, status)
                recipients.append(
                    RecipientReport(
                        address=address,
                        status=status,
                        code=code,
                        reason=reason,
                        hard=hard,
                        diagnostic=diag[:500],
                        alias=_address(block.get("original-recipient", "")),
                    )
                )
        return Report(
            kind=Kind.BOUNCE,
            recipients=tuple(recipients),
            original_message_id=_original_message_id(msg),
        )
    if rtype == "feedback-report":
        feedback_type, rcpts = "", []
        for part in msg.walk():
            if part.get_content_type() == "message/feedback-report":
                for block in _blocks(part):
                    feedback_type = feedback_type or block.get("feedback-type", "").lower()
                    if block.get("original-rcpt-to"):
                        rcpts.append(_address(block["original-rcpt-to"]))
        return Report(
            kind=Kind.COMPLAINT,
            recipients=tuple(
                RecipientReport(address=a, reason="feedback", hard=False) for a in rcpts if a
            ),
            feedback_type=feedback_type,
            original_message_id=_original_message_id(msg),
        )
    if str(msg.get("Auto-Submitted", "")).lower().startswith("auto-replied"):
        return Report(kind=Kind.AUTOREPLY)
    return Report(kind=Kind.NONE)
