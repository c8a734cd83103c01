"""send_many: transactions pipelined across each other (RFC 2920 3.1).

First the sans-IO client on exact bytes (what leaves in each write, which reply ends
which transaction, when an RSET is due), then the Trio session against aiosmtpd, Postfix
``smtp-sink`` with fault options and scripted servers. Hang guards only, no timing.
"""

from __future__ import annotations

import pytest
import trio
from test_smtp_client import MSG, PIPE, ehlo_reply, encode, ready, statuses
from test_smtp_session import (
    EHLO,
    Recorder,
    by_status,
    connect,
    hostile,
    read_until,
    run,
    server,  # noqa: F401 - fixture
)
from test_smtp_sink_faults import connect as sink_connect
from test_smtp_sink_faults import sink, triples  # noqa: F401 - fixture

from salvo.core.smtp import (
    Closed,
    LocalProtocolError,
    Phase,
    Scope,
    SMTPClient,
    SMTPProtocolError,
    State,
    Status,
    TransactionDone,
)

D, F, B = Status.DELIVERED, Status.DEFERRED, Status.BOUNCED
BODY = encode(MSG)  # the dot-stuffed message and its final dot


def env(n: int, *rcpts: str) -> bytes:
    """The pipelined envelope of transaction ``n`` (SIZE from PIPE's capabilities)."""
    lines = [b"MAIL FROM:<s%d@y> SIZE=27\r\n" % n]
    lines += [b"RCPT TO:<%s>\r\n" % r.encode() for r in rcpts or (f"r{n}@x",)]
    return b"".join(lines) + b"DATA\r\n"


def txn(n: int, *rcpts: str):
    return (f"s{n}@y", list(rcpts or (f"r{n}@x",)), MSG)


def dones(events) -> dict[int, list]:
    return {e.index: statuses(e.outcomes) for e in events if isinstance(e, TransactionDone)}


# -- sans-IO: exact bytes ----------------------------------------------------------------


def test_steady_state_is_one_write_and_one_read_per_message():
    c = ready(*PIPE)
    assert c.send_many([txn(0), txn(1), txn(2)]) == []
    assert c.data_to_send() == env(0)  # a group ends at DATA
    assert c.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n") == []
    assert c.data_to_send() == BODY + env(1)  # the dot, then the next envelope
    events = c.receive_data(b"250 2.0.0 queued 0\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    assert dones(events) == {0: [("r0@x", D, None, 250)]}
    assert c.data_to_send() == BODY + env(2)
    events = c.receive_data(b"250 2.0.0 queued 1\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    assert dones(events) == {1: [("r1@x", D, None, 250)]}
    assert c.data_to_send() == BODY and c.state is State.TRANSACTION
    events = c.receive_data(b"250 2.0.0 queued 2\r\n")
    assert dones(events) == {2: [("r2@x", D, None, 250)]}
    assert (c.state, c.awaiting, c.data_to_send()) == (State.READY, None, b"")


def test_replies_split_anywhere_end_each_transaction_once():
    c = ready(*PIPE)
    c.send_many([txn(0), txn(1)])
    c.data_to_send()
    c.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    c.data_to_send()
    wire = b"250 queued 0\r\n250 ok\r\n250 ok\r\n354 go\r\n"
    events = []
    for i in range(len(wire)):
        events += c.receive_data(wire[i : i + 1])
    assert list(dones(events)) == [0] and c.data_to_send() == BODY
    assert list(dones(c.receive_data(b"250 queued 1\r\n"))) == [1]


def test_rejected_rcpt_in_one_transaction_does_not_touch_the_next():
    c = ready(*PIPE)
    c.send_many([txn(0, "a@x", "reject@x"), txn(1, "b@x")])
    assert c.data_to_send() == env(0, "a@x", "reject@x")
    c.receive_data(b"250 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n")
    assert c.data_to_send() == BODY + env(1, "b@x")  # the dot ended it: no RSET
    events = c.receive_data(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    assert dones(events) == {0: [("a@x", D, None, 250), ("reject@x", B, Scope.RECIPIENT, 550)]}
    c.data_to_send()
    assert dones(c.receive_data(b"250 ok\r\n")) == {1: [("b@x", D, None, 250)]}


def test_all_rcpts_refused_resets_before_the_next_mail():
    """MAIL accepted, every RCPT refused, DATA refused: the server still holds the
    sender (RFC 5321 4.1.1.2), so the next MAIL would be a nested MAIL: RSET first."""
    c = ready(*PIPE)
    c.send_many([txn(0, "reject@x"), txn(1)])
    c.data_to_send()
    events = c.receive_data(b"250 ok\r\n550 no\r\n554 5.5.1 no valid recipients\r\n")
    assert dones(events) == {0: [("reject@x", B, Scope.RECIPIENT, 550)]}
    assert c.data_to_send() == b"RSET\r\n" + env(1)
    assert c.awaiting is Phase.RSET
    c.receive_data(b"250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    assert c.data_to_send() == BODY
    assert dones(c.receive_data(b"250 ok\r\n")) == {1: [("r1@x", D, None, 250)]}


def test_mail_refused_needs_no_rset():
    c = ready(*PIPE)
    c.send_many([txn(0, "a@x", "b@x"), txn(1)])
    c.data_to_send()
    events = c.receive_data(b"451 4.7.1 later\r\n503 no\r\n503 no\r\n503 no\r\n")
    assert dones(events) == {0: [("a@x", F, Scope.MESSAGE, 451), ("b@x", F, Scope.MESSAGE, 451)]}
    assert c.data_to_send() == env(1)


@pytest.mark.parametrize(("reply", "status"), [(b"554 5.7.1 spam\r\n", B), (b"451 later\r\n", F)])
def test_data_refused_ends_only_its_transaction(reply, status):
    c = ready(*PIPE)
    c.send_many([txn(0, "a@x", "b@x"), txn(1)])
    c.data_to_send()
    events = c.receive_data(b"250 ok\r\n250 ok\r\n250 ok\r\n" + reply)
    code = int(reply[:3])
    assert dones(events) == {
        0: [("a@x", status, Scope.MESSAGE, code), ("b@x", status, Scope.MESSAGE, code)]
    }
    assert c.data_to_send() == b"RSET\r\n" + env(1)
    c.receive_data(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    c.data_to_send()
    assert dones(c.receive_data(b"250 ok\r\n")) == {1: [("r1@x", D, None, 250)]}


@pytest.mark.parametrize(("reply", "status"), [(b"554 5.7.1 no\r\n", B), (b"452 full\r\n", F)])
def test_final_dot_refused_ends_only_its_transaction(reply, status):
    c = ready(*PIPE)
    c.send_many([txn(0), txn(1)])
    c.data_to_send()
    c.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert c.data_to_send() == BODY + env(1)  # the dot clears the server's state
    events = c.receive_data(reply + b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert dones(events) == {0: [("r0@x", status, Scope.MESSAGE, int(reply[:3]))]}
    assert c.data_to_send() == BODY
    assert dones(c.receive_data(b"250 ok\r\n")) == {1: [("r1@x", D, None, 250)]}


def test_354_without_recipients_sends_a_dot_then_rset_then_the_next():
    c = ready(*PIPE)
    c.send_many([txn(0, "reject@x"), txn(1)])
    c.data_to_send()
    c.receive_data(b"250 ok\r\n550 no\r\n354 go anyway\r\n")
    assert c.data_to_send() == b".\r\nRSET\r\n" + env(1)
    events = c.receive_data(b"250 empty\r\n250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    assert dones(events) == {0: [("reject@x", B, Scope.RECIPIENT, 550)]}
    assert c.data_to_send() == BODY


def test_421_defers_everything_pending_in_every_transaction():
    c = ready(*PIPE)
    c.send_many([txn(0), txn(1, "a@x", "reject@x"), txn(2)])
    c.data_to_send()
    c.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    c.data_to_send()
    events = c.receive_data(b"250 queued\r\n250 ok\r\n250 ok\r\n550 no\r\n421 4.7.0 bye\r\n")
    assert dones(events) == {
        0: [("r0@x", D, None, 250)],
        1: [("a@x", F, Scope.SITE, 421), ("reject@x", B, Scope.RECIPIENT, 550)],
        2: [("r2@x", F, Scope.SITE, 421)],
    }
    assert isinstance(events[-1], Closed) and c.state is State.CLOSED and not c.reusable
    assert c.data_to_send() == b""


def test_abort_defers_every_pending_transaction_with_stream_scope():
    c = ready(*PIPE)
    c.send_many([txn(0), txn(1), txn(2)])
    c.data_to_send()
    c.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    c.data_to_send()
    assert list(dones(c.receive_data(b"250 ok\r\n250 ok\r\n"))) == [0]
    events = c.abort("timed out")
    assert dones(events) == {
        1: [("r1@x", F, Scope.STREAM, None)],
        2: [("r2@x", F, Scope.STREAM, None)],
    }
    assert c.abort("again") == []


def test_garbage_after_a_dot_keeps_that_transaction_and_breaks_the_session():
    c = ready(*PIPE)
    c.send_many([txn(0), txn(1)])
    c.data_to_send()
    c.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    c.data_to_send()
    events = c.receive_data(b"250 queued\r\nbogus\r\n")
    assert dones(events) == {0: [("r0@x", D, None, 250)]}
    assert c.state is State.BROKEN and isinstance(c.error, SMTPProtocolError)
    assert dones(c.abort("protocol error")) == {1: [("r1@x", F, Scope.STREAM, None)]}


def test_locally_refused_transaction_ends_at_once_with_its_index():
    c = ready(*PIPE)  # no SMTPUTF8
    events = c.send_many([txn(0), ("s@y", ["josé@x"], MSG), txn(2)])
    assert dones(events) == {1: [("josé@x", B, Scope.RECIPIENT, None)]}
    assert c.data_to_send() == env(0)
    c.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert c.data_to_send() == BODY + env(2)


def test_all_refused_locally_stays_ready():
    c = ready(*PIPE)
    events = c.send_many([("s@y", ["bad addr@x"], MSG), ("s@y", ["josé@x"], MSG)])
    assert sorted(dones(events)) == [0, 1] and c.state is State.READY
    assert c.data_to_send() == b""


def test_lockstep_batch_sends_one_command_per_reply_and_resets_when_needed():
    c = ready()
    c.send_many([txn(0, "reject@x"), txn(1)])
    steps = [
        (b"", b"MAIL FROM:<s0@y>\r\n"),
        (b"250 ok\r\n", b"RCPT TO:<reject@x>\r\n"),
        (b"550 no\r\n", b"RSET\r\n"),  # no DATA; the sender is still held
        (b"250 reset\r\n", b"MAIL FROM:<s1@y>\r\n"),
        (b"250 ok\r\n", b"RCPT TO:<r1@x>\r\n"),
        (b"250 ok\r\n", b"DATA\r\n"),
        (b"354 go\r\n", BODY),
    ]
    events = []
    for reply, sent in steps:
        if reply:
            events += c.receive_data(reply)
        assert c.data_to_send() == sent
    events += c.receive_data(b"250 ok\r\n")
    assert dones(events) == {
        0: [("reject@x", B, Scope.RECIPIENT, 550)],
        1: [("r1@x", D, None, 250)],
    }


def test_bdat_batch_leaves_in_one_write_with_rset_between_transactions():
    c = ready("PIPELINING", "CHUNKING")
    c.send_many([txn(0), txn(1), txn(2)])
    bdat = b"BDAT 27 LAST\r\n" + MSG
    assert c.data_to_send() == (
        b"MAIL FROM:<s0@y>\r\nRCPT TO:<r0@x>\r\n" + bdat
        + b"RSET\r\nMAIL FROM:<s1@y>\r\nRCPT TO:<r1@x>\r\n" + bdat
        + b"RSET\r\nMAIL FROM:<s2@y>\r\nRCPT TO:<r2@x>\r\n" + bdat
    )  # fmt: skip
    events = c.receive_data(
        b"250 ok\r\n250 ok\r\n554 5.6.0 bad\r\n"  # 0: BDAT refused, state unknown
        b"250 reset\r\n250 ok\r\n550 no\r\n503 5.5.1 no valid recipients\r\n"  # 1: RCPT refused
        b"250 reset\r\n250 ok\r\n250 ok\r\n250 2.0.0 queued\r\n"  # 2: the RSETs made it fine
    )
    assert dones(events) == {
        0: [("r0@x", B, Scope.MESSAGE, 554)],
        1: [("r1@x", B, Scope.RECIPIENT, 550)],
        2: [("r2@x", D, None, 250)],
    }
    c.send_mail("s@y", ["a@x"], MSG)
    assert c.data_to_send().startswith(b"MAIL")  # the last one ended well: no RSET


def test_bdat_batch_after_a_finished_transaction_needs_no_rset():
    c = ready("PIPELINING", "CHUNKING")
    c.send_mail("s@y", ["a@x"], MSG)
    c.data_to_send()
    c.receive_data(b"250 ok\r\n250 ok\r\n250 ok\r\n")
    c.send_many([txn(0)])
    assert c.data_to_send().startswith(b"MAIL FROM:<s0@y>")


def test_bdat_large_messages_in_a_batch_wait_for_their_rcpt_replies():
    c = SMTPClient("client.example", bdat_pipeline_limit=10)
    c.receive_data(b"220 x\r\n" + ehlo_reply("PIPELINING", "CHUNKING"))
    c.data_to_send()
    c.send_many([txn(0), txn(1)])
    assert c.data_to_send() == b"MAIL FROM:<s0@y>\r\nRCPT TO:<r0@x>\r\n"
    c.receive_data(b"250 ok\r\n250 ok\r\n")
    assert c.data_to_send() == (
        b"BDAT 27 LAST\r\n" + MSG + b"RSET\r\nMAIL FROM:<s1@y>\r\nRCPT TO:<r1@x>\r\n"
    )
    events = c.receive_data(b"250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n")
    assert list(dones(events)) == [0]
    assert c.data_to_send() == b"BDAT 27 LAST\r\n" + MSG


def test_send_many_wrong_state_and_empty():
    c = ready(*PIPE)
    with pytest.raises(LocalProtocolError):
        c.send_many([])
    with pytest.raises(LocalProtocolError):
        c.send_many([txn(0), ("s@y", [], MSG)])
    assert c.state is State.READY
    c.send_many([txn(0)])
    with pytest.raises(LocalProtocolError):
        c.send_many([txn(1)])  # one batch at a time


# -- aiosmtpd ----------------------------------------------------------------------------


class SpamRefuser(Recorder):
    """Recorder that refuses the message at the final dot when a recipient is spam*."""

    async def handle_DATA(self, smtp, session, envelope):
        if any(r.startswith("spam") for r in envelope.rcpt_tos):
            return "554 5.7.1 looks like spam"
        return await super().handle_DATA(smtp, session, envelope)


@pytest.mark.parametrize("pipelining", [False, True], ids=["lockstep", "pipelined"])
def test_aiosmtpd_batch_with_mixed_failures(server, pipelining):  # noqa: F811
    handler = SpamRefuser(pipelining)
    port = server(handler)
    batch = [
        ("s@y.example", ["a0@x.example", "reject0@x.example"], MSG),
        ("s@y.example", ["reject1@x.example", "defer1@x.example"], MSG),  # RSET follows
        ("s@y.example", ["spam2@x.example"], MSG),  # refused at the dot
        ("s@y.example", ["a3@x.example"], MSG),
        ("s@y.example", ["a4@x.example", "a5@x.example"], MSG),
    ]

    async def go():
        session = await connect(port)
        assert session.capabilities.pipelining is pipelining
        results = await session.send_many(batch)
        assert session.reusable
        again = await session.send_many(batch[:2])
        await session.quit()
        return results, again

    results, again = run(go)
    assert [by_status(r) for r in results] == [
        [("a0@x.example", D, None, 250), ("reject0@x.example", B, Scope.RECIPIENT, 550)],
        [
            ("reject1@x.example", B, Scope.RECIPIENT, 550),
            ("defer1@x.example", F, Scope.RECIPIENT, 450),
        ],
        [("spam2@x.example", B, Scope.MESSAGE, 554)],
        [("a3@x.example", D, None, 250)],
        [("a4@x.example", D, None, 250), ("a5@x.example", D, None, 250)],
    ]
    assert [by_status(r) for r in again] == [by_status(r) for r in results[:2]]
    assert [m[1] for m in handler.messages] == [
        ["a0@x.example"],
        ["a3@x.example"],
        ["a4@x.example", "a5@x.example"],
        ["a0@x.example"],
    ]


# -- Postfix smtp-sink -------------------------------------------------------------------


def sink_batch(port: int, n: int, guard: float = 10.0):
    async def go():
        session = await sink_connect(port)
        results = await session.send_many(
            [("s@sender.example", [f"r{i}@x.example"], MSG) for i in range(n)]
        )
        reusable, broken = session.reusable, session.broken
        await session.quit()
        return results, reusable, broken

    return run(go, guard)


def test_sink_batch_of_many_delivers_each(sink):  # noqa: F811
    results, reusable, broken = sink_batch(sink(), 200)
    assert [triples(r) for r in results] == [[(D, None, 250)]] * 200
    assert reusable and not broken


@pytest.mark.parametrize(
    ("options", "expected", "reusable"),
    [
        (("-f", "rcpt"), (B, Scope.RECIPIENT, 500), True),  # RSET between each
        (("-r", "rcpt"), (F, Scope.RECIPIENT, 450), True),
        (("-f", "mail"), (B, Scope.MESSAGE, 500), True),
        (("-f", "data"), (B, Scope.MESSAGE, 500), True),
        (("-r", "."), (F, Scope.MESSAGE, 450), True),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) and isinstance(v[0], str) else None,
)
def test_sink_refusals_end_each_transaction_of_a_batch(sink, options, expected, reusable):  # noqa: F811
    results, still, broken = sink_batch(sink(*options), 5)
    assert [triples(r) for r in results] == [[expected]] * 5
    assert (still, broken) == (reusable, False)


def test_sink_421_at_the_dot_defers_the_whole_batch(sink):  # noqa: F811
    results, reusable, broken = sink_batch(sink("-Q", "."), 5)
    assert [triples(r) for r in results] == [[(F, Scope.SITE, 421)]] * 5
    assert not reusable and not broken


def test_sink_hangup_at_the_dot_defers_the_whole_batch_with_stream_scope(sink):  # noqa: F811
    results, reusable, broken = sink_batch(sink("-q", "."), 5)
    assert [triples(r) for r in results] == [[(F, Scope.STREAM, None)]] * 5
    assert not reusable and broken


# -- scripted servers --------------------------------------------------------------------


async def greet(stream, ehlo: bytes = EHLO) -> None:
    await stream.send_all(b"220 mx.example\r\n")
    await read_until(stream, b"\r\n")
    await stream.send_all(ehlo)


def test_scripted_421_after_the_first_dot_of_a_batch():
    seen = []

    async def script(stream):
        await greet(stream)
        await read_until(stream, b"DATA\r\n")
        await stream.send_all(b"250 ok\r\n250 ok\r\n354 go\r\n")
        seen.append(await read_until(stream, b"DATA\r\n"))  # message 0 + envelope 1
        await stream.send_all(b"250 queued\r\n421 4.3.2 shutting down\r\n")
        await stream.aclose()

    async def client(port):
        session = await connect(port)
        out = await session.send_many([("s@y.example", [f"r{i}@x.example"], MSG) for i in range(3)])
        return out, session.reusable, session.broken

    results, reusable, broken = hostile(script, client, guard=4)
    assert [by_status(r) for r in results] == [
        [("r0@x.example", D, None, 250)],
        [("r1@x.example", F, Scope.SITE, 421)],
        [("r2@x.example", F, Scope.SITE, 421)],
    ]
    assert (reusable, broken) == (False, False)
    assert seen[0].endswith(
        b"\r\n.\r\nMAIL FROM:<s@y.example>\r\nRCPT TO:<r1@x.example>\r\nDATA\r\n"
    )


def test_scripted_disconnect_mid_batch_keeps_what_was_answered():
    async def script(stream):
        await greet(stream)
        await read_until(stream, b"DATA\r\n")
        await stream.send_all(b"250 ok\r\n250 ok\r\n354 go\r\n")
        await read_until(stream, b"DATA\r\n")
        await stream.send_all(b"250 queued\r\n250 ok\r\n")
        await stream.aclose()

    async def client(port):
        session = await connect(port)
        out = await session.send_many([("s@y.example", [f"r{i}@x.example"], MSG) for i in range(3)])
        return out, session.broken

    results, broken = hostile(script, client, guard=4)
    assert [triples(r) for r in results] == [
        [(D, None, 250)],
        [(F, Scope.STREAM, None)],
        [(F, Scope.STREAM, None)],
    ]
    assert broken


def test_scripted_bdat_server_holding_the_sender_after_a_failed_bdat():
    """A strict server: after BDAT LAST is refused it keeps the transaction, so a MAIL
    without RSET would be refused as nested; the batch's RSET keeps transaction 1 clean."""
    chunk = b"BDAT %d LAST\r\n" % len(MSG) + MSG
    wire = []

    async def script(stream):
        await greet(stream, b"250-mx.example\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
        data = b""
        while data.count(b"LAST\r\n") < 2 or not data.endswith(MSG):
            more = await stream.receive_some(65536)
            if not more:
                return
            data += more
        wire.append(data)
        replies = b"250 ok\r\n250 ok\r\n554 5.6.0 refused\r\n"
        if data.split(chunk)[1].startswith(b"RSET\r\n"):
            replies += b"250 reset\r\n250 ok\r\n250 ok\r\n250 2.0.0 queued\r\n"
        else:
            replies += b"503 5.5.1 nested MAIL\r\n503 no\r\n503 no\r\n"
        await stream.send_all(replies)
        await read_until(stream, b"QUIT\r\n")
        await stream.send_all(b"221 bye\r\n")

    async def client(port):
        session = await connect(port)
        out = await session.send_many([("s@y.example", [f"r{i}@x.example"], MSG) for i in range(2)])
        await session.quit()
        return out

    results = hostile(script, client, guard=4)
    assert [by_status(r) for r in results] == [
        [("r0@x.example", B, Scope.MESSAGE, 554)],
        [("r1@x.example", D, None, 250)],
    ]
    assert wire[0].count(b"RSET\r\n") == 1


def test_send_many_is_one_batch_at_a_time_and_not_on_a_closed_session(server):  # noqa: F811
    port = server(Recorder(True))

    async def go():
        session = await connect(port)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.send_many, [("s@y.example", ["a@x.example"], MSG)])
            for _ in range(100):  # until the first batch holds the session
                if session._busy:
                    break
                await trio.sleep(0)
            with pytest.raises(trio.BusyResourceError):
                await session.send_many([("s@y.example", ["b@x.example"], MSG)])
        await session.quit()
        with pytest.raises(trio.ClosedResourceError):
            await session.send_many([("s@y.example", ["c@x.example"], MSG)])

    run(go)
