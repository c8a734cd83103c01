"""The Trio SMTP session against real servers on loopback: aiosmtpd and scripted hostiles.

Every hostile case runs under a hang guard (its deadline plus a second or two): it checks
that the session gives up, not how fast.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio
import trustme
from aiosmtpd.controller import Controller

from salvo.actors.smtp_session import SMTPSession, SMTPSessionError
from salvo.core.smtp import Scope, SMTPTimeouts, Status

D, F, B = Status.DELIVERED, Status.DEFERRED, Status.BOUNCED
MSG = b"From: s@sender.example\r\nSubject: hi\r\n\r\nbody\r\n.leading dot\r\n"
FAST = SMTPTimeouts(
    connect=2, greeting=1, ehlo=1, starttls=2, auth=1, mail=1, rcpt=1, rset=1,
    data_init=1, data_block=1, data_end=1, quit=1,
)  # fmt: skip
HOST = "127.0.0.1"


def run(fn: Callable[[], Awaitable[object]], guard: float = 10.0) -> object:
    async def main():
        with trio.fail_after(guard):  # hang guard, not a timing assertion
            return await fn()

    return trio.run(main)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Recorder:
    """aiosmtpd handler: records messages; refuses or defers recipients by local part."""

    def __init__(self, pipelining: bool = False) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.pipelining = pipelining

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0]
        if local.startswith("reject"):
            return "550 5.1.1 no such user"
        if local.startswith("defer"):
            return "450 4.2.1 mailbox busy"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 queued"


@pytest.fixture
def server():
    """Start an aiosmtpd Controller with the given handler and options; stop it after."""
    started = []

    def start(handler, **kwargs):
        controller = Controller(handler, hostname=HOST, port=free_port(), **kwargs)
        controller.start()
        started.append(controller)
        return controller.port

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def tls_server_context(ca) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx.test.example").configure_cert(ctx)
    return ctx


def trusting_context(ca) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


async def connect(port, **kwargs) -> SMTPSession:
    kwargs.setdefault("timeouts", FAST)
    kwargs.setdefault("tls", "off")
    return await SMTPSession.connect(HOST, port, ehlo_name="client.example", **kwargs)


def by_status(outcomes):
    return [(o.recipient, o.status, o.scope, o.code) for o in outcomes]


# -- aiosmtpd ---------------------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [False, True], ids=["lockstep", "pipelined"])
def test_several_messages_over_one_connection(server, pipelining):
    handler = Recorder(pipelining)
    port = server(handler)

    async def go():
        session = await connect(port, source_address=HOST)
        assert session.capabilities.pipelining is pipelining
        results = []
        for n in range(3):
            rcpts = [f"a{n}@x.example", f"reject{n}@x.example", f"b{n}@x.example"]
            results.append(await session.send("s@sender.example", rcpts, MSG))
            assert session.reusable
        await session.quit()
        assert not session.reusable and not session.broken
        return results

    results = run(go)
    for n, outcomes in enumerate(results):
        assert by_status(outcomes) == [
            (f"a{n}@x.example", D, None, 250),
            (f"reject{n}@x.example", B, Scope.RECIPIENT, 550),
            (f"b{n}@x.example", D, None, 250),
        ]
    assert [(m[0], m[1]) for m in handler.messages] == [
        ("s@sender.example", [f"a{n}@x.example", f"b{n}@x.example"]) for n in range(3)
    ]
    assert all(
        m[2].replace(b"\r\n", b"\n") == MSG.replace(b"\r\n", b"\n") for m in handler.messages
    )


def test_refused_and_deferred_recipients_and_rset(server):
    handler = Recorder()
    port = server(handler)

    async def go():
        session = await connect(port)
        first = await session.send("s@y.example", ["reject@x.example", "defer@x.example"], MSG)
        second = await session.send("s@y.example", ["ok@x.example"], MSG)  # after an RSET
        await session.quit()
        return first, second

    first, second = run(go)
    assert by_status(first) == [
        ("reject@x.example", B, Scope.RECIPIENT, 550),
        ("defer@x.example", F, Scope.RECIPIENT, 450),
    ]
    assert first[1].esc == (4, 2, 1) and first[1].text == "mailbox busy"
    assert by_status(second) == [("ok@x.example", D, None, 250)]
    assert [m[1] for m in handler.messages] == [["ok@x.example"]]


def test_smtputf8(server):
    plain = server(Recorder(), enable_SMTPUTF8=False)  # Controller's default is on
    utf8_handler = Recorder()
    utf8 = server(utf8_handler, enable_SMTPUTF8=True)

    async def go():
        results = []
        for port in (plain, utf8):
            session = await connect(port)
            results.append(await session.send("s@y.example", ["josé@x.example"], MSG))
            await session.quit()
        return results

    refused, sent = run(go)
    assert by_status(refused) == [("josé@x.example", B, Scope.RECIPIENT, None)]
    assert by_status(sent) == [("josé@x.example", D, None, 250)]
    assert utf8_handler.messages[0][1] == ["josé@x.example"]


def test_size_limit_refused_locally(server):
    handler = Recorder()
    port = server(handler, data_size_limit=100)

    async def go():
        session = await connect(port)
        outcomes = await session.send("s@y.example", ["a@x.example"], MSG + b"x" * 200)
        assert session.reusable
        await session.quit()
        return outcomes

    [outcome] = run(go)
    assert (outcome.status, outcome.scope, outcome.esc) == (B, Scope.MESSAGE, (5, 3, 4))
    assert handler.messages == []


@pytest.mark.parametrize("tls", ["opportunistic", "required"])
def test_starttls_with_trusted_certificate(server, ca, tls):
    handler = Recorder()
    port = server(handler, tls_context=tls_server_context(ca))

    async def go():
        session = await connect(
            port, tls=tls, ssl_context=trusting_context(ca), server_hostname="mx.test.example"
        )
        assert session.tls and session.capabilities.esmtp
        assert not session.capabilities.starttls  # the post-TLS EHLO no longer offers it
        outcomes = await session.send("s@y.example", ["a@x.example"], MSG)
        await session.quit()
        return outcomes

    assert by_status(run(go)) == [("a@x.example", D, None, 250)]
    assert len(handler.messages) == 1


def test_starttls_required_with_wrong_hostname_fails_temporarily(server, ca):
    handler = Recorder()
    port = server(handler, tls_context=tls_server_context(ca))

    async def go():
        with pytest.raises(SMTPSessionError) as info:
            await connect(port, tls="required", ssl_context=trusting_context(ca),
                          server_hostname="wrong.example")  # fmt: skip
        return info.value

    err = run(go)
    assert err.temporary
    [outcome] = err.outcomes(["a@x.example"])
    assert (outcome.status, outcome.scope) == (F, Scope.SITE) and outcome.try_next_host


def test_starttls_opportunistic_falls_back_to_plaintext(server, ca):
    handler = Recorder()
    port = server(handler, tls_context=tls_server_context(ca))

    async def go():
        # A verifying context and the wrong name: the handshake fails, plaintext follows.
        session = await connect(port, tls="opportunistic", ssl_context=trusting_context(ca),
                                server_hostname="wrong.example")  # fmt: skip
        assert not session.tls
        outcomes = await session.send("s@y.example", ["a@x.example"], MSG)
        await session.quit()
        return outcomes

    assert by_status(run(go)) == [("a@x.example", D, None, 250)]


def test_starttls_required_but_not_offered(server):
    port = server(Recorder())

    async def go():
        with pytest.raises(SMTPSessionError, match="STARTTLS"):
            await connect(port, tls="required")

    run(go)


def test_connection_refused_is_a_site_deferral():
    port = free_port()  # nothing listens there

    async def go():
        with pytest.raises(SMTPSessionError) as info:
            await connect(port)
        return info.value

    [outcome] = run(go).outcomes(["a@x.example"])
    assert (outcome.status, outcome.scope, outcome.code) == (F, Scope.SITE, None)


# -- a scripted hostile server ----------------------------------------------------------


Script = Callable[[trio.SocketStream], Awaitable[None]]


def hostile(script: Script, client: Callable[[int], Awaitable[object]], guard: float) -> object:
    """Serve ``script`` on loopback, run ``client(port)`` against it under a hang guard."""

    async def handler(stream):
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await script(stream)  # the client may hang up on us, as it should

    async def main():
        async with trio.open_nursery() as nursery:
            [listener] = await nursery.start(partial(trio.serve_tcp, handler, 0, host=HOST))
            port = listener.socket.getsockname()[1]
            with trio.fail_after(guard):
                result = await client(port)
            nursery.cancel_scope.cancel()
        return result

    return trio.run(main)


async def read_until(stream, marker: bytes, limit: int = 1 << 20) -> bytes:
    data = b""
    while marker not in data and len(data) < limit:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
    return data


EHLO = b"250-mx.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n"


async def greet(stream, ehlo: bytes = EHLO) -> None:
    """A scripted server's greeting and its answer to EHLO (or HELO)."""
    await stream.send_all(b"220 mx.example\r\n")
    await read_until(stream, b"\r\n")
    await stream.send_all(ehlo)


async def expect_session_error(port, **kwargs) -> SMTPSessionError:
    with pytest.raises(SMTPSessionError) as info:
        await connect(port, **kwargs)
    return info.value


def test_banner_that_never_ends():
    async def script(stream):
        for _ in range(10_000):  # a continuation line every 50 ms, never the last line
            await stream.send_all(b"220-still greeting you\r\n")
            await trio.sleep(0.05)

    err = hostile(script, expect_session_error, guard=FAST.greeting + 1)
    assert err.temporary


def test_one_byte_per_interval_banner_hits_the_whole_reply_deadline():
    async def script(stream):
        for byte in b"220 mx.example ESMTP slowly\r\n":
            await stream.send_all(bytes([byte]))
            await trio.sleep(0.1)  # every recv succeeds; only a whole-reply deadline ends it

    hostile(script, expect_session_error, guard=FAST.greeting + 1)


def test_one_byte_per_interval_final_reply_defers_with_stream_scope():
    async def script(stream):
        await greet(stream)
        await read_until(stream, b"DATA\r\n")
        await stream.send_all(b"250 ok\r\n250 ok\r\n354 go\r\n")
        await read_until(stream, b"\r\n.\r\n")
        for byte in b"250 2.0.0 queued, eventually\r\n":
            await stream.send_all(bytes([byte]))
            await trio.sleep(0.1)

    async def client(port):
        session = await connect(port)
        outcomes = await session.send("s@y.example", ["a@x.example"], MSG)
        assert session.broken and not session.reusable
        return outcomes

    [outcome] = hostile(script, client, guard=FAST.data_end + 2)
    assert (outcome.status, outcome.scope) == (F, Scope.STREAM)
    assert "timed out" in outcome.text


def test_disconnect_after_the_final_dot():
    async def script(stream):
        await greet(stream)
        await read_until(stream, b"DATA\r\n")
        await stream.send_all(b"250 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n")
        await read_until(stream, b"\r\n.\r\n")
        await stream.aclose()

    async def client(port):
        session = await connect(port)
        outcomes = await session.send("s@y.example", ["a@x.example", "b@x.example"], MSG)
        assert session.broken
        return outcomes

    outcomes = hostile(script, client, guard=FAST.data_end + 2)
    assert by_status(outcomes) == [
        ("a@x.example", F, Scope.STREAM, None),
        ("b@x.example", B, Scope.RECIPIENT, 550),
    ]


def test_ten_megabyte_banner_fails_cleanly():
    async def script(stream):
        await stream.send_all(b"220 ")
        chunk = b"x" * 65536
        for _ in range(160):  # 10 MB, unless the client hangs up first
            await stream.send_all(chunk)

    err = hostile(script, expect_session_error, guard=FAST.greeting + 1)
    assert "longer than" in str(err.__cause__)


def test_421_in_the_middle_of_a_pipelined_batch():
    async def script(stream):
        await greet(stream)
        await read_until(stream, b"DATA\r\n")
        await stream.send_all(b"250 ok\r\n250 ok\r\n421 4.7.0 slow down\r\n")
        await stream.aclose()

    async def client(port):
        session = await connect(port)
        outcomes = await session.send("s@y.example", ["a@x.example", "b@x.example"], MSG)
        assert not session.reusable and not session.broken
        return outcomes

    outcomes = hostile(script, client, guard=FAST.rcpt + 2)
    assert by_status(outcomes) == [
        ("a@x.example", F, Scope.SITE, 421),
        ("b@x.example", F, Scope.SITE, 421),
    ]


def test_250_to_rcpt_then_554_to_data():
    async def script(stream):
        await greet(stream)
        await read_until(stream, b"DATA\r\n")
        await stream.send_all(b"250 ok\r\n250 ok\r\n554 5.7.1 policy\r\n")
        assert b"RSET" in await read_until(stream, b"DATA\r\n")
        await stream.send_all(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
        await read_until(stream, b"\r\n.\r\n")
        await stream.send_all(b"250 ok\r\n")
        await read_until(stream, b"QUIT\r\n")
        await stream.send_all(b"221 bye\r\n")

    async def client(port):
        session = await connect(port)
        first = await session.send("s@y.example", ["a@x.example"], MSG)
        second = await session.send("s@y.example", ["a@x.example"], MSG)
        await session.quit()
        return first + second

    outcomes = hostile(script, client, guard=5)
    assert by_status(outcomes) == [
        ("a@x.example", B, Scope.MESSAGE, 554),
        ("a@x.example", D, None, 250),
    ]


def test_too_many_recipients_are_sent_in_a_second_transaction():
    seen = []

    async def script(stream):
        await greet(stream)
        for replies in (b"250 ok\r\n250 ok\r\n452 4.5.3 too many\r\n", b"250 ok\r\n250 ok\r\n"):
            seen.append(await read_until(stream, b"DATA\r\n"))
            await stream.send_all(replies + b"354 go\r\n")
            await read_until(stream, b"\r\n.\r\n")
            await stream.send_all(b"250 ok\r\n")
        await read_until(stream, b"QUIT\r\n")
        await stream.send_all(b"221 bye\r\n")

    async def client(port):
        session = await connect(port)
        outcomes = await session.send("s@y.example", ["a@x.example", "b@x.example"], MSG)
        await session.quit()
        return outcomes

    outcomes = hostile(script, client, guard=5)
    assert by_status(outcomes) == [("a@x.example", D, None, 250), ("b@x.example", D, None, 250)]
    assert b"b@x.example" in seen[1] and b"a@x.example" not in seen[1]


def test_invalid_reply_code():
    async def script(stream):
        await greet(stream, b"999 what is this\r\n")

    err = hostile(script, expect_session_error, guard=FAST.ehlo + 1)
    assert "malformed" in str(err.__cause__)


def test_plaintext_injected_after_starttls_is_discarded(ca):
    server_ctx = tls_server_context(ca)
    got = []

    async def script(stream):
        await greet(stream, b"250-mx.example\r\n250 STARTTLS\r\n")
        await read_until(stream, b"STARTTLS\r\n")
        # The injected lines would answer the EHLO the client sends after the handshake.
        await stream.send_all(b"220 go ahead\r\n250-mx.example\r\n250 PIPELINING\r\n")
        tls = trio.SSLStream(stream, server_ctx, server_side=True)
        got.append(await read_until(tls, b"\r\n"))
        await tls.send_all(b"250-mx.example\r\n250 8BITMIME\r\n")
        await read_until(tls, b"QUIT\r\n")
        await tls.send_all(b"221 bye\r\n")

    async def client(port):
        session = await connect(port, tls="required", ssl_context=trusting_context(ca),
                                server_hostname="mx.test.example")  # fmt: skip
        caps = session.capabilities
        await session.quit()
        return caps

    caps = hostile(script, client, guard=5)
    assert got == [b"EHLO client.example\r\n"]
    assert caps.eightbitmime and not caps.pipelining  # the injected reply did not count


def test_tls_handshake_reset_under_required_and_opportunistic():
    connections = []

    async def script(stream):
        connections.append(stream)
        await stream.send_all(b"220 mx.example\r\n")
        await read_until(stream, b"\r\n")
        if len(connections) == 1:
            await stream.send_all(b"250-mx.example\r\n250 STARTTLS\r\n")
            await read_until(stream, b"STARTTLS\r\n")
            await stream.send_all(b"220 go ahead\r\n")
            await stream.receive_some(65536)  # the ClientHello
            await stream.aclose()  # reset instead of a handshake
            return
        await stream.send_all(b"250-mx.example\r\n250 STARTTLS\r\n")  # the plaintext retry
        await read_until(stream, b"QUIT\r\n")
        await stream.send_all(b"221 bye\r\n")

    async def required(port):
        return await expect_session_error(port, tls="required")

    assert "handshake" in str(hostile(script, required, guard=5))
    connections.clear()

    async def opportunistic(port):
        session = await connect(port, tls="opportunistic")
        tls = session.tls
        await session.quit()
        return tls

    assert hostile(script, opportunistic, guard=5) is False
    assert len(connections) == 2


def test_cancellation_marks_the_session_broken():
    async def script(stream):
        await greet(stream)
        await trio.sleep_forever()

    async def client(port):
        session = await connect(port)
        with trio.move_on_after(0.2):
            await session.send("s@y.example", ["a@x.example"], MSG)
        return session

    session = hostile(script, client, guard=FAST.mail + 1)
    assert session.broken and not session.reusable

    async def reuse():
        with pytest.raises(trio.ClosedResourceError):
            await session.send("s@y.example", ["a@x.example"], MSG)

    trio.run(reuse)


def test_bdat_on_the_wire():
    got = []

    async def script(stream):
        await greet(stream, b"250-mx.example\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
        data = await read_until(stream, b"LAST\r\n")
        size = int(data.split(b"BDAT ")[1].split(b" ")[0])
        head, _, body = data.partition(b"LAST\r\n")
        while len(body) < size:
            body += await stream.receive_some(65536)
        got.append((head + b"LAST\r\n", body))
        await stream.send_all(b"250 ok\r\n250 ok\r\n250 2.0.0 ok\r\n")
        await read_until(stream, b"QUIT\r\n")
        await stream.send_all(b"221 bye\r\n")

    async def client(port):
        session = await connect(port)
        outcomes = await session.send("s@y.example", ["a@x.example"], MSG)
        await session.quit()
        return outcomes

    assert by_status(hostile(script, client, guard=5)) == [("a@x.example", D, None, 250)]
    expected = b"MAIL FROM:<s@y.example>\r\nRCPT TO:<a@x.example>\r\nBDAT %d LAST\r\n" % len(MSG)
    assert got == [(expected, MSG)]  # not dot-stuffed


def test_auth_over_tls(server, ca):
    from aiosmtpd.smtp import AuthResult, LoginPassword

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == b"secret"
        return AuthResult(success=ok, handled=False)  # handled=True: "I replied myself"

    handler = Recorder()
    port = server(handler, tls_context=tls_server_context(ca), authenticator=authenticator,
                  auth_require_tls=True)  # fmt: skip

    async def go():
        results = []
        for password in ("secret", "wrong"):
            session = await connect(port, tls="required", ssl_context=trusting_context(ca),
                                    server_hostname="mx.test.example")  # fmt: skip
            try:
                await session.login("user", password)
                results.append(await session.send("s@y.example", ["a@x.example"], MSG))
            except SMTPSessionError as err:
                results.append(err)
            await session.quit()
        return results

    sent, refused = run(go)
    assert by_status(sent) == [("a@x.example", D, None, 250)]
    assert refused.reply.code == 535 and not refused.temporary


def test_reply_deadlines_move_later_only_past_the_slack():
    """A reused connection's reply deadlines creep later by a few ms per message: the
    scope keeps its deadline unless the new one is earlier or past DEADLINE_SLACK."""
    from salvo.actors.smtp_io import DEADLINE_SLACK, move_deadline

    scope = trio.CancelScope(deadline=100.0)
    move_deadline(scope, 100.0 + DEADLINE_SLACK / 2)
    assert scope.deadline == 100.0  # a little later: kept (at most the slack early)
    move_deadline(scope, 99.0)
    assert scope.deadline == 99.0  # earlier: always moved
    move_deadline(scope, 99.0 + 2 * DEADLINE_SLACK)
    assert scope.deadline == 99.0 + 2 * DEADLINE_SLACK  # past the slack: moved
