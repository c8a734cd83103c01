"""The Trio SMTP session against Postfix's ``smtp-sink`` with its fault options.

``-f cmd`` rejects a command with 500 5.3.0 and ``-r cmd`` defers it with 450 4.3.0 (both
turn PIPELINING off), ``-q cmd`` hangs up without a reply, ``-Q cmd`` answers 421 and hangs
up, ``-W cmd:delay`` / ``-w delay`` wait before answering. Each case checks the status and
the scope every recipient ends with. Every case runs under a hang guard (its deadline plus
a couple of seconds), which checks that the session gives up, not how fast.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest
import trio

from salvo.actors.smtp_session import SMTPSession, SMTPSessionError
from salvo.core.smtp import Scope, SMTPTimeouts, Status

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
pytestmark = pytest.mark.skipif(not os.path.exists(SMTP_SINK), reason="no Postfix smtp-sink")

D, F, B = Status.DELIVERED, Status.DEFERRED, Status.BOUNCED
HOST = "127.0.0.3"
MSG = b"From: s@sender.example\r\nSubject: hi\r\n\r\nbody\r\n.leading dot\r\n"
FAST = SMTPTimeouts(
    connect=2, greeting=1, ehlo=1, starttls=1, auth=1, mail=1, rcpt=1, rset=1,
    data_init=1, data_block=1, data_end=1, quit=1,
)  # fmt: skip
RCPTS = ["a@x.example", "b@x.example"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@pytest.fixture
def sink():
    """``sink(*options) -> port``: start smtp-sink on HOST; killed after the test."""
    procs: list[subprocess.Popen] = []

    def start(*options: str) -> int:
        port = free_port()
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        cmd = [SMTP_SINK, *user, "-t", "10", *options, f"{HOST}:{port}", "64"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(proc)
        for _ in range(200):  # up to 2 s for it to listen
            if proc.poll() is not None:
                raise RuntimeError(f"smtp-sink exited: {proc.stderr.read().decode()}")
            with socket.socket() as s:
                if s.connect_ex((HOST, port)) == 0:
                    return port
            time.sleep(0.01)
        raise RuntimeError("smtp-sink does not listen")

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(5)


def run(fn, guard: float):
    async def main():
        with trio.fail_after(guard):  # hang guard, not a timing assertion
            return await fn()

    return trio.run(main)


async def connect(port: int) -> SMTPSession:
    return await SMTPSession.connect(
        HOST, port, ehlo_name="client.example", tls="off", timeouts=FAST, source_address=HOST
    )


def send_once(port: int, guard: float = 5.0, recipients=RCPTS):
    """One transaction on a fresh session; returns (outcomes, session)."""

    async def go():
        session = await connect(port)
        outcomes = await session.send("s@sender.example", recipients, MSG)
        await session.quit()
        return outcomes, session

    return run(go, guard)


def triples(outcomes):
    return [(o.status, o.scope, o.code) for o in outcomes]


def test_plain_sink_delivers_pipelined_over_one_connection(sink):
    port = sink()

    async def go():
        session = await connect(port)
        assert session.capabilities.pipelining and not session.capabilities.chunking
        results = [await session.send("s@sender.example", RCPTS, MSG) for _ in range(5)]
        assert session.reusable
        await session.quit()
        return results

    for outcomes in run(go, 5):
        assert triples(outcomes) == [(D, None, 250)] * 2


@pytest.mark.parametrize(
    ("options", "expected", "esc"),
    [
        (("-f", "rcpt"), (B, Scope.RECIPIENT, 500), (5, 3, 0)),
        (("-r", "rcpt"), (F, Scope.RECIPIENT, 450), (4, 3, 0)),
        (("-f", "mail"), (B, Scope.MESSAGE, 500), (5, 3, 0)),
        (("-r", "mail"), (F, Scope.MESSAGE, 450), (4, 3, 0)),
        (("-f", "data"), (B, Scope.MESSAGE, 500), (5, 3, 0)),
        (("-r", "data"), (F, Scope.MESSAGE, 450), (4, 3, 0)),
        (("-f", "."), (B, Scope.MESSAGE, 500), (5, 3, 0)),
        (("-r", "."), (F, Scope.MESSAGE, 450), (4, 3, 0)),
        (("-Q", "rcpt"), (F, Scope.SITE, 421), None),
        (("-Q", "data"), (F, Scope.SITE, 421), None),
        (("-Q", "."), (F, Scope.SITE, 421), None),
        (("-A", "0"), (B, Scope.MESSAGE, 550), None),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) and isinstance(v[0], str) else None,
)
def test_refusals_classified(sink, options, expected, esc):
    outcomes, session = send_once(sink(*options))
    assert triples(outcomes) == [expected] * 2
    if esc is not None:
        assert {o.esc for o in outcomes} == {esc}
    assert not session.broken  # a reply, not a lost stream


def test_session_reusable_after_refusals_then_rset(sink):
    """A refused RCPT leaves an open transaction: the next one starts with RSET."""
    port = sink("-f", "rcpt")

    async def go():
        session = await connect(port)
        first = await session.send("s@sender.example", ["a@x.example"], MSG)
        assert session.reusable
        second = await session.send("s@sender.example", ["b@x.example"], MSG)
        assert session.reusable
        await session.quit()
        return first, second

    first, second = run(go, 5)
    assert triples(first) == triples(second) == [(B, Scope.RECIPIENT, 500)]


def test_failed_rset_defers_with_site_scope(sink):
    port = sink("-f", "rcpt,rset")

    async def go():
        session = await connect(port)
        await session.send("s@sender.example", ["a@x.example"], MSG)
        second = await session.send("s@sender.example", ["b@x.example"], MSG)
        assert not session.reusable
        await session.aclose()
        return second

    assert triples(run(go, 5)) == [(F, Scope.SITE, 500)]


@pytest.mark.parametrize("command", ["mail", "rcpt", "data", "."])
def test_disconnect_without_reply_defers_with_stream_scope(sink, command):
    outcomes, session = send_once(sink("-q", command))
    assert triples(outcomes) == [(F, Scope.STREAM, None)] * 2
    assert session.broken and not session.reusable


@pytest.mark.parametrize(
    ("options", "phase"),
    [
        (("-w", "3"), "data_init"),
        # -W answers later commands before the delayed one: with pipelining the replies
        # would come out of order (an smtp-sink quirk), so lockstep here
        (("-p", "-W", "rcpt:3"), "rcpt"),
        (("-W", ".:3"), "data_end"),
    ],
)
def test_slow_reply_hits_its_deadline(sink, options, phase):
    # the hang guard: the deadline of each reply of the pipelined batch, plus a second
    outcomes, session = send_once(sink(*options), guard=FAST.connect + 3 * FAST.rcpt + 1)
    assert triples(outcomes) == [(F, Scope.STREAM, None)] * 2
    assert "timed out" in outcomes[0].text
    assert session.broken


def test_ehlo_refused_falls_back_to_helo(sink):
    port = sink("-f", "ehlo")

    async def go():
        session = await connect(port)
        assert not session.capabilities.esmtp and not session.capabilities.pipelining
        outcomes = await session.send("s@sender.example", RCPTS, MSG)
        await session.quit()
        return outcomes

    assert triples(run(go, 5)) == [(D, None, 250)] * 2


@pytest.mark.parametrize(
    ("options", "code"),
    [
        (("-f", "ehlo,helo"), 500),
        (("-r", "ehlo"), 450),
        (("-Q", "ehlo"), 421),
        (("-f", "connect"), 500),
        (("-r", "connect"), 450),
        (("-Q", "connect"), 421),
    ],
)
def test_session_refused_is_a_site_deferral(sink, options, code):
    port = sink(*options)

    async def go():
        with pytest.raises(SMTPSessionError) as info:
            await connect(port)
        return info.value

    err = run(go, 5)
    assert err.reply is not None and err.reply.code == code
    [outcome] = err.outcomes(["a@x.example"])
    assert (outcome.status, outcome.scope, outcome.try_next_host) == (F, Scope.SITE, True)


def test_disconnect_at_connect_is_a_site_deferral(sink):
    port = sink("-q", "connect")

    async def go():
        with pytest.raises(SMTPSessionError) as info:
            await connect(port)
        return info.value

    [outcome] = run(go, 5).outcomes(["a@x.example"])
    assert (outcome.status, outcome.scope) == (F, Scope.SITE)
