"""End to end: a real node with its inbound feedback listener, an aiosmtpd sink, and
``smtplib`` as the remote servers sending DSNs and ARF reports about delivered messages.

The reports are built with Python's ``email`` package from the messages at the sink
(their Message-ID). Recipients end suppressed (hard bounce, complaint), a soft bounce
does not suppress before the limit, a report about a message this node never sent changes
nothing, relay is refused, a message over SIZE is refused, and a report stored before a
SIGKILL is processed after the restart.
"""

from __future__ import annotations

import smtplib
import socket
from pathlib import Path

import pytest
from feedbackutil import arf, dsn
from nodeutil import AioSink, NodeSetup, free_port, job, node_with_sink, wait_for

from salvo.client import Producer
from salvo.core.feedback.store import RawReport
from salvo.core.spool import Spool

BOUND = 90.0
DOMAIN = "bounces.acme.example"


def _running(tmp_path: Path, port: int):
    """A started node with its feedback listener on ``port`` and a sink for example.org."""
    extra = f"""
[feedback]
listen = "127.0.0.1:{port}"
domains = ["{DOMAIN}"]
soft_bounce_limit = 2

[traffic.verp]
verp = true
"""
    return node_with_sink(tmp_path, "127.0.0.2", extra)


def _deliver(
    setup: NodeSetup, sink: AioSink, rcpts: list[str], job_id: str = "fb-1", **extra
) -> dict[str, str]:
    with Producer(setup.endpoint, timeout=30, attempts=3) as producer:
        reply = producer.submit(job(job_id, rcpts, **extra))
    assert reply.status == "accepted", reply
    mids = {a.to: a.message_id for a in reply.accepted}
    wait_for(lambda: set(mids.values()) <= set(sink.by_message_id()), BOUND, 0.1)
    assert set(mids.values()) <= set(sink.by_message_id())
    return mids


def _send(port: int, rcpt: str, data: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail("", [rcpt], data)


def _check(setup: NodeSetup, address: str) -> str:
    done = setup.cli(
        "suppress", "--data", str(setup.data_dir), "check", "--tenant", "acme", address
    )
    return done.stdout


def _events(setup: NodeSetup, kind: str) -> list[dict]:
    return [e for e in setup.events() if e["type"] == kind]


def test_reports_over_smtp_suppress_the_recipients_they_are_tied_to(tmp_path: Path):
    port = free_port()
    with _running(tmp_path, port) as (setup, node, sink):
        rcpts = ["ann@example.org", "bob@example.org", "cy@example.org", "dee@example.org"]
        mids = _deliver(setup, sink, rcpts)
        fbl = f"fbl@{DOMAIN}"
        _send(port, f"postmaster@{DOMAIN}", dsn(mids["ann@example.org"], "ann@example.org"))
        _send(port, fbl, arf(mids["bob@example.org"], "redacted@example.org"))
        soft = dsn(mids["cy@example.org"], "cy@example.org", status="4.2.2", code=452)
        _send(port, fbl, soft)
        # A report about a message this node never sent (dee's address, a foreign id).
        _send(port, fbl, dsn("<never-sent@acme.example>", "dee@example.org"))

        wait_for(lambda: len(_events(setup, "bounced")) >= 2, 30, 0.1)
        wait_for(lambda: _events(setup, "complained"), 30, 0.1)
        assert "suppressed\thard-bounce" in _check(setup, "ann@example.org")
        assert "suppressed\tcomplaint" in _check(setup, "bob@example.org")
        assert "clean" in _check(setup, "cy@example.org")  # 1 soft bounce of 2
        assert "clean" in _check(setup, "dee@example.org")

        _send(port, fbl, soft)  # the second soft bounce reaches the limit
        wait_for(lambda: "suppressed" in _check(setup, "cy@example.org"), 30, 0.2)
        assert "suppressed\tsoft-bounce" in _check(setup, "cy@example.org")

        bounced = {e["recipient"]: e for e in _events(setup, "bounced")}
        assert set(bounced) == {"ann@example.org", "cy@example.org"}
        for e in [*bounced.values(), *_events(setup, "complained")]:
            assert (e["job"], e["campaign"], e["tenant"]) == ("fb-1", "e2e", "acme"), e
            assert e["message_id"] == mids[e["recipient"]]
        assert bounced["ann@example.org"]["async"] is True
        assert bounced["ann@example.org"]["reason"] == "userunknown"
        assert _events(setup, "complained")[0]["feedback_type"] == "abuse"
        later = [e for e in setup.events() if e["type"] not in ("accepted", "delivered")]
        assert "dee@example.org" not in {e["recipient"] for e in later}
        assert node.terminate() == 0


def test_a_dsn_to_a_verp_address_ties_without_the_message_id(tmp_path: Path):
    """Many bounces do not return the original message: the VERP return path alone ties
    them, and a token altered by one character ties nothing."""
    port = free_port()
    with _running(tmp_path, port) as (setup, node, sink):
        rcpts = ["eve@example.org", "fay@example.org"]
        mids = _deliver(setup, sink, rcpts, job_id="fb-v", traffic="verp")
        paths = {m.rcpts[0]: m.mail_from for m in sink.snapshot()}
        assert all(p.startswith("b-") and p.endswith(f"@{DOMAIN}") for p in paths.values())
        # The returned headers name a Message-ID this node never sent. The altered token
        # goes first: reports are processed in the order they were stored.
        local, _, domain = paths["fay@example.org"].partition("@")
        altered = f"{local[:-1]}{'0' if local[-1] != '0' else '1'}@{domain}"
        _send(port, altered, dsn("<lost@x.example>", "fay@example.org"))
        _send(port, paths["eve@example.org"], dsn("<lost@x.example>", "eve@example.org"))
        wait_for(lambda: "suppressed" in _check(setup, "eve@example.org"), 30, 0.2)
        assert "suppressed\thard-bounce" in _check(setup, "eve@example.org")
        [bounced] = _events(setup, "bounced")
        assert (bounced["recipient"], bounced["job"], bounced["message_id"]) == (
            "eve@example.org",
            "fb-v",
            mids["eve@example.org"],
        )
        assert "clean" in _check(setup, "fay@example.org")
        assert node.terminate() == 0


def test_the_listener_refuses_relay_oversize_and_survives_garbage(tmp_path: Path):
    port = free_port()
    with _running(tmp_path, port) as (setup, node, _sink):
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            code, _ = client.ehlo("remote.example")
            assert code == 250 and client.has_extn("size")
            assert int(client.esmtp_features["size"]) == 10 * 1024 * 1024
            client.mail("")
            code, text = client.rcpt("ann@example.org")
            assert code == 550 and text.startswith(b"5.7.1"), (code, text)
            code, _ = client.rcpt(f"someone@{DOMAIN}")
            assert code == 550
            client.rset()
            code, _ = client.mail("", ["SIZE=20000000"])
            assert code == 552
        big = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 10_600  # 10.6 MB
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            _send(port, f"fbl@{DOMAIN}", big)  # SIZE announced: refused at MAIL
        assert refused.value.smtp_code == 552
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            client.ehlo("remote.example")
            client.mail("")
            client.rcpt(f"fbl@{DOMAIN}")
            code, _ = client.data(big)  # not announced: read to its end, then refused
            assert code == 552
        for garbage in (b"\x00\xff" * 5000, b"MAIL FROM:<" + b"a" * 100000, b"DATA\r\n" * 50):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.recv(1000)
                s.sendall(garbage)
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):
                    pass
        # Still serving, and nothing was stored or suppressed.
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            assert client.noop()[0] == 250
        assert node.proc.poll() is None
        done = setup.cli("suppress", "--data", str(setup.data_dir), "list")
        assert "0 entries" in done.stderr


def test_a_report_stored_before_a_crash_is_processed_after_the_restart(tmp_path: Path):
    port = free_port()
    with _running(tmp_path, port) as (setup, node, sink):
        mids = _deliver(setup, sink, ["eve@example.org", "fay@example.org"])
        # SIGKILL right after the 250: processed before the kill or after the restart.
        _send(port, f"fbl@{DOMAIN}", dsn(mids["eve@example.org"], "eve@example.org"))
        node.kill()
        # The state a crash between the 250 and the processing leaves: a stored,
        # unprocessed report (written while no node runs).
        spool = Spool.open(setup.data_dir)
        try:
            report = RawReport(
                0.0,
                "test",
                "",
                (f"fbl@{DOMAIN}",),
                dsn(mids["fay@example.org"], "fay@example.org"),
            )
            spool.store.write(
                lambda txn: spool.feedback.put_reports_in(
                    txn, [report], max_pending=10, max_bytes=1 << 20
                )
            )
        finally:
            spool.close()
        node.start()
        for address in ("eve@example.org", "fay@example.org"):
            wait_for(lambda a=address: "suppressed" in _check(setup, a), 30, 0.2)
            assert "suppressed\thard-bounce" in _check(setup, address)
        spool = Spool(__import__("salvo.core.spool_env", fromlist=["Store"]).Store(setup.data_dir))
        try:
            assert spool.feedback.pending_ids() == []
        finally:
            spool.close()
