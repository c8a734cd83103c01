"""Reports as remote servers send them, built with Python's ``email`` package: RFC 3464
delivery status notifications and RFC 5965 ARF complaints about a message that was sent."""

from __future__ import annotations

from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTP


def _fields(pairs: list[tuple[str, str]]) -> Message:
    block = Message()
    for name, value in pairs:
        block[name] = value
    return block


def _report(
    report_type: str, human: str, machine: MIMEBase, message_id: str, to: str, head: dict
) -> bytes:
    outer = MIMEMultipart("report", report_type=report_type)
    for name, value in head.items():
        outer[name] = value
    outer.attach(MIMEText(human))
    outer.attach(machine)
    outer.attach(
        MIMEText(
            f"From: news@acme.example\nTo: {to}\nMessage-ID: {message_id}\nSubject: Hello\n",
            "rfc822-headers",
        )
    )
    return outer.as_bytes(policy=SMTP)


def dsn(message_id: str, recipient: str, status: str = "5.1.1", code: int = 550) -> bytes:
    """A DSN (multipart/report; report-type=delivery-status) for one recipient."""
    machine = MIMEBase("message", "delivery-status")
    machine.attach(_fields([("Reporting-MTA", "dns; mx.example.org")]))
    action = "failed" if status.startswith("5") else "delayed"
    machine.attach(
        _fields(
            [
                ("Final-Recipient", f"rfc822; {recipient}"),
                ("Action", action),
                ("Status", status),
                ("Diagnostic-Code", f"smtp; {code} {status} mailbox problem"),
            ]
        )
    )
    head = {
        "From": "MAILER-DAEMON@mx.example.org",
        "To": "bounces@acme.example",
        "Subject": "Undelivered Mail Returned to Sender",
        "Message-ID": "<dsn-1@mx.example.org>",
    }
    text = "Your message could not be delivered.\n"
    return _report("delivery-status", text, machine, message_id, recipient, head)


def arf(message_id: str, recipient: str, feedback_type: str = "abuse") -> bytes:
    """An ARF report (multipart/report; report-type=feedback-report)."""
    machine = MIMEBase("message", "feedback-report")
    machine.attach(
        _fields(
            [
                ("Feedback-Type", feedback_type),
                ("User-Agent", "isp-fbl/1.0"),
                ("Version", "1"),
                ("Original-Rcpt-To", recipient),
            ]
        )
    )
    head = {"From": "fbl@isp.example", "To": "fbl@bounces.acme.example", "Subject": "complaint"}
    text = "This is an email abuse report.\n"
    return _report("feedback-report", text, machine, message_id, recipient, head)


def plain(text: str = "hello") -> bytes:
    msg = EmailMessage()
    msg["From"] = "someone@example.net"
    msg["To"] = "postmaster@bounces.acme.example"
    msg["Subject"] = "hi"
    msg.set_content(text)
    return bytes(msg)
