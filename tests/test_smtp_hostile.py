"""More hostile servers for the Trio SMTP session, and a scripted CHUNKING/BDAT server.

The first cases are in test_smtp_session.py (endless and 10 MB banners, slow banner and
final reply, disconnect after the dot, 421 mid-batch, 554 to DATA, 452 splitting, a bad
code at EHLO, plaintext injected after STARTTLS in the same segment, handshake reset).
Each case here runs under a hang guard of its deadline plus a second (not a timing
assertion) and checks the per-recipient outcome.
"""

from __future__ import annotations

import ssl
import tracemalloc

import pytest
import trio
import trustme
from test_smtp_session import MSG, greet, hostile, read_until

from salvo.actors.smtp_session import SMTPSession, SMTPSessionError
from salvo.core.smtp import Scope, SMTPTimeouts, Status

D, F, B = Status.DELIVERED, Status.DEFERRED, Status.BOUNCED
FAST = SMTPTimeouts(
    connect=2, greeting=1, ehlo=1, starttls=2, auth=1, mail=1, rcpt=1, rset=1,
    data_init=1, data_block=1, data_end=1, quit=1, transaction=2,
)  # fmt: skip
SETUP = FAST.connect  # what a guard allows for connecting and EHLO on loopback


async def connect(port, **kwargs) -> SMTPSession:
    kwargs.setdefault("timeouts", FAST)
    kwargs.setdefault("tls", "off")
    return await SMTPSession.connect("127.0.0.1", port, ehlo_name="client.example", **kwargs)


def by_status(outcomes):
    return [(o.recipient, o.status, o.scope, o.code) for o in outcomes]


async def send_one(port, rcpts=("a@x.example",), message=MSG, **kwargs):
    session = await connect(port)
    outcomes = await session.send("s@y.example", list(rcpts), message, **kwargs)
    return outcomes, session


# -- replies that never end, or end too late --------------------------------------------


def test_endless_multiline_reply_to_rcpt_is_cut_at_the_line_bound():
    async def script(stream):
        await greet(stream)
        await read_until(stream, b"DATA\r\n")
        await stream.send_all(b"250 ok\r\n")
        for _ in range(100_000):  # continuation lines as fast as the client takes them
            await stream.send_all(b"250-and more\r\n" * 50)

    outcomes, session = hostile(script, send_one, guard=SETUP + FAST.rcpt + 1)
    assert by_status(outcomes) == [("a@x.example", F, Scope.STREAM, None)]
    assert "more than" in outcomes[0].text and session.broken


def test_slow_endless_multiline_reply_to_the_dot_hits_its_deadline():
    async def script(stream):
        await greet(stream)
        await read_until(stream, b"DATA\r\n")
        await stream.send_all(b"250 ok\r\n250 ok\r\n354 go\r\n")
        await read_until(stream, b"\r\n.\r\n")
        for _ in range(1000):  # fewer lines than the bound, each well within a recv
            await stream.send_all(b"250-still thinking\r\n")
            await trio.sleep(0.05)

    outcomes, session = hostile(script, send_one, guard=SETUP + FAST.data_end + 1)
    assert by_status(outcomes) == [("a@x.example", F, Scope.STREAM, None)]
    assert "timed out" in outcomes[0].text and session.broken


def test_one_byte_per_second_rcpt_reply():
    async def script(stream):
        await greet(stream)
        await read_until(stream, b"DATA\r\n")
        await stream.send_all(b"250 ok\r\n")
        for byte in b"250 2.1.5 ok\r\n":
            await stream.send_all(bytes([byte]))
            await trio.sleep(1.0)

    outcomes, session = hostile(script, send_one, guard=SETUP + FAST.rcpt + 1)
    assert by_status(outcomes) == [("a@x.example", F, Scope.STREAM, None)]
    assert session.broken


def test_pipelined_batch_is_bounded_as_a_whole():
    """Each reply just inside its own deadline: only the transaction bound ends it."""
    rcpts = [f"r{i}@x.example" for i in range(8)]

    async def script(stream):
        await greet(stream)
        await read_until(stream, b"DATA\r\n")
        for _ in range(len(rcpts) + 2):
            await trio.sleep(0.7 * FAST.rcpt)
            await stream.send_all(b"250 ok\r\n")

    async def client(port):
        return await send_one(port, rcpts)

    # without the bound: 10 replies x 0.7 s; with it, FAST.transaction
    outcomes, session = hostile(script, client, guard=SETUP + FAST.transaction + 1)
    assert {(o.status, o.scope) for o in outcomes} == {(F, Scope.STREAM)}
    assert session.broken


def test_ten_megabyte_reply_to_mail_with_bounded_memory():
    async def script(stream):
        await greet(stream)
        await read_until(stream, b"DATA\r\n")
        await stream.send_all(b"250 ")
        chunk = b"x" * 65536
        for _ in range(160):  # 10 MB without a line end, unless the client hangs up
            await stream.send_all(chunk)

    tracemalloc.start()
    try:
        outcomes, _ = hostile(script, send_one, guard=SETUP + FAST.mail + 1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert by_status(outcomes) == [("a@x.example", F, Scope.STREAM, None)]
    assert "longer than" in outcomes[0].text
    assert peak < 4 * 1024 * 1024  # the server sent 10 MB; the client kept a few 64 KiB reads


# -- replies that make no sense -----------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [b"600 no such class", b"199 too low", b"25 short", b"2500 long", b"abc", b"250x ok",
     b"250 nul\x00byte", b"\xff\xfe", b"250-ok\r\n251 changed code"],
)  # fmt: skip
def test_invalid_reply_in_a_transaction_defers_with_stream_scope(bad):
    async def script(stream):
        await greet(stream)
        await read_until(stream, b"DATA\r\n")
        await stream.send_all(b"250 ok\r\n" + bad + b"\r\n")
        await trio.sleep_forever()

    outcomes, session = hostile(script, send_one, guard=SETUP + FAST.rcpt + 1)
    assert by_status(outcomes) == [("a@x.example", F, Scope.STREAM, None)]
    assert session.broken and not session.reusable


def test_reply_out_of_turn_after_the_dot_keeps_the_delivery_and_breaks_the_session():
    async def script(stream):
        await greet(stream)
        await read_until(stream, b"DATA\r\n")
        await stream.send_all(b"250 ok\r\n250 ok\r\n354 go\r\n")
        await read_until(stream, b"\r\n.\r\n")
        await stream.send_all(b"250 ok\r\n250 an extra reply\r\n")
        await trio.sleep_forever()

    async def client(port):
        return await send_one(port)

    outcomes, session = hostile(script, client, guard=SETUP + FAST.data_end + 1)
    # the 250 to the dot came first: delivered stands; the connection is not reused
    assert by_status(outcomes) == [("a@x.example", D, None, 250)]
    assert session.broken and not session.reusable


def test_250_to_rcpt_then_554_to_bdat():
    sent = []

    async def script(stream):
        await greet(stream, b"250-mx.example\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
        sent.append(await read_until(stream, MSG))
        await stream.send_all(b"250 ok\r\n250 ok\r\n554 5.7.1 policy\r\n")
        sent.append(await read_until(stream, MSG))
        await stream.send_all(b"250 ok\r\n250 ok\r\n250 ok\r\n250 2.0.0 ok\r\n")
        await trio.sleep_forever()

    async def client(port):
        outcomes, session = await send_one(port)
        return outcomes + await session.send("s@y.example", ["b@x.example"], MSG)

    assert by_status(hostile(script, client, guard=SETUP + 2)) == [
        ("a@x.example", B, Scope.MESSAGE, 554),
        ("b@x.example", D, None, 250),
    ]
    assert sent[1].startswith(b"RSET\r\nMAIL FROM:")  # RFC 3030: after a failed BDAT


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def server_context(ca, name="mx.test.example") -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(ctx)
    return ctx


def trusting(ca) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


STARTTLS_EHLO = b"250-mx.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n"


@pytest.mark.parametrize("tls", ["required", "opportunistic"])
def test_plaintext_injected_after_starttls_in_a_separate_segment(ca, tls):
    """The injected reply arrives after the 220, on its own: it can only break TLS."""
    connections = []

    async def script(stream):
        connections.append(stream)
        await greet(stream, STARTTLS_EHLO)
        if b"STARTTLS" not in await read_until(stream, b"\r\n"):
            await stream.send_all(b"250 ok\r\n")  # the plaintext retry of opportunistic
            await trio.sleep_forever()
        await stream.send_all(b"220 go ahead\r\n")
        await trio.sleep(0.1)
        await stream.send_all(b"250-mx.example\r\n250 PIPELINING\r\n")
        tls_stream = trio.SSLStream(stream, server_context(ca), server_side=True)
        await tls_stream.do_handshake()
        await trio.sleep_forever()

    async def client(port):
        if tls == "required":
            return await _session_error(port, tls=tls, ssl_context=trusting(ca),
                                        server_hostname="mx.test.example")  # fmt: skip
        session = await connect(port, tls=tls)
        return session

    result = hostile(script, client, guard=SETUP + FAST.starttls + 1)
    if tls == "required":
        [outcome] = result.outcomes(["a@x.example"])
        assert (outcome.status, outcome.scope) == (F, Scope.SITE)
    else:  # the handshake failed on the injected bytes: plaintext, on a new connection
        assert not result.tls and len(connections) == 2
        assert not result.capabilities.starttls or result.capabilities.pipelining


async def _session_error(port, **kwargs) -> SMTPSessionError:
    with pytest.raises(SMTPSessionError) as info:
        await connect(port, **kwargs)
    return info.value


def test_certificate_for_the_wrong_name_under_required_and_opportunistic(ca):
    async def script(stream):
        await greet(stream, STARTTLS_EHLO)
        await read_until(stream, b"STARTTLS\r\n")
        await stream.send_all(b"220 go ahead\r\n")
        tls_stream = trio.SSLStream(stream, server_context(ca, "other.example"), server_side=True)
        await tls_stream.do_handshake()
        await read_until(tls_stream, b"\r\n")
        await tls_stream.send_all(b"250-mx.example\r\n250 PIPELINING\r\n")
        await trio.sleep_forever()

    async def required(port):
        return await _session_error(port, tls="required", ssl_context=trusting(ca),
                                    server_hostname="mx.test.example")  # fmt: skip

    err = hostile(script, required, guard=SETUP + FAST.starttls + 1)
    assert err.temporary and "handshake" in str(err)
    [outcome] = err.outcomes(["a@x.example"])
    assert (outcome.status, outcome.scope, outcome.try_next_host) == (F, Scope.SITE, True)

    async def opportunistic(port):  # RFC 7435: unverified encryption beats none
        session = await connect(port, tls="opportunistic")
        return session.tls

    assert hostile(script, opportunistic, guard=SETUP + FAST.starttls + 1) is True


# -- CHUNKING / BDAT against a server that implements it ---------------------------------


class BdatServer:
    """A small SMTP server with PIPELINING and CHUNKING (RFC 3030), SMTPUTF8 optional.

    It reads BDAT chunks by their exact size, answers every command in order, and
    records each transaction: (MAIL line, RCPT lines, chunk sizes, message bytes).
    """

    def __init__(self, smtputf8: bool = True, chunking: bool = True) -> None:
        self.transactions: list[tuple[bytes, list[bytes], list[int], bytes]] = []
        self.commands: list[bytes] = []
        caps = [b"mx.example", b"PIPELINING", b"8BITMIME", b"SIZE 10000000"]
        caps += [b"CHUNKING"] * chunking + [b"SMTPUTF8"] * smtputf8
        self.ehlo = b"".join(b"250-%s\r\n" % c for c in caps[:-1]) + b"250 %s\r\n" % caps[-1]

    async def serve(self, stream) -> None:
        buf = b""
        mail, rcpts, chunks, data = b"", [], [], b""

        async def line() -> bytes:
            nonlocal buf
            for _ in range(10_000):
                if b"\r\n" in buf:
                    out, buf = buf.split(b"\r\n", 1)
                    return out
                more = await stream.receive_some(65536)
                if not more:
                    raise trio.ClosedResourceError
                buf += more
            raise AssertionError("line too long")

        await stream.send_all(b"220 mx.example ESMTP\r\n")
        for _ in range(1000):
            cmd = await line()
            self.commands.append(cmd)
            verb = cmd.split(b" ", 1)[0].upper()
            if verb == b"EHLO":
                await stream.send_all(self.ehlo)
            elif verb == b"MAIL":
                mail, rcpts, chunks, data = cmd, [], [], b""
                await stream.send_all(b"250 2.1.0 ok\r\n")
            elif verb == b"RCPT":
                rcpts.append(cmd)
                await stream.send_all(b"250 2.1.5 ok\r\n")
            elif verb == b"BDAT":
                parts = cmd.split()
                size = int(parts[1])
                while len(buf) < size:
                    more = await stream.receive_some(65536)
                    assert more, "EOF inside a chunk"
                    buf += more
                data, buf = data + buf[:size], buf[size:]
                chunks.append(size)
                if len(parts) > 2 and parts[2].upper() == b"LAST":
                    self.transactions.append((mail, rcpts, chunks, data))
                    await stream.send_all(b"250 2.0.0 %d octets\r\n" % len(data))
                else:
                    await stream.send_all(b"250 2.0.0 chunk\r\n")
            elif verb == b"RSET":
                await stream.send_all(b"250 ok\r\n")
            elif verb == b"QUIT":
                await stream.send_all(b"221 bye\r\n")
                return
            else:
                await stream.send_all(b"502 5.5.1 not here\r\n")


def test_bdat_against_a_chunking_server_small_and_large_messages():
    server = BdatServer()
    small = MSG
    large = b"Subject: big\r\n\r\n" + b".dot-led line of a large message\r\n" * 4000  # ~136 KB

    async def client(port):
        session = await connect(port)
        assert session.capabilities.chunking
        results = []
        for message in (small, large, small):
            results.append(await session.send("s@y.example", ["a@x.example"], message))
            assert session.reusable
        await session.quit()
        return results

    results = hostile(server.serve, client, guard=SETUP + 3 * FAST.data_end + 1)
    assert [by_status(r) for r in results] == [[("a@x.example", D, None, 250)]] * 3
    assert [(t[2], t[3]) for t in server.transactions] == [
        ([len(m)], m)
        for m in (small, large, small)  # one chunk each, never dot-stuffed
    ]
    assert not any(c.startswith(b"DATA") for c in server.commands)


def test_smtputf8_with_and_without_server_support():
    utf8_message = "Subject: café\r\n\r\nnaïve\r\n".encode()
    with_support = BdatServer(smtputf8=True)

    async def client(port):
        session = await connect(port)
        outcomes = await session.send("sé@y.example", ["josé@x.example"], utf8_message)
        await session.quit()
        return outcomes

    outcomes = hostile(with_support.serve, client, guard=SETUP + 2)
    assert by_status(outcomes) == [("josé@x.example", D, None, 250)]
    [(mail, rcpts, _, data)] = with_support.transactions
    assert mail.endswith(b" SMTPUTF8") and mail.startswith("MAIL FROM:<sé@y.example>".encode())
    assert rcpts == ["RCPT TO:<josé@x.example>".encode()] and data == utf8_message

    without = BdatServer(smtputf8=False)

    async def refused(port):
        session = await connect(port)
        sender = await session.send("sé@y.example", ["a@x.example"], MSG)
        rcpt = await session.send("s@y.example", ["josé@x.example", "b@x.example"], MSG)
        header = await session.send("s@y.example", ["c@x.example"], utf8_message, smtputf8=True)
        assert session.reusable
        await session.quit()
        return sender, rcpt, header

    sender, rcpt, header = hostile(without.serve, refused, guard=SETUP + 2)
    assert [(o.status, o.scope, o.esc) for o in sender + header] == [
        (B, Scope.MESSAGE, (5, 6, 7)),
        (B, Scope.MESSAGE, (5, 6, 7)),
    ]
    assert by_status(rcpt) == [
        ("josé@x.example", B, Scope.RECIPIENT, None),
        ("b@x.example", D, None, 250),
    ]
    # never downgraded: only the ASCII recipient's transaction reached the server
    assert [t[1] for t in without.transactions] == [[b"RCPT TO:<b@x.example>"]]
    assert all(b"SMTPUTF8" not in c and c.isascii() for c in without.commands)
