# ruff: noqa: E501
"""The report parser on built reports, and the classifier on synchronous SMTP replies."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from salvo.core.feedback.parse import VERP_PREFIX, parse_report
from salvo.core.feedback.reasons import REASONS, classify
from salvo.core.feedback.report import Kind


@pytest.mark.parametrize(
    ("code", "status", "text", "reason", "hard"),
    [
        (
            550,
            "5.1.1",
            "<ann@example.org>: Recipient address rejected: User unknown",
            "userunknown",
            True,
        ),
        (
            550,
            "5.1.1",
            "The email account that you tried to reach does not exist.",
            "userunknown",
            True,
        ),
        (552, "5.2.2", "Mailbox full", "mailboxfull", False),
        (
            452,
            "4.2.2",
            "The email account that you tried to reach is over quota.",
            "mailboxfull",
            False,
        ),
        (550, "5.1.2", "Host or domain name not found", "hostunknown", True),
        (552, "5.3.4", "Message size exceeds fixed limit", "mesgtoobig", False),
        (
            550,
            "5.7.1",
            "Service unavailable; client host [192.0.2.1] blocked using zen.spamhaus.org",
            "blocked",
            False,
        ),
        (550, "5.7.1", "Message rejected as spam by Content Filtering.", "spamdetected", False),
        (
            550,
            "5.7.26",
            "Unauthenticated email from example.jp is not accepted due to domain's DMARC policy",
            "authfailure",
            False,
        ),
        (
            550,
            "5.7.25",
            "The IP address sending this message does not have a PTR record setup",
            "requireptr",
            False,
        ),
        (
            421,
            "4.7.0",
            "Try again later, closing connection. (rate limit exceeded)",
            "speeding",
            False,
        ),
        (554, "5.7.1", "<ann@example.org>: Relay access denied", "norelaying", False),
        (550, "", "5.2.1 The email account that you tried to reach is disabled.", "suspend", False),
        (551, "5.1.6", "User has moved; please try <ann@new.example>", "hasmoved", True),
        (556, "5.1.10", "Recipient address has null MX", "notaccept", True),
        (250, "2.0.0", "OK", "delivered", False),
        (554, "", "", "onhold", False),
        (451, "", "", "undefined", False),
    ],
)
def test_classify_sync_replies(code, status, text, reason, hard):
    assert classify(code, status, text) == (reason, hard)


def test_classify_reasons_are_the_vocabulary():
    for code, status, text in [(550, "5.9.9", "x"), (0, "", "spam"), (421, "4.4.1", "")]:
        reason, _ = classify(code, status, text)
        assert reason in REASONS


def build_dsn(
    action="failed", status="5.1.1", diag="smtp; 550 5.1.1 <ann@example.org>... User unknown"
):
    boundary = "b0UND"
    return (
        "From: MAILER-DAEMON@mx.example.net\r\n"
        f"To: {VERP_PREFIX}Tok_en-1@bounces.acme.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
        "\r\n"
        f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        "Final-Recipient: rfc822; Ann@Example.ORG\r\n"
        f"Action: {action}\r\nStatus: {status}\r\nDiagnostic-Code: {diag}\r\n"
        f"--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n"
        f"Return-Path: <{VERP_PREFIX}Tok_en-1@bounces.acme.example>\r\n"
        "Message-ID: <orig-1@acme.example>\r\nFrom: news@acme.example\r\n"
        "To: ann@example.org\r\nSubject: hi\r\n\r\nhello\r\n"
        f"--{boundary}--\r\n"
    ).encode()


def test_dsn_failed():
    report = parse_report(build_dsn())
    assert report.kind is Kind.BOUNCE
    (r,) = report.recipients
    assert r.address == "Ann@example.org"
    assert (r.status, r.code, r.reason, r.hard) == ("5.1.1", 550, "userunknown", True)
    assert report.original_message_id == "<orig-1@acme.example>"
    assert report.verp_token == "Tok_en-1"


def test_dsn_delayed_is_soft():
    report = parse_report(build_dsn("delayed", "4.4.7", "smtp; 451 4.4.7 Delivery time expired"))
    assert report.kind is Kind.BOUNCE
    assert report.recipients[0].hard is False
    assert report.recipients[0].reason == "expired"


def test_dsn_delivered_is_not_a_bounce():
    report = parse_report(build_dsn("delivered", "2.0.0", "smtp; 250 2.0.0 OK"))
    assert report.kind is Kind.NONE
    assert report.recipients[0].reason == "delivered"


def test_quoted_old_dsn_does_not_count():
    inner = build_dsn().decode()
    msg = (
        "From: ann@example.org\r\nTo: news@acme.example\r\nSubject: look at this\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=OUT\r\n\r\n"
        "--OUT\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        f"--OUT\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n--OUT--\r\n"
    ).encode()
    assert parse_report(msg).kind is Kind.NONE


def test_arf_complaint():
    raw = (
        "From: fbl@isp.example\r\nTo: abuse@acme.example\r\nSubject: Abuse report\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n"
        "--B\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: x/1\r\nVersion: 1\r\n"
        "Original-Rcpt-To: bob@isp.example\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Return-Path: <{VERP_PREFIX}abc@bounces.acme.example>\r\n"
        "Message-ID: <m-2@acme.example>\r\nTo: bob@isp.example\r\n"
        "--B--\r\n"
    ).encode()
    report = parse_report(raw)
    assert report.kind is Kind.COMPLAINT
    assert report.feedback_type == "abuse"
    assert [r.address for r in report.recipients] == ["bob@isp.example"]
    assert report.recipients[0].reason == "feedback"
    assert report.original_message_id == "<m-2@acme.example>"
    assert report.verp_token == "abc"


def test_autoreply():
    raw = (
        b"From: Bob <bob@isp.example>\r\nTo: news@acme.example\r\n"
        b"Subject: Out of Office: hi\r\nAuto-Submitted: auto-replied\r\n\r\nAway until Monday.\r\n"
    )
    report = parse_report(raw)
    assert report.kind is Kind.AUTOREPLY
    assert report.recipients[0].address == "bob@isp.example"
    assert report.recipients[0].reason == "vacation"


def test_plain_mail_is_none():
    raw = b"From: a@b.example\r\nTo: c@d.example\r\nSubject: hello\r\n\r\nHow are you?\r\n"
    assert parse_report(raw).kind is Kind.NONE


def test_qmail_style():
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\r\nTo: news@acme.example\r\nSubject: failure notice\r\n\r\n"
        b"Hi. This is the qmail-send program at mx.example.net.\r\n"
        b"I'm afraid I wasn't able to deliver your message to the following addresses.\r\n\r\n"
        b"<ann@example.org>:\r\n192.0.2.1 does not like recipient.\r\n"
        b"Remote host said: 550 5.1.1 <ann@example.org>... User unknown\r\n\r\n"
        b"--- Below this line is a copy of the message.\r\n\r\n"
        b"Return-Path: <news@acme.example>\r\nMessage-ID: <q-1@acme.example>\r\n"
        b"From: news@acme.example\r\nTo: ann@example.org\r\n\r\nhello\r\n"
    )
    report = parse_report(raw)
    assert report.kind is Kind.BOUNCE
    assert [(r.address, r.reason, r.hard) for r in report.recipients] == [
        ("ann@example.org", "userunknown", True)
    ]
    assert report.original_message_id == "<q-1@acme.example>"


def _ses(body: dict) -> bytes:
    head = b"From: SES <no-reply@sns.amazonaws.com>\r\nTo: ops@acme.example\r\n"
    head += b"Subject: AWS Notification Message\r\nContent-Type: text/plain\r\n\r\n"
    return head + json.dumps(body).encode() + b"\r\n--\r\nunsubscribe link\r\n"


def test_amazon_ses_bounce_and_complaint():
    bounce = {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "bouncedRecipients": [
                {
                    "emailAddress": "ann@example.org",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
            ],
        },
    }
    report = parse_report(_ses(bounce))
    assert report.kind is Kind.BOUNCE
    assert [(r.address, r.status, r.code, r.reason, r.hard) for r in report.recipients] == [
        ("ann@example.org", "5.1.1", 550, "userunknown", True)
    ]
    complaint = {
        "notificationType": "Complaint",
        "complaint": {"complainedRecipients": [{"emailAddress": "bob@example.org"}]},
    }
    sns = {"Type": "Notification", "Message": json.dumps(complaint)}
    report = parse_report(_ses(sns))
    assert report.kind is Kind.COMPLAINT
    assert report.feedback_type == "abuse"
    assert [r.address for r in report.recipients] == ["bob@example.org"]
    assert parse_report(_ses({"notificationType": "Bounce", "bounce": [[[]]]})).kind is Kind.NONE


def test_cli_parse_json(tmp_path):
    path = tmp_path / "dsn.eml"
    path.write_bytes(build_dsn())
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from salvo.cli import main; raise SystemExit(main())",
            "feedback",
            "parse",
            "--json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (line,) = out.splitlines()
    obj = json.loads(line)
    assert obj["kind"] == "bounce"
    assert set(obj) == {"file", "kind", "feedback_type", "original_message_id", "recipients"}
    assert obj["recipients"][0]["reason"] == "userunknown"
    assert set(obj["recipients"][0]) == {
        "address",
        "status",
        "code",
        "reason",
        "hard",
        "diagnostic",
    }
