# ruff: noqa: E501
"""Bad input for the report parser (hypothesis): it never raises, stays bounded in time,
and what it returns is sane: one-line bounded diagnostics, plausible addresses."""

from __future__ import annotations

import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from salvo.bench.feedback import find_corpus
from salvo.core.feedback.fields import MAX_DIAGNOSTIC
from salvo.core.feedback.parse import parse_report
from salvo.core.feedback.report import Report

CORPUS = find_corpus(Path(__file__))
SAMPLES = sorted((CORPUS / "eml").glob("*.eml"))[::7] if (CORPUS / "eml").exists() else []
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(report: Report) -> None:
    assert isinstance(report, Report)
    for r in report.recipients:
        assert len(r.diagnostic) <= MAX_DIAGNOSTIC
        assert "\n" not in r.diagnostic and "\r" not in r.diagnostic
        for address in (r.address, r.alias):
            if address:
                assert address.count("@") == 1, address
                assert not any(ch.isspace() for ch in address), address


def timed(raw: bytes, limit: float = 2.0) -> Report:
    start = time.process_time()
    report = parse_report(raw)
    assert time.process_time() - start < limit
    check(report)
    return report


@SETTINGS
@given(st.binary(max_size=4096))
def test_random_bytes(raw):
    timed(raw)


@SETTINGS
@given(st.data())
def test_truncated_corpus_files(data):
    if not SAMPLES:
        return
    path = data.draw(st.sampled_from(SAMPLES))
    raw = path.read_bytes()
    cut = data.draw(st.integers(0, len(raw)))
    timed(raw[:cut])


@SETTINGS
@given(st.text(max_size=300))
def test_header_injection_in_diagnostic(text):
    diag = (
        f"smtp; 550 5.1.1 {text}\r\nX-Injected: yes\r\n\r\nFinal-Recipient: rfc822; evil@x.example"
    )
    raw = (
        "From: MAILER-DAEMON@mx.example\r\nTo: a@acme.example\r\nSubject: Undelivered\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Final-Recipient: rfc822; ann@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: {diag}\r\n"
        "--B--\r\n"
    ).encode("utf-8", "surrogateescape")
    timed(raw)


def test_deeply_nested_multiparts():
    depth = 200
    head = "From: MAILER-DAEMON@mx.example\r\nSubject: Undelivered\r\nMIME-Version: 1.0\r\n"
    body = ""
    for i in range(depth):
        body += f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'
    body += "Content-Type: text/plain\r\n\r\n<ann@example.org>: 550 5.1.1 User unknown\r\n"
    for i in reversed(range(depth)):
        body += f"--b{i}--\r\n"
    timed((head + body).encode())


def test_ten_megabyte_attachment():
    big = b"QUJD" * (10 * 1024 * 1024 // 4)
    raw = (
        b"From: MAILER-DAEMON@mx.example\r\nTo: a@acme.example\r\nSubject: Undelivered Mail\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Final-Recipient: rfc822; ann@example.org\r\nAction: failed\r\nStatus: 5.2.2\r\n"
        b"--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + big
        + b"\r\n--B--\r\n"
    )
    report = timed(raw)
    assert report.recipients[0].reason == "mailboxfull"


@SETTINGS
@given(
    st.lists(
        st.sampled_from(
            [
                "--B\r\n",
                "Content-Type: multipart/mixed; boundary=B\r\n",
                "\r\n",
                "Final-Recipient: rfc822; a@b.example\r\n",
                "Action: failed\r\n",
                "=?utf-8?B?",
                "<x@y.example>:\r\n",
                "550 5.1.1 ",
                "\x00\xff",
            ]
        ),
        max_size=60,
    )
)
def test_malformed_mime(pieces):
    raw = (
        "From: MAILER-DAEMON@x.example\r\nSubject: failure notice\r\nMIME-Version: 1.0\r\n"
        + "".join(pieces)
    ).encode("utf-8", "surrogateescape")
    timed(raw)
