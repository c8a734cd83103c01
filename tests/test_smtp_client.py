"""The sans-IO SMTP client, as tables of (state, input, exact bytes out, events)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from salvo.core.smtp import (
    AuthResult,
    Capabilities,
    Closed,
    LocalProtocolError,
    Outcome,
    Phase,
    Ready,
    Scope,
    SessionRefused,
    SMTPClient,
    SMTPProtocolError,
    StartTLS,
    StartTLSRefused,
    State,
    Status,
    TransactionDone,
)

MSG = b"Subject: hi\r\n\r\nline\r\n.dot\r\n"


def encode(message: bytes) -> bytes:
    """Test stand-in for salvo.ext.mime.smtp_data (input already has CRLF line ends)."""
    return message.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def ehlo_reply(*keywords: str) -> bytes:
    lines = ["mx.example", *keywords]
    out = [f"250-{line}\r\n" for line in lines[:-1]] + [f"250 {lines[-1]}\r\n"]
    return "".join(out).encode()


PIPE = ("PIPELINING", "SIZE 1000", "8BITMIME", "ENHANCEDSTATUSCODES")


def ready(*keywords: str) -> SMTPClient:
    """A client in READY after a greeting and EHLO announcing ``keywords``."""
    c = SMTPClient("client.example", data_encoder=encode)
    assert c.receive_data(b"220 mx.example ESMTP\r\n") == []
    assert c.data_to_send() == b"EHLO client.example\r\n"
    [event] = c.receive_data(ehlo_reply(*keywords))
    assert isinstance(event, Ready) and c.state is State.READY
    return c


def done(events) -> tuple[Outcome, ...]:
    [event] = [e for e in events if isinstance(e, TransactionDone)]
    return event.outcomes


def statuses(outcomes):
    return [(o.recipient, o.status, o.scope, o.code) for o in outcomes]


D, F, B = Status.DELIVERED, Status.DEFERRED, Status.BOUNCED

# -- greeting and EHLO ------------------------------------------------------------------


def test_capabilities_parsed():
    c = ready(
        "PIPELINING",
        "SIZE 35882577",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
        "CHUNKING",
        "AUTH PLAIN login",
        "LIMITS RCPTMAX=50 MAILMAX=10",
    )
    caps = c.capabilities
    assert caps.esmtp and caps.pipelining and caps.eightbitmime and caps.smtputf8
    assert caps.enhancedstatuscodes and caps.starttls and caps.chunking
    assert (caps.size, caps.rcpt_max, caps.auth) == (35882577, 50, frozenset({"PLAIN", "LOGIN"}))
    assert ready("SIZE").capabilities.size is None  # SIZE without a number: no fixed limit
    caps = ready("size 0", "AUTH=LOGIN").capabilities  # keywords are case-insensitive
    assert (caps.size, caps.size_offered, caps.auth) == (None, True, frozenset({"LOGIN"}))


@pytest.mark.parametrize(
    ("greeting", "sent", "state"),
    [
        (b"554 5.7.1 no service for you\r\n", b"QUIT\r\n", State.CLOSED),
        (b"421 4.3.2 busy\r\n", b"", State.CLOSED),  # 421: the server hangs up, no QUIT
        (b"450 later\r\n", b"QUIT\r\n", State.CLOSED),
    ],
)
def test_greeting_refused(greeting, sent, state):
    c = SMTPClient("client.example")
    [event] = c.receive_data(greeting)
    assert isinstance(event, SessionRefused) and event.reply.code == int(greeting[:3])
    assert (c.data_to_send(), c.state, c.reusable) == (sent, state, False)
    assert c.receive_data(b"221 bye\r\n") == []  # whatever follows is ignored


def test_helo_fallback_on_5yz():
    c = SMTPClient("client.example")
    c.receive_data(b"220 old\r\n")
    c.data_to_send()
    assert c.receive_data(b"502 5.5.1 what?\r\n") == []
    assert (c.data_to_send(), c.state, c.awaiting) == (
        b"HELO client.example\r\n",
        State.HELO,
        Phase.HELO,
    )
    [event] = c.receive_data(b"250 hello\r\n")
    assert event == Ready(Capabilities()) and not event.capabilities.esmtp


@pytest.mark.parametrize("reply", [b"451 4.3.0 try later\r\n", b"421 bye\r\n"])
def test_ehlo_4yz_is_a_site_refusal(reply):
    c = SMTPClient("client.example")
    c.receive_data(b"220 x\r\n")
    c.data_to_send()
    [event] = c.receive_data(reply)
    assert isinstance(event, SessionRefused) and c.state is State.CLOSED


def test_helo_refused():
    c = SMTPClient("client.example")
    c.receive_data(b"220 x\r\n500 no ehlo\r\n")
    c.data_to_send()
    [event] = c.receive_data(b"550 go away\r\n")
    assert isinstance(event, SessionRefused) and c.data_to_send() == b"QUIT\r\n"


# -- transactions -----------------------------------------------------------------------


def test_pipelined_transaction_with_mixed_rcpt_results():
    c = ready(*PIPE)
    rcpts = ["a@x.example", "b@x.example", "c@x.example", "d@x.example"]
    assert c.send_mail("s@y.example", rcpts, MSG) == []
    assert c.data_to_send() == (
        b"MAIL FROM:<s@y.example> SIZE=27\r\n"
        b"RCPT TO:<a@x.example>\r\nRCPT TO:<b@x.example>\r\n"
        b"RCPT TO:<c@x.example>\r\nRCPT TO:<d@x.example>\r\nDATA\r\n"
    )
    assert c.awaiting is Phase.MAIL
    events = c.receive_data(
        b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 unknown\r\n450 4.2.1 busy\r\n"
        b"250 ok\r\n354 go\r\n"
    )
    assert events == [] and c.awaiting is Phase.DATA_END
    assert c.data_to_send() == b"Subject: hi\r\n\r\nline\r\n..dot\r\n.\r\n"
    outcomes = done(c.receive_data(b"250 2.0.0 queued as X\r\n"))
    assert statuses(outcomes) == [
        ("a@x.example", D, None, 250),
        ("b@x.example", B, Scope.RECIPIENT, 550),
        ("c@x.example", F, Scope.RECIPIENT, 450),
        ("d@x.example", D, None, 250),
    ]
    assert outcomes[1].esc == (5, 1, 1) and outcomes[0].text == "queued as X"
    assert c.state is State.READY and c.reusable and c.data_to_send() == b""


def test_lockstep_sends_one_command_per_reply():
    c = ready("8BITMIME")
    c.send_mail("s@y", ["a@x", "b@x"], "Subject: é\r\n\r\n".encode())
    steps = [
        (b"", b"MAIL FROM:<s@y> BODY=8BITMIME\r\n"),
        (b"250 ok\r\n", b"RCPT TO:<a@x>\r\n"),
        (b"550 no\r\n", b"RCPT TO:<b@x>\r\n"),
        (b"250 ok\r\n", b"DATA\r\n"),
        (b"354 go\r\n", "Subject: é\r\n\r\n.\r\n".encode()),
    ]
    for reply, sent in steps:
        if reply:
            assert c.receive_data(reply) == []
        assert c.data_to_send() == sent
    assert statuses(done(c.receive_data(b"250 ok\r\n"))) == [
        ("a@x", B, Scope.RECIPIENT, 550),
        ("b@x", D, None, 250),
    ]


def test_lockstep_mail_refused_sends_no_rcpt():
    c = ready()
    c.send_mail("s@y", ["a@x", "b@x"], MSG)
    assert c.data_to_send() == b"MAIL FROM:<s@y>\r\n"
    outcomes = done(c.receive_data(b"553 5.1.8 bad sender\r\n"))
    assert statuses(outcomes) == [("a@x", B, Scope.MESSAGE, 553), ("b@x", B, Scope.MESSAGE, 553)]
    assert c.data_to_send() == b""
    c.send_mail("s@y", ["a@x"], MSG)
    assert c.data_to_send() == b"MAIL FROM:<s@y>\r\n"  # MAIL refused: no transaction, no RSET


def test_pipelined_mail_refused_ignores_the_503s():
    c = ready(*PIPE)
    c.send_mail("s@y", ["a@x", "b@x"], MSG)
    c.data_to_send()
    outcomes = done(c.receive_data(b"451 4.7.1 slow down\r\n503 5.5.1 no\r\n503 no\r\n503 no\r\n"))
    assert statuses(outcomes) == [("a@x", F, Scope.MESSAGE, 451), ("b@x", F, Scope.MESSAGE, 451)]


def test_all_rcpt_rejected_sends_no_payload_then_rset():
    c = ready(*PIPE)
    c.send_mail("s@y", ["a@x", "b@x"], MSG)
    c.data_to_send()
    events = c.receive_data(b"250 ok\r\n550 no\r\n550 no\r\n554 5.5.1 no valid recipients\r\n")
    assert statuses(done(events)) == [
        ("a@x", B, Scope.RECIPIENT, 550),
        ("b@x", B, Scope.RECIPIENT, 550),
    ]
    assert c.data_to_send() == b""  # no message
    c.send_mail("s@y", ["c@x"], MSG)
    assert c.data_to_send().startswith(b"RSET\r\nMAIL FROM:<s@y> SIZE=27\r\nRCPT TO:<c@x>\r\n")
    assert c.awaiting is Phase.RSET
    c.receive_data(b"250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    assert c.data_to_send().endswith(b"\r\n.\r\n")
    assert statuses(done(c.receive_data(b"250 ok\r\n"))) == [("c@x", D, None, 250)]


def test_all_rcpt_rejected_but_354_sends_an_empty_message():
    c = ready(*PIPE)
    c.send_mail("s@y", ["a@x"], MSG)
    c.data_to_send()
    assert c.receive_data(b"250 ok\r\n550 no\r\n354 go ahead anyway\r\n") == []
    assert c.data_to_send() == b".\r\n"
    outcomes = done(c.receive_data(b"250 ok, empty message queued\r\n"))
    assert statuses(outcomes) == [("a@x", B, Scope.RECIPIENT, 550)]
    c.send_mail("s@y", ["a@x"], MSG)
    assert c.data_to_send().startswith(b"RSET\r\n")


def test_lockstep_all_rcpt_rejected_never_sends_data():
    c = ready()
    c.send_mail("s@y", ["a@x"], MSG)
    c.data_to_send()
    c.receive_data(b"250 ok\r\n")
    assert c.data_to_send() == b"RCPT TO:<a@x>\r\n"
    outcomes = done(c.receive_data(b"551 no\r\n"))
    assert statuses(outcomes) == [("a@x", B, Scope.RECIPIENT, 551)]
    assert c.data_to_send() == b""
    c.send_mail("s@y", ["a@x"], MSG)
    assert c.data_to_send() == b"RSET\r\n"  # lockstep: RSET alone first


@pytest.mark.parametrize(
    ("data_reply", "status"),
    [(b"554 5.7.1 spam\r\n", B), (b"451 4.3.0 later\r\n", F)],
)
def test_data_refused_after_rcpt_accepted_is_a_message_failure(data_reply, status):
    c = ready(*PIPE)
    c.send_mail("s@y", ["a@x", "b@x", "c@x"], MSG)
    c.data_to_send()
    events = c.receive_data(b"250 ok\r\n250 ok\r\n550 no\r\n250 ok\r\n" + data_reply)
    code = int(data_reply[:3])
    assert statuses(done(events)) == [
        ("a@x", status, Scope.MESSAGE, code),
        ("b@x", B, Scope.RECIPIENT, 550),
        ("c@x", status, Scope.MESSAGE, code),
    ]
    assert c.data_to_send() == b""
    c.send_mail("s@y", ["a@x"], MSG)
    assert c.data_to_send().startswith(b"RSET\r\n")


@pytest.mark.parametrize(
    ("final", "status"), [(b"554 5.7.1 rejected\r\n", B), (b"452 4.3.1 full\r\n", F)]
)
def test_final_dot_refused(final, status):
    c = ready(*PIPE)
    c.send_mail("s@y", ["a@x"], MSG)
    c.data_to_send()
    c.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    c.data_to_send()
    assert statuses(done(c.receive_data(final))) == [("a@x", status, Scope.MESSAGE, int(final[:3]))]
    c.send_mail("s@y", ["a@x"], MSG)
    assert c.data_to_send().startswith(b"MAIL")  # a finished DATA needs no RSET


def test_too_many_recipients_come_back_as_split():
    c = ready(*PIPE)
    c.send_mail("s@y", ["a@x", "b@x", "c@x", "d@x"], MSG)
    c.data_to_send()
    c.receive_data(
        b"250 ok\r\n250 ok\r\n452 4.5.3 too many recipients\r\n452 too many\r\n"
        b"452 4.2.2 mailbox full\r\n354 go\r\n"
    )
    c.data_to_send()
    outcomes = done(c.receive_data(b"250 ok\r\n"))
    assert [(o.recipient, o.status, o.split) for o in outcomes] == [
        ("a@x", D, False),
        ("b@x", F, True),  # 4.5.3
        ("c@x", F, True),  # 452 without ESC after an accepted recipient
        ("d@x", F, False),  # 4.2.2 is a full mailbox, not a split
    ]


def test_rcptmax_splits_without_sending():
    c = ready("PIPELINING", "LIMITS RCPTMAX=2")
    c.send_mail("s@y", ["a@x", "b@x", "c@x"], MSG)
    assert b"c@x" not in c.data_to_send()
    outcomes = done(c.receive_data(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n"))
    assert [(o.status, o.split) for o in outcomes] == [(D, False), (D, False), (F, True)]


def test_421_mid_batch_defers_everyone_pending():
    c = ready(*PIPE)
    c.send_mail("s@y", ["a@x", "b@x", "c@x"], MSG)
    c.data_to_send()
    events = c.receive_data(b"250 ok\r\n550 5.1.1 no\r\n250 ok\r\n421 4.7.0 too fast\r\n354 x\r\n")
    outcomes = done(events)
    assert statuses(outcomes) == [
        ("a@x", B, Scope.RECIPIENT, 550),
        ("b@x", F, Scope.SITE, 421),
        ("c@x", F, Scope.SITE, 421),
    ]
    assert isinstance(events[-1], Closed) and events[-1].reply.code == 421
    assert (c.state, c.reusable, c.data_to_send()) == (State.CLOSED, False, b"")
    assert c.receive_data(b"250 late\r\n") == []


def test_421_while_idle_closes():
    c = ready(*PIPE)
    [event] = c.receive_data(b"421 4.4.2 idle timeout\r\n")
    assert isinstance(event, Closed) and c.state is State.CLOSED


def test_unsolicited_reply_is_a_protocol_error():
    c = ready(*PIPE)
    with pytest.raises(SMTPProtocolError):
        c.receive_data(b"250 surprise\r\n")
    assert c.state is State.BROKEN
    with pytest.raises(LocalProtocolError):
        c.receive_data(b"250 again\r\n")


def test_eof_and_abort():
    c = ready(*PIPE)
    c.send_mail("s@y", ["a@x", "b@x"], MSG)
    c.data_to_send()
    c.receive_data(b"250 ok\r\n550 no\r\n250 ok\r\n354 go\r\n")
    with pytest.raises(SMTPProtocolError, match="DATA_END"):
        c.receive_data(b"")  # lost after the final dot: the outcome is unknown
    outcomes = done(c.abort("lost connection"))
    assert statuses(outcomes) == [("a@x", B, Scope.RECIPIENT, 550), ("b@x", F, Scope.STREAM, None)]
    assert outcomes[1].try_next_host and outcomes[1].text == "lost connection"
    assert c.abort("again") == [] and c.state is State.BROKEN
    idle = ready()
    assert idle.receive_data(b"") == [Closed(None)] and idle.state is State.CLOSED


# -- BDAT -------------------------------------------------------------------------------


def test_bdat_small_message_is_pipelined_with_the_envelope():
    c = ready("PIPELINING", "CHUNKING")
    c.send_mail("s@y", ["a@x"], MSG)
    assert c.data_to_send() == (
        b"MAIL FROM:<s@y>\r\nRCPT TO:<a@x>\r\nBDAT 27 LAST\r\n" + MSG  # not dot-stuffed
    )
    assert statuses(done(c.receive_data(b"250 ok\r\n250 ok\r\n250 2.0.0 ok\r\n"))) == [
        ("a@x", D, None, 250)
    ]


def test_bdat_adds_a_final_crlf():
    c = ready("CHUNKING")
    c.send_mail("s@y", ["a@x"], b"Subject: x\r\n\r\nno newline")
    assert c.data_to_send() == b"MAIL FROM:<s@y>\r\n"  # lockstep
    c.receive_data(b"250 ok\r\n")
    assert c.data_to_send() == b"RCPT TO:<a@x>\r\n"
    c.receive_data(b"250 ok\r\n")
    assert c.data_to_send() == b"BDAT 26 LAST\r\nSubject: x\r\n\r\nno newline\r\n"


def test_bdat_large_message_waits_for_the_rcpt_replies():
    c = SMTPClient("client.example", bdat_pipeline_limit=10)
    c.receive_data(b"220 x\r\n" + ehlo_reply("PIPELINING", "CHUNKING"))
    c.data_to_send()
    c.send_mail("s@y", ["a@x", "b@x"], MSG)
    assert c.data_to_send() == b"MAIL FROM:<s@y>\r\nRCPT TO:<a@x>\r\nRCPT TO:<b@x>\r\n"
    c.receive_data(b"250 ok\r\n250 ok\r\n")
    assert c.data_to_send() == b""
    c.receive_data(b"550 no\r\n")
    assert c.data_to_send() == b"BDAT 27 LAST\r\n" + MSG
    outcomes = done(c.receive_data(b"554 5.6.0 bad message\r\n"))
    assert statuses(outcomes) == [("a@x", B, Scope.MESSAGE, 554), ("b@x", B, Scope.RECIPIENT, 550)]
    c.send_mail("s@y", ["a@x"], MSG)
    assert c.data_to_send().startswith(b"RSET\r\n")  # RFC 3030: reset after a failed BDAT


def test_bdat_large_message_not_sent_when_no_recipient():
    c = SMTPClient("client.example", bdat_pipeline_limit=10)
    c.receive_data(b"220 x\r\n" + ehlo_reply("PIPELINING", "CHUNKING"))
    c.data_to_send()
    c.send_mail("s@y", ["a@x"], MSG)
    c.data_to_send()
    outcomes = done(c.receive_data(b"250 ok\r\n550 no\r\n"))
    assert statuses(outcomes) == [("a@x", B, Scope.RECIPIENT, 550)]
    assert c.data_to_send() == b""


# -- local refusals ---------------------------------------------------------------------


def test_smtputf8_recipient_refused_without_sending():
    c = ready(*PIPE)
    c.send_mail("s@y", ["josé@x.example", "b@x"], MSG)
    assert c.data_to_send() == b"MAIL FROM:<s@y> SIZE=27\r\nRCPT TO:<b@x>\r\nDATA\r\n"
    c.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    c.data_to_send()
    outcomes = done(c.receive_data(b"250 ok\r\n"))
    assert statuses(outcomes) == [
        ("josé@x.example", B, Scope.RECIPIENT, None),
        ("b@x", D, None, 250),
    ]
    assert outcomes[0].esc == (5, 6, 7)


def test_smtputf8_sender_or_headers_refused_entirely():
    c = ready(*PIPE)
    events = c.send_mail("sé@y", ["a@x"], MSG)
    assert statuses(done(events)) == [("a@x", B, Scope.MESSAGE, None)]
    assert done(c.send_mail("s@y", ["a@x"], MSG, smtputf8=True))[0].esc == (5, 6, 7)
    assert c.data_to_send() == b"" and c.state is State.READY


def test_smtputf8_used_when_offered():
    c = ready("PIPELINING", "SMTPUTF8")
    c.send_mail("s@y", ["josé@x.example"], MSG)
    assert c.data_to_send() == (
        "MAIL FROM:<s@y> SMTPUTF8\r\nRCPT TO:<josé@x.example>\r\nDATA\r\n".encode()
    )


def test_size_refused_without_sending():
    c = ready("PIPELINING", "SIZE 20")
    outcomes = done(c.send_mail("s@y", ["a@x", "b@x"], MSG))
    assert [(o.status, o.scope, o.esc) for o in outcomes] == [(B, Scope.MESSAGE, (5, 3, 4))] * 2
    assert c.data_to_send() == b"" and c.reusable


@pytest.mark.parametrize("bad", ["a@x>\r\nRSET", "a b@x", "<a@x>", ""])
def test_addresses_cannot_inject_commands(bad):
    c = ready(*PIPE)
    c.send_mail("s@y", [bad, "ok@x"], MSG)
    assert c.data_to_send().count(b"RCPT") == 1
    c2 = ready(*PIPE)
    outcomes = done(c2.send_mail(bad or "s@y\r\nQUIT", ["a@x"], MSG))
    assert outcomes[0].status is B and c2.data_to_send() == b""


# -- STARTTLS, AUTH, QUIT ---------------------------------------------------------------


def test_starttls_discards_read_ahead_and_requires_ehlo():
    c = ready("PIPELINING", "STARTTLS")
    c.starttls()
    assert c.data_to_send() == b"STARTTLS\r\n"
    events = c.receive_data(b"220 2.0.0 go ahead\r\n250-injected\r\n250 PIPELINING\r\n")
    assert events == [StartTLS()] and c.state is State.TLS
    with pytest.raises(LocalProtocolError):
        c.receive_data(b"250 more plaintext\r\n")
    with pytest.raises(LocalProtocolError):
        c.send_mail("s@y", ["a@x"], MSG)
    c.tls_established()
    assert (c.tls, c.capabilities, c.data_to_send()) == (
        True,
        Capabilities(),
        b"EHLO client.example\r\n",
    )
    [event] = c.receive_data(ehlo_reply("CHUNKING"))
    assert isinstance(event, Ready) and event.capabilities.chunking
    assert not event.capabilities.pipelining
    with pytest.raises(LocalProtocolError):
        c.starttls()  # TLS already on


def test_starttls_refused_stays_in_plaintext():
    c = ready("STARTTLS")
    c.starttls()
    c.data_to_send()
    [event] = c.receive_data(b"454 4.7.0 TLS not available\r\n")
    assert isinstance(event, StartTLSRefused) and c.state is State.READY and not c.tls


def test_starttls_not_offered():
    with pytest.raises(LocalProtocolError):
        ready("PIPELINING").starttls()


def test_auth_plain_and_login():
    c = ready("AUTH PLAIN LOGIN")
    with pytest.raises(LocalProtocolError):
        c.login("u", "p")  # no password in plaintext
    c.login("u", "p", allow_plaintext=True)
    assert c.data_to_send() == b"AUTH PLAIN AHUAcA==\r\n"
    [event] = c.receive_data(b"235 2.7.0 ok\r\n")
    assert event == AuthResult(event.reply) and event.reply.code == 235
    c = ready("AUTH LOGIN")
    c.login("u", "p", allow_plaintext=True)
    assert c.data_to_send() == b"AUTH LOGIN dQ==\r\n"
    assert c.receive_data(b"334 UGFzc3dvcmQ6\r\n") == []
    assert c.data_to_send() == b"cA==\r\n"
    [event] = c.receive_data(b"535 5.7.8 bad credentials\r\n")
    assert event.reply.is_permanent and c.state is State.READY
    c.login("u", "p", allow_plaintext=True)
    c.receive_data(b"334 a\r\n334 b\r\n")  # more challenges than LOGIN has answers
    assert c.data_to_send() == b"AUTH LOGIN dQ==\r\ncA==\r\n*\r\n"
    [event] = c.receive_data(b"501 cancelled\r\n")
    assert event.reply.code == 501 and c.state is State.READY


def test_quit():
    c = ready()
    c.quit()
    assert c.data_to_send() == b"QUIT\r\n" and c.awaiting is Phase.QUIT
    [event] = c.receive_data(b"221 bye\r\n")
    assert event.reply.code == 221 and c.state is State.CLOSED


def test_local_calls_in_the_wrong_state():
    c = SMTPClient("client.example")
    for call in (c.quit, c.starttls, c.tls_established, lambda: c.send_mail("s", ["a"], MSG)):
        with pytest.raises(LocalProtocolError):
            call()
    with pytest.raises(LocalProtocolError):
        ready().send_mail("s@y", [], MSG)
    with pytest.raises(LocalProtocolError):
        SMTPClient("bad name\r\n")


def test_core_smtp_does_no_io():
    for path in (Path(__file__).parent.parent / "core" / "smtp").glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in {"trio", "socket", "ssl", "zmq"}, path.name


# -- every (state, input) pair ----------------------------------------------------------


def _greeting():
    return SMTPClient("c.example", data_encoder=encode)


def _at(*replies: bytes, keywords=PIPE, then=None):
    def make():
        c = _greeting()
        c.receive_data(b"220 x\r\n")
        for reply in replies:
            c.receive_data(reply)
        if then:
            then(c)
        return c

    return make


def _ready(*keywords):
    return _at(ehlo_reply(*keywords))


def _txn(*keywords, replies=b""):
    def go(c):
        c.send_mail("s@y", ["a@x", "b@x"], MSG)
        if replies:
            c.receive_data(replies)

    return _at(ehlo_reply(*keywords), then=go)


STARTS = {
    "greeting": _greeting,
    "ehlo": _at(),
    "helo": _at(b"502 no\r\n"),
    "ready-pipe": _ready(*PIPE),
    "ready-lockstep": _ready(),
    "ready-bdat": _ready("PIPELINING", "CHUNKING", "STARTTLS", "AUTH PLAIN"),
    "starttls": _at(ehlo_reply("STARTTLS"), then=lambda c: c.starttls()),
    "tls": _at(
        ehlo_reply("STARTTLS"), then=lambda c: (c.starttls(), c.receive_data(b"220 go\r\n"))
    ),
    "auth": _at(ehlo_reply("AUTH LOGIN"), then=lambda c: c.login("u", "p", allow_plaintext=True)),
    "txn-pipe": _txn(*PIPE),
    "txn-pipe-mail-ok": _txn(*PIPE, replies=b"250 ok\r\n"),
    "txn-pipe-354": _txn(*PIPE, replies=b"250 ok\r\n250 ok\r\n550 no\r\n354 go\r\n"),
    "txn-lockstep": _txn(),
    "txn-lockstep-rcpt": _txn(replies=b"250 ok\r\n"),
    "txn-bdat": _txn("CHUNKING"),
    "quit": _at(ehlo_reply(), then=lambda c: c.quit()),
    "closed": _at(b"421 bye\r\n"),
    "broken": _at(then=lambda c: c.abort("x")),
}

REPLIES = [
    b"220 ok\r\n", b"221 bye\r\n", b"235 ok\r\n", b"250 ok\r\n", b"250-a\r\n250 b\r\n",
    b"334 xx\r\n", b"354 go\r\n", b"421 bye\r\n", b"450 later\r\n", b"452 4.5.3 many\r\n",
    b"500 what\r\n", b"502 no\r\n", b"503 order\r\n", b"550 no\r\n", b"554 no\r\n",
    b"hello\r\n", b"250-a\r\n251 b\r\n", b"", b"25", b"0 partial\r\n",
]  # fmt: skip

CALLS = {
    "starttls": lambda c: c.starttls(),
    "tls_established": lambda c: c.tls_established(),
    "login": lambda c: c.login("u", "p", allow_plaintext=True),
    "quit": lambda c: c.quit(),
    "send_mail": lambda c: c.send_mail("s@y", ["a@x", "ü@x"], MSG),
    "abort": lambda c: c.abort("test"),
}

_inputs = st.one_of(st.sampled_from(REPLIES), st.sampled_from(sorted(CALLS)))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(STARTS)), st.lists(_inputs, min_size=1, max_size=8))
def test_every_state_and_input_gives_a_state_or_a_typed_error(start, inputs):
    c = STARTS[start]()
    for item in inputs:
        try:
            events = CALLS[item](c) if isinstance(item, str) else c.receive_data(item)
        except (LocalProtocolError, SMTPProtocolError):
            continue
        assert c.state in State
        c.data_to_send()
        for event in events or []:
            if isinstance(event, TransactionDone):  # every recipient has exactly one outcome
                assert [o.recipient for o in event.outcomes] in (["a@x", "b@x"], ["a@x", "ü@x"])
        if c.state is State.READY:
            assert c.awaiting is None
        if c.state in (State.CLOSED, State.BROKEN):
            assert not c.reusable
