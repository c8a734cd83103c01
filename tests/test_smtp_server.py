"""The sans-IO SMTP server (core/smtp_server.py): commands, sequence, bounds, and that no
input makes it raise anything but its typed error or leave a command unanswered."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from salvo.core.smtp_server import Message, Reply, SMTPServer, SMTPServerError


def _server(**kw) -> SMTPServer:
    return SMTPServer("mx.test", lambda a: a.endswith("@bounces.test"), **kw)


def _codes(out) -> list[int]:
    return [o.code for o in out if isinstance(o, Reply)]


def test_a_message_is_received_with_dot_unstuffing_and_stored_before_its_250():
    s = _server()
    assert s.greeting().code == 220
    out = s.receive(b"EHLO client\r\nMAIL FROM:<>\r\nRCPT TO:<b-x@bounces.test>\r\nDATA\r\n")
    assert _codes(out) == [250, 250, 250, 354]
    assert "PIPELINING" in out[0].lines and f"SIZE {s.max_size}" in out[0].lines
    out = s.receive(b"Subject: x\r\n\r\n..dot\r\nline\r\n.\r\nNOOP\r\n")
    assert len(out) == 1 and isinstance(out[0], Message)  # NOOP waits for the store
    msg = out[0]
    assert msg.mail_from == "" and msg.rcpts == ("b-x@bounces.test",)
    assert msg.data == b"Subject: x\r\n\r\n.dot\r\nline\r\n"
    after = s.stored(True, "queued as report 1")
    assert _codes(after) == [250, 250]
    assert s.messages == 1


def test_relay_is_refused_and_data_without_recipients_is_refused():
    s = _server()
    out = s.receive(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<ann@example.org>\r\nDATA\r\n")
    assert _codes(out) == [250, 250, 550, 554]
    assert out[2].text.startswith("5.7.1")


@pytest.mark.parametrize(
    ("lines", "codes"),
    [
        (b"MAIL FROM:<>\r\n", [503]),  # before EHLO
        (b"EHLO c\r\nRCPT TO:<b-x@bounces.test>\r\n", [250, 503]),
        (b"EHLO c\r\nDATA\r\n", [250, 503]),
        (b"EHLO c\r\nMAIL FROM:<>\r\nMAIL FROM:<>\r\n", [250, 250, 503]),
        (b"FOO\r\n", [500]),
        (b"EHLO\r\n", [501]),
        (b"EHLO c\r\nMAIL FROM:<> XFOO=1\r\n", [250, 555]),
        (b"EHLO c\r\nMAIL TO:<>\r\n", [250, 501]),
        (b"EHLO c\r\nMAIL FROM:<> SIZE=99999999999\r\n", [250, 552]),
        (b"EHLO c\r\nRSET\r\nNOOP\r\nVRFY x\r\nHELP\r\n", [250, 250, 250, 252, 214]),
        (b"QUIT\r\n", [221]),
    ],
)
def test_sequence_and_syntax(lines: bytes, codes: list[int]):
    assert _codes(_server().receive(lines)) == codes


def test_a_message_over_the_size_limit_is_read_to_its_end_and_refused():
    s = _server(max_size=2000)
    s.receive(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b-x@bounces.test>\r\nDATA\r\n")
    out = s.receive(b"x" * 5000)  # a line without end, past the limit
    out += s.receive(b"\r\n" + b"line\r\n" * 1000 + b".\r\nNOOP\r\n")
    assert _codes(out) == [552, 250]
    assert not any(isinstance(o, Message) for o in out)


def test_a_long_command_line_is_refused_and_the_session_goes_on():
    s = _server()
    out = s.receive(b"EHLO " + b"x" * 5000)
    out += s.receive(b"y" * 10 + b"\r\nNOOP\r\n")
    assert _codes(out) == [500, 250]


def test_a_bare_lf_dot_does_not_end_the_message():
    s = _server()
    s.receive(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b-x@bounces.test>\r\nDATA\r\n")
    out = s.receive(b"a\n.\nMAIL FROM:<x@y>\r\n.\r\n")
    assert len(out) == 1 and isinstance(out[0], Message)
    assert b"MAIL FROM" in out[0].data


def test_too_many_errors_close_and_input_after_close_is_a_typed_error():
    s = _server(max_bad_commands=3)
    out = s.receive(b"X\r\nY\r\nZ\r\nW\r\n")
    assert _codes(out) == [500, 500, 421] and out[-1].close and s.closed
    with pytest.raises(SMTPServerError):
        s.receive(b"NOOP\r\n")


def test_messages_per_connection_are_capped():
    s = _server(max_messages=1)
    s.receive(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b-x@bounces.test>\r\nDATA\r\n")
    s.receive(b"x\r\n.\r\n")
    s.stored(True)
    out = s.receive(b"MAIL FROM:<>\r\n")
    assert _codes(out) == [421] and s.closed


def test_a_client_that_only_talks_is_closed():
    s = _server(max_commands=5)
    out = s.receive(b"EHLO c\r\n" + b"NOOP\r\n" * 5)
    assert _codes(out) == [250, 250, 250, 250, 250, 421] and out[-1].close and s.closed


_COMMANDS = st.sampled_from(
    [
        b"EHLO c\r\n",
        b"HELO c\r\n",
        b"MAIL FROM:<>\r\n",
        b"MAIL FROM:<a@b> SIZE=10\r\n",
        b"RCPT TO:<b-x@bounces.test>\r\n",
        b"RCPT TO:<x@elsewhere>\r\n",
        b"DATA\r\n",
        b".\r\n",
        b"..\r\n",
        b"RSET\r\n",
        b"NOOP\r\n",
        b"QUIT\r\n",
        b"text line\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b"\x00\xff",
    ]
)
_CHUNK = st.one_of(_COMMANDS, st.binary(max_size=300))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_CHUNK, max_size=40), st.data())
def test_no_input_makes_it_raise_and_every_command_line_is_answered(chunks, data):
    s = SMTPServer("mx.test", lambda a: a.endswith("@bounces.test"), max_size=500, max_line=200)
    for chunk in chunks:
        if s.closed:
            with pytest.raises(SMTPServerError):
                s.receive(chunk)
            return
        out = s.receive(chunk)
        while any(isinstance(o, Message) for o in out):
            assert isinstance(out[-1], Message)  # nothing is answered past a message
            assert len(out[-1].data) <= 500
            out = s.stored(data.draw(st.booleans()))
        for o in out:
            assert isinstance(o, Reply) and 200 <= o.code < 600
            assert o.encode().endswith(b"\r\n")
    # A session in command mode answers a NOOP (unless closed or reading a message).
    if not s.closed and not s.in_data:
        out = s.receive(b"\r\nNOOP\r\n")
        assert out and isinstance(out[-1], Reply)
