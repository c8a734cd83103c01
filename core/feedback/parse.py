"""``parse_report(raw) -> Report``: what a report that came back says. Pure: bytes in.

The order of the checks:

1. An ARF complaint (RFC 5965): a ``message/feedback-report`` part (or its fields in the
   text of a report that announces ``report-type=feedback-report``).
2. A DSN (RFC 3464): the per-recipient blocks of a ``message/delivery-status`` part;
   ``Action: delayed`` is a soft bounce, ``delivered``/``relayed``/``expanded`` are not
   bounces (a report of successes only is kind ``none`` and lists them as ``delivered``).
3. A non-standard bounce (:mod:`.formats`): a report from a mailer daemon, or with a
   bounce's subject, ``X-Failed-Recipients``, or a bounce's wording.
4. An auto-reply (RFC 3834, :mod:`.autoreply`): kind ``autoreply``, reason ``vacation``.
5. Anything else: kind ``none``.

Only the outermost report counts: nothing is read from inside the returned message but its
``Message-ID`` and ``Return-Path``. The work is bounded (:mod:`.mime`), and any failure
of the ``email`` package on hostile input gives a best-effort or ``none`` report, never an
exception.
"""

from __future__ import annotations

import json
import re
from email.message import Message

from . import autoreply
from .fields import (
    ADDRESS_RE,
    field_blocks,
    find_code,
    find_status,
    normalize_address,
    one_line,
)
from .formats import cut_returned, text_recipients
from .mime import MAX_BYTES, Parts, decode_header, load, walk
from .reasons import classify, is_hard, reason_from_text, smtp_command, with_command
from .report import Kind, RecipientReport, Report

__all__ = ["VERP_PREFIX", "parse_report"]

#: The local-part prefix of a VERP return path: ``b-TOKEN@bounces.example``.
VERP_PREFIX = "b-"

_VERP = re.compile(
    rf"(?<![A-Za-z0-9._%+=\-]){re.escape(VERP_PREFIX)}([A-Za-z0-9_\-]{{1,256}})@[A-Za-z0-9.\-]+",
    re.I,
)
_MESSAGE_ID = re.compile(
    r"^message-id:[ \t]*(<[^>\s]{1,250}>|[^\s<>]{1,250}@[^\s<>]{1,250})", re.I | re.M
)
_FEEDBACK_TYPE = re.compile(r"^feedback-type:[ \t]*([A-Za-z0-9_\-]{1,40})", re.I | re.M)
_DAEMON = re.compile(
    r"mailer-daemon|mail-daemon|post_?master|mail\s+delivery|delivery\s+(?:subsystem|system|"
    r"status)|mdaemon|nobody@|bounce",
    re.I,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery\s+(?:status|fail|failure|notification|problem|report|"
    r"has\s+failed|incomplete)|returned\s+(?:mail|to\s+sender)|failure\s+notice|"
    r"mail\s+delivery|non[\s-]?delivery|could\s+not\s+(?:be\s+)?(?:send|deliver)|"
    r"not\s+(?:be\s+)?delivered|delivery\s+delayed|warning:\s+(?:could|message)|"
    r"rejected|bounce|mail\s+system\s+error|unzustellbar|non\s+remis|no\s+entregado|"
    r"non\s+recapitabile|fehlgeschlagen|retour|error\s+sending|failed|failure|"
    r"\u914d\u4fe1|\u4e0d\u80fd|\u30a8\u30e9\u30fc|\u672a\u9001\u9054|\u9000\u4fe1",
    re.I,
)
_BOUNCE_TEXT = re.compile(
    r"could\s+not\s+be\s+delivered|(?:was|were)\s+not\s+delivered|delivery\s+(?:to\s+the\s+following\s+)?"
    r"(?:has\s+)?failed|undeliverable|permanent(?:ly)?\s+(?:fatal\s+)?(?:error|fail)|"
    r"unable\s+to\s+deliver|wasn't\s+able\s+to\s+deliver|did\s+not\s+reach|"
    r"following\s+(?:address(?:es)?|recipients?)\s+(?:failed|had)|returning\s+message|"
    r"delivery\s+(?:status\s+)?notification|\b[45]\d\d[\s\-][45]\.\d{1,3}\.\d{1,3}\b|"
    r"remote\s+(?:host|server)\s+(?:said|returned)|mail\s+delivery\s+(?:failed|subsystem)|"
    r"cannot\s+be\s+delivered|message\s+delivery\s+has\s+failed|failed\s+permanently|"
    r"has\s+not\s+been\s+delivered|temporary\s+failure|delivery\s+is\s+delayed|"
    r"\b5\d\d\b[ \t-]*requested\s+action\s+not\s+taken",
    re.I,
)
# PowerMTA's own verdict per recipient (X-PowerMTA-BounceCategory of its DSNs).
_POWERMTA = {
    "bad-mailbox": "userunknown",
    "bad-domain": "hostunknown",
    "inactive-mailbox": "suspend",
    "quota-issues": "mailboxfull",
    "spam-related": "spamdetected",
    "virus-related": "virusdetected",
    "content-related": "contenterror",
    "policy-related": "policyviolation",
    "relaying-issues": "norelaying",
    "message-expired": "expired",
    "no-answer-from-host": "networkerror",
    "bad-connection": "networkerror",
    "routing-errors": "systemerror",
    "protocol-errors": "syntaxerror",
    "invalid-sender": "rejected",
}
_ACTION_NOT_BOUNCE = ("delivered", "deliverable", "relayed", "expanded")
_REPORT_TO = ("to", "delivered-to", "x-original-to", "envelope-to")
_MAX_RECIPIENTS = 200


def parse_report(raw: bytes) -> Report:
    """Parse one report (the raw bytes of a message). Never raises."""
    try:
        return _parse(raw)
    except Exception:  # hostile input the email package could not survive: best effort
        return _fallback(raw)


def _parse(raw: bytes) -> Report:
    return _parse_message(load(raw), raw, 0)


def _parse_message(msg: Message, raw: bytes, depth: int) -> Report:
    parts = walk(msg)
    message_id = _original_message_id(parts)
    token = _verp(msg, parts)
    report = (
        _amazon_ses(parts)
        or _complaint(msg, parts)
        or _dsn(msg, parts)
        or _nonstandard(msg, parts)
        or _autoreply(msg, parts)
        or Report(kind=Kind.NONE)
    )
    if depth == 0 and not any(r.address for r in report.recipients):
        inner = _inner_report(msg, parts, raw)
        if inner is not None and inner.kind in (Kind.BOUNCE, Kind.COMPLAINT):
            report = inner
    if message_id or token:
        return Report(
            kind=report.kind,
            recipients=report.recipients,
            feedback_type=report.feedback_type,
            original_message_id=message_id,
            verp_token=token,
        )
    return report


_MBOX_LINE = re.compile(rb"\n(?:-{3,}\r?\n)?From [^\n]{0,200}\n(?=[A-Za-z][A-Za-z0-9-]{0,60}:)")
_QUOTED_HEAD = re.compile(r"^>[ \t]?(?:from|date|subject|to|return-path|received):", re.I | re.M)


def _inner_report(msg: Message, parts: Parts, raw: bytes) -> Report | None:
    """A report that names no recipient may carry the real one: a returned message that is
    itself a report (a wrapper around a DSN), a bounce forwarded as an mbox message (its
    ``From`` line), or one forwarded inline (quoted with ``>``)."""
    subject = decode_header(msg.get("Subject", ""))
    sender = decode_header(msg.get("From", ""))
    if not (_BOUNCE_SUBJECT.search(subject) or _DAEMON.search(sender)):
        return None  # a person's message with a report attached is not a report
    inner = parts.returned
    if inner is not None and (
        inner.get_content_type() == "multipart/report"
        or _DAEMON.search(decode_header(inner.get("From", "")))
    ):
        return _parse_message(inner, b"", 1)
    found = _MBOX_LINE.search(raw, 0, MAX_BYTES)
    if found is not None:
        sub = raw[found.end() :]
        return _parse_message(load(sub), sub, 1)
    for text in parts.texts[:4]:
        quoted = _QUOTED_HEAD.search(text)
        if quoted is not None:
            lines = text[quoted.start() :].split("\n")
            body = "\n".join(_unquote(ln) for ln in lines)
            sub = body.encode("utf-8", "replace")
            return _parse_message(load(sub), sub, 1)
    return None


def _unquote(line: str) -> str:
    if line.startswith("> "):
        return line[2:]
    return line[1:] if line.startswith(">") else line


def _fallback(raw: bytes) -> Report:
    """A report the MIME parser failed on: only its VERP address, if any, is read."""
    try:
        match = _VERP.search(raw[:65536].decode("latin-1"))
    except Exception:
        match = None
    return Report(kind=Kind.NONE, verp_token=match[1] if match else "")


# -- linking ---------------------------------------------------------------------------


def _returned_header_text(parts: Parts) -> str:
    if parts.returned is not None:
        return "\n".join(f"{k}: {v}" for k, v in parts.returned.items()[:200])
    if parts.returned_headers:
        return parts.returned_headers
    for text in parts.texts:
        cut = len(cut_returned(text))
        if cut < len(text):
            return text[cut : cut + 65536]
    return ""


def _original_message_id(parts: Parts) -> str:
    if parts.returned is not None:
        value = parts.returned.get("Message-ID")
        if value:
            found = _MESSAGE_ID.search(f"Message-ID: {str(value).strip()}")
            if found:
                return _angle(found[1])
    text = parts.returned_headers
    if not text:
        for body in parts.texts:
            if _MESSAGE_ID.search(body):
                text = body
                break
    found = _MESSAGE_ID.search(text) if text else None
    return _angle(found[1]) if found else ""


def _angle(value: str) -> str:
    value = value.strip()
    return value if value.startswith("<") else f"<{value}>"


def _verp(msg: Message, parts: Parts) -> str:
    candidates = []
    for name in _REPORT_TO:
        for value in msg.get_all(name, [])[:10]:
            candidates.append(str(value))
    if parts.returned is not None:
        candidates.extend(str(v) for v in parts.returned.get_all("Return-Path", [])[:3])
    else:
        head = _returned_header_text(parts)
        candidates.extend(re.findall(r"^return-path:[^\n]*", head[:65536], re.I | re.M)[:3])
    for value in candidates:
        match = _VERP.search(value)
        if match:
            return match[1]
    return ""


# -- complaints ---------------------------------------------------------------------------


def _complaint(msg: Message, parts: Parts) -> Report | None:
    text = "\n\n".join(parts.feedback)
    if str(msg.get("X-Apple-Unsubscribe", "")).strip().lower() == "true":
        # Apple Mail's unsubscribe (sent to a List-Unsubscribe mailto): an opt-out by the
        # sender of this message.
        match = ADDRESS_RE.search(decode_header(msg.get("From", "")))
        address = normalize_address(match[1]) if match else ""
        return Report(
            kind=Kind.COMPLAINT,
            recipients=(RecipientReport(address=address, reason="feedback"),),
            feedback_type="opt-out",
        )
    if not parts.feedback and parts.returned is not None:
        # Microsoft's JMRP (Hotmail/Outlook.com complaints): no ARF part, the complained-of
        # message with its recipient in X-HmXmrOriginalRecipient.
        hotmail = normalize_address(str(parts.returned.get("X-HmXmrOriginalRecipient", "")))
        if hotmail:
            return Report(
                kind=Kind.COMPLAINT,
                recipients=(RecipientReport(address=hotmail, reason="feedback"),),
                feedback_type="abuse",
            )
    is_arf = bool(parts.feedback) or (
        msg.get_content_type() == "multipart/report"
        and str(msg.get_param("report-type", "")).lower() == "feedback-report"
    )
    if not is_arf:
        return None
    if not text:  # fields in a text part of a report that says it is ARF
        text = "\n".join(t for t in parts.texts if _FEEDBACK_TYPE.search(t))
    ftype = _FEEDBACK_TYPE.search(text)
    feedback_type = ftype[1].lower() if ftype else "abuse"
    addresses: list[str] = []
    for block in field_blocks(text):
        for name, value in block:
            if name in ("original-rcpt-to", "removal-recipient"):
                address = normalize_address(value)
                if address and address.lower() not in {a.lower() for a in addresses}:
                    addresses.append(address)
    if not addresses:
        to = ""
        if parts.returned is not None:
            to = decode_header(parts.returned.get("To", ""))
        elif parts.returned_headers:
            found = re.search(r"^to:([^\n]*)", parts.returned_headers, re.I | re.M)
            to = found[1] if found else ""
        for match in ADDRESS_RE.finditer(to):
            address = normalize_address(match[1])
            if address:
                addresses.append(address)
    recipients = tuple(
        RecipientReport(address=a, reason="feedback") for a in addresses[:_MAX_RECIPIENTS]
    ) or (RecipientReport(address="", reason="feedback"),)
    return Report(kind=Kind.COMPLAINT, recipients=recipients, feedback_type=feedback_type)


# -- Amazon SES notifications -------------------------------------------------------------

_SES_START = re.compile(r'\{\s*"(?:notificationType|eventType|Type)"\s*:')
_SES_DECODER = json.JSONDecoder(strict=False)


def _amazon_ses(parts: Parts) -> Report | None:
    """Amazon SES's bounce and complaint notifications (JSON, often through SNS)."""
    for text in parts.texts[:2]:
        start = _SES_START.search(text, 0, 4096)
        if start is None:
            continue
        body = text[start.start() :].replace("!\n ", "").replace("!\r\n ", "")
        try:
            obj, _ = _SES_DECODER.raw_decode(body)
            if isinstance(obj, dict) and isinstance(obj.get("Message"), str):  # SNS envelope
                obj = _SES_DECODER.decode(obj["Message"])
        except (ValueError, RecursionError):
            return None
        if isinstance(obj, dict):
            return _ses_report(obj)
    return None


def _ses_list(obj: object, *keys: str) -> list:
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj[:_MAX_RECIPIENTS] if isinstance(obj, list) else []


def _ses_report(obj: dict) -> Report | None:
    kind = str(obj.get("notificationType") or obj.get("eventType") or "").lower()
    if kind == "complaint":
        feedback = obj.get("complaint")
        ftype = feedback.get("complaintFeedbackType") if isinstance(feedback, dict) else None
        recipients = tuple(
            RecipientReport(
                address=normalize_address(str(r.get("emailAddress", ""))), reason="feedback"
            )
            for r in _ses_list(obj, "complaint", "complainedRecipients")
            if isinstance(r, dict)
        )
        return Report(
            kind=Kind.COMPLAINT,
            recipients=recipients or (RecipientReport(address="", reason="feedback"),),
            feedback_type=str(ftype or "abuse").lower()[:40],
        )
    if kind != "bounce":
        return None
    bounce = obj.get("bounce")
    transient = (
        isinstance(bounce, dict) and str(bounce.get("bounceType", "")).lower() == "transient"
    )
    recipients = []
    for r in _ses_list(obj, "bounce", "bouncedRecipients"):
        if not isinstance(r, dict):
            continue
        address = normalize_address(str(r.get("emailAddress", "")))
        diagnostic = str(r.get("diagnosticCode", ""))[:2000]
        if ";" in diagnostic[:20]:
            diagnostic = diagnostic.split(";", 1)[1].strip()
        status = find_status(str(r.get("status", ""))) or find_status(diagnostic)
        code = find_code(diagnostic)
        reason, hard = classify(code, status, diagnostic)
        if transient:
            hard = False
        recipients.append(_entry(address, "", status, code, reason, hard, diagnostic))
    return Report(kind=Kind.BOUNCE, recipients=tuple(recipients)) if recipients else None


# -- DSNs -------------------------------------------------------------------------------


def _dsn(msg: Message, parts: Parts) -> Report | None:
    if not parts.delivery_status:
        return None
    blocks = []
    for text in parts.delivery_status:
        for block in field_blocks(text):
            for group in _recipient_groups(block):
                fields = dict(reversed(group))  # the first of a repeated field wins
                if "final-recipient" in fields or "original-recipient" in fields:
                    blocks.append(fields)
    if not blocks:
        return None
    bounce_text = _bounce_text(parts)
    in_text = text_recipients(bounce_text, _senders(msg, parts))
    by_text = {a.lower(): d for a, _, d in in_text}
    recipients: list[RecipientReport] = []
    delivered: list[RecipientReport] = []
    seen: set[str] = set()
    for n, fields in enumerate(blocks[:_MAX_RECIPIENTS]):
        final = normalize_address(fields.get("final-recipient", ""))
        original = normalize_address(fields.get("original-recipient", ""))
        address, alias = (final, original) if final else (original, "")
        if not address and len(in_text) == len(blocks):
            # A recipient field with no address in it ("@mx.example.org"): the text's
            # recipient in the same place.
            address = in_text[n][0]
        if alias.lower() == address.lower():
            alias = ""
        key = address.lower()
        if key in seen:
            continue
        seen.add(key)
        action = fields.get("action", "").strip().lower()
        diagnostic = fields.get("diagnostic-code", "")
        local_program = diagnostic[:7].lower() == "x-unix;"  # a local delivery program's exit
        if ";" in diagnostic[:20]:
            diagnostic = diagnostic.split(";", 1)[1]
        diagnostic = diagnostic.strip()
        extra = by_text.get(key, "") or by_text.get(alias.lower(), "")
        if not diagnostic:
            diagnostic = extra
        status = find_status(fields.get("status", ""))
        in_diag = find_status(diagnostic)
        if in_diag and (not status or (status.endswith(".0.0") and in_diag[0] == status[0])):
            status = in_diag
        code = find_code(diagnostic)
        success = status.startswith("2") and not action.startswith(("failed", "delayed"))
        if action.startswith(_ACTION_NOT_BOUNCE) or success:
            delivered.append(_entry(address, alias, status, code, "delivered", False, diagnostic))
            continue
        text = diagnostic if diagnostic else extra
        reason, hard = classify(code, status, text)
        if reason in ("undefined", "onhold") and extra and extra != text:
            reason, hard = classify(code, status, f"{text} {extra}")
        if action.startswith("delayed"):
            if reason in ("undefined", "onhold", "systemerror", "networkerror"):
                reason = "expired"
            hard = False
        elif reason == "delivered":
            reason, hard = "onhold", False
        if reason in ("undefined", "onhold") or _vague_security(reason, text):
            reason = _whole_text_reason(bounce_text, reason)
        command, near = _command(f"{diagnostic}\n{extra}", bounce_text)
        reason = with_command(reason, status, command, code, structured=True, near=near)
        if local_program and reason in ("undefined", "onhold", "expired", "systemerror"):
            reason = "mailererror"
        category = fields.get("x-powermta-bouncecategory", "").strip().lower()
        reason = _POWERMTA.get(category, reason)
        hard = False if action.startswith("delayed") else is_hard(reason, code, status)
        recipients.append(_entry(address, alias, status, code, reason, hard, diagnostic))
    if recipients:
        return Report(kind=Kind.BOUNCE, recipients=tuple(recipients))
    return Report(kind=Kind.NONE, recipients=tuple(delivered))


_RECIPIENT_FIELDS = ("final-recipient", "original-recipient")


def _recipient_groups(block: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """A block of fields split where another recipient's fields begin without a blank line
    between them: a recipient field after the current recipient's own Action or Status."""
    groups: list[list[tuple[str, str]]] = [[]]
    named = described = False  # the current group names a recipient, then describes it
    for name, value in block:
        if name in _RECIPIENT_FIELDS:
            if described:
                groups.append([])
                described = False
            named = True
        elif name in ("action", "status") and named:
            described = True
        groups[-1].append((name, value))
    return groups


def _entry(
    address: str, alias: str, status: str, code: int, reason: str, hard: bool, diagnostic: str
) -> RecipientReport:
    return RecipientReport(
        address=address,
        alias=alias,
        status=status,
        code=code,
        reason=reason,
        hard=hard,
        diagnostic=one_line(diagnostic),
    )


def _command(near: str, text: str) -> tuple[str, bool]:
    """The refused command, and whether the recipient's own diagnostic names it."""
    command = smtp_command(near)
    return (command, True) if command else (smtp_command(text), False)


def _vague_security(reason: str, text: str) -> bool:
    """``securityerror`` only because of an X.7.x status, the text naming nothing."""
    return reason == "securityerror" and not reason_from_text(text)


def _whole_text_reason(text: str, default: str) -> str:
    """A reason from the report's whole text where the diagnostic gave none."""
    reason, _ = classify(0, "", text[:8192])
    return default if reason in ("undefined", "onhold", "delivered") else reason


# -- non-standard bounces -----------------------------------------------------------------


def _bounce_text(parts: Parts) -> str:
    texts = [cut_returned(t) for t in parts.texts[:8]]
    return "\n\n".join(t for t in texts if t.strip())


def _senders(msg: Message, parts: Parts, *, to: bool = True) -> set[str]:
    """Addresses that are the sender's side: never a failed recipient."""
    out: set[str] = set()
    for name in ("from", "to", "return-path") if to else ("from", "return-path"):
        for value in msg.get_all(name, [])[:10]:
            for match in ADDRESS_RE.finditer(decode_header(value)):
                out.add(normalize_address(match[1]).lower())
    if parts.returned is not None:
        for name in ("from", "return-path", "sender", "reply-to"):
            for value in parts.returned.get_all(name, [])[:5]:
                for match in ADDRESS_RE.finditer(decode_header(value)):
                    out.add(normalize_address(match[1]).lower())
    out.discard("")
    return out


def _looks_like_bounce(msg: Message, text: str) -> bool:
    if msg.get("X-Failed-Recipients"):
        return True
    sender = decode_header(msg.get("From", "")) + " " + str(msg.get("Return-Path", ""))
    subject = decode_header(msg.get("Subject", ""))
    from_daemon = bool(_DAEMON.search(sender)) or str(msg.get("Return-Path", "")).strip() == "<>"
    if from_daemon and (_BOUNCE_SUBJECT.search(subject) or _BOUNCE_TEXT.search(text)):
        return True
    return bool(_BOUNCE_SUBJECT.search(subject) and _BOUNCE_TEXT.search(text))


def _nonstandard(msg: Message, parts: Parts) -> Report | None:
    text = _bounce_text(parts)
    if not _looks_like_bounce(msg, text):
        return None
    senders = _senders(msg, parts)
    found = text_recipients(text, senders)
    if not found:
        # A message its sender sent to itself: the report's To may be the recipient too,
        # when a line names it as one.
        found = text_recipients(text, _senders(msg, parts, to=False), loose=False)
    if not found:
        # A notice that names nobody: the returned message's recipients (its To).
        found = _returned_to(parts, senders, text)
    failed = [normalize_address(a) for a in str(msg.get("X-Failed-Recipients", "")).split(",")]
    known = {a.lower() for a, _, _ in found}
    for address in failed:
        if address and address.lower() not in known:
            found.append((address, "", text))
    if failed and any(failed):
        wanted = {a.lower() for a in failed if a}
        kept = [f for f in found if f[0].lower() in wanted]
        found = kept or found
    if not found:
        return None
    recipients = []
    for address, alias, diagnostic in found[:_MAX_RECIPIENTS]:
        status = find_status(diagnostic)
        code = find_code(diagnostic)
        reason, hard = classify(code, status, diagnostic)
        if reason in ("undefined", "onhold", "delivered") or _vague_security(reason, diagnostic):
            reason = _whole_text_reason(text, "onhold" if reason == "delivered" else reason)
        command, near = _command(diagnostic, text)
        reason = with_command(reason, status, command, code, near=near)
        if reason == "undefined" and not (status.startswith("4") or 400 <= code < 500):
            reason = "onhold"  # a failure notice that names no cause: undecided, not unknown
        hard = is_hard(reason, code, status)
        recipients.append(_entry(address, alias, status, code, reason, hard, diagnostic))
    return Report(kind=Kind.BOUNCE, recipients=tuple(recipients))


_TO_LINE = re.compile(r"^[ \t]*to:[ \t]*([^\n]*(?:\n[ \t]+[^\n]*)*)", re.I | re.M)


def _returned_to(parts: Parts, skip: set[str], text: str) -> list[tuple[str, str, str]]:
    """The recipients in the returned message's ``To:`` (not the sender's side), the
    notice's text their diagnostic. Not when the returned message is itself a report."""
    inner = parts.returned
    if inner is not None and (
        inner.get_content_type() == "multipart/report"
        or _DAEMON.search(decode_header(inner.get("From", "")))
    ):
        return []
    if inner is not None:
        to = " ".join(decode_header(v) for v in inner.get_all("To", [])[:3])
    else:
        found = _TO_LINE.search(_returned_header_text(parts)[:65536])
        to = found[1] if found else ""
    out: list[tuple[str, str, str]] = []
    for match in ADDRESS_RE.finditer(to[:4096]):
        address = normalize_address(match[1])
        if address and address.lower() not in skip and address not in (a for a, _, _ in out):
            out.append((address, "", text))
    return out[:_MAX_RECIPIENTS]


# -- auto-replies -------------------------------------------------------------------------


def _autoreply(msg: Message, parts: Parts) -> Report | None:
    if not autoreply.is_autoreply(msg):
        return None
    address = ""
    for name in ("From", "Reply-To", "Return-Path"):
        match = ADDRESS_RE.search(decode_header(msg.get(name, "")))
        if match:
            address = normalize_address(match[1])
            break
    return Report(
        kind=Kind.AUTOREPLY, recipients=(RecipientReport(address=address, reason="vacation"),)
    )
