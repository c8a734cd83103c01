"""End to end: a real ``salvo node`` process, SMTP sinks on 127.0.0.x, a producer.

Every accepted recipient arrives exactly once, DKIM-signed (verified by dkimpy with the
key's DNS record), with the Message-ID the reply gave, and the events (JSONL log and PUB
socket) say accepted then delivered; 5xx ends bounced and suppressed, 4xx deferred.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from nodeutil import (
    FROM_DOMAIN,
    SMTP_SINK,
    AioSink,
    EventSubscriber,
    NodeSetup,
    PostfixSink,
    dkim_verify,
    final_states,
    header,
    job,
    running_node,
    wait_for,
)

from salvo.client import Producer

DELIVERY_BOUND = 90.0  # seconds for a few hundred messages on a busy machine


def _submit(endpoint: str, jobs: list[dict]) -> dict[str, dict]:
    with Producer(endpoint, timeout=30, attempts=3) as producer:
        replies = list(producer.submit_many(jobs))
    return {r.id: r for r in replies}


def test_every_accepted_recipient_arrives_once_signed_with_its_message_id(tmp_path: Path):
    with AioSink("127.0.0.2") as org, AioSink("127.0.0.4") as net:
        setup = NodeSetup(
            tmp_path / "node", {"example.org": org.address, "example.net": net.address}
        )
        events = EventSubscriber(setup.events_endpoint)
        try:
            with running_node(setup):
                events.wait_connected()
                jobs = [
                    job(
                        f"job-{i}",
                        [f"ann{i}@example.org", f"bob{i}@example.net", f"cy{i}@Example.ORG"],
                    )
                    for i in range(20)
                ]
                jobs.append(
                    {
                        "id": "raw-1",
                        "tenant": "acme",
                        "from": f"news@{FROM_DOMAIN}",
                        "raw": f"From: news@{FROM_DOMAIN}\r\nTo: dee@example.org\r\n"
                        "Subject: raw\r\n\r\nA raw message.\r\n",
                        "recipients": [{"to": "dee@example.org"}],
                    }
                )
                replies = _submit(setup.endpoint, jobs)
                assert {r.status for r in replies.values()} == {"accepted"}, replies
                expected = {
                    a.message_id: (job_id, a.to)
                    for job_id, r in replies.items()
                    for a in r.accepted
                }
                assert len(expected) == 61  # Message-IDs are unique per recipient

                def arrived() -> bool:
                    got = org.by_message_id() + net.by_message_id()
                    return set(expected) <= set(got)

                wait_for(arrived, DELIVERY_BOUND, 0.1)

                def delivered_events() -> bool:
                    log = setup.events()
                    return sum(e["type"] == "delivered" for e in log) >= len(expected)

                wait_for(delivered_events, 30, 0.1)
                wait_for(lambda: len(events.drain()) >= 2 * len(expected), 10, 0.1)
        finally:
            events.close()

        messages = org.snapshot() + net.snapshot()
        counts = Counter(m.message_id for m in messages)
        assert set(counts) == set(expected), "messages missing or unknown at the sinks"
        assert max(counts.values()) == 1, "a recipient arrived more than once"
        key = setup.key_pem
        for m in messages:
            job_id, to = expected[m.message_id]
            assert m.rcpts == [to] or [r.lower() for r in m.rcpts] == [to.lower()], (m.rcpts, to)
            sink = org if to.lower().endswith("example.org") else net
            assert m in sink.snapshot(), f"{to} went to the wrong sink"
            assert m.mail_from == (
                f"bounces@{FROM_DOMAIN}" if job_id != "raw-1" else f"news@{FROM_DOMAIN}"
            )
            assert header(m.content, "DKIM-Signature") is not None
            assert dkim_verify(m.content, key), f"DKIM fails for {to}"
            if job_id != "raw-1":
                assert header(m.content, "Subject") == f"Hello {to.partition('@')[0]}"
                assert header(m.content, "X-Test") == job_id
            else:
                assert header(m.content, "Subject") == "raw"

        for name, log in (("jsonl", setup.events()), ("pub", events.events)):
            by_type = Counter((e["message_id"], e["type"]) for e in log)
            for mid in expected:
                assert by_type[(mid, "accepted")] == 1, (name, mid)
                assert by_type[(mid, "delivered")] == 1, (name, mid)
            assert {e["message_id"] for e in log} == set(expected), name
            assert set(final_states(log).values()) == {"delivered"}, name
            for e in log:
                job_id, to = expected[e["message_id"]]
                assert (e["job"], e["recipient"], e["tenant"]) == (job_id, to, "acme"), e
                if e["type"] == "delivered":
                    sink = org if to.lower().endswith("example.org") else net
                    assert (e["host"], e["code"], e["attempt"]) == (sink.host, 250, 1), e
                    assert e["source"] == "127.0.0.1", e
        assert events.bad_frames == []


@pytest.mark.skipif(
    not os.path.exists(SMTP_SINK), reason="Postfix's smtp-sink is not installed (apt: postfix)"
)
def test_delivery_into_postfix_smtp_sink(tmp_path: Path):
    with PostfixSink(tmp_path / "dump") as sink:
        setup = NodeSetup(tmp_path / "node", {"*": sink.address})
        with running_node(setup):
            jobs = [job(f"pf-{i}", [f"u{i}a@example.com", f"u{i}b@example.net"]) for i in range(50)]
            replies = _submit(setup.endpoint, jobs)
            assert {r.status for r in replies.values()} == {"accepted"}
            expected = {a.message_id for r in replies.values() for a in r.accepted}
            assert len(expected) == 100

            def delivered() -> int:
                return sum(e["type"] == "delivered" for e in setup.events())

            wait_for(lambda: delivered() >= 100, DELIVERY_BOUND, 0.2)
        dumps = sink.messages()
    assert delivered() == 100
    ids = Counter()
    for dump in dumps:
        # smtp-sink's own headers (X-Rcpt-Args, Received) come first, then the message's.
        ids[header(dump.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"), "Message-ID")] += 1
    assert len(dumps) == 100
    assert set(ids) == expected
    assert max(ids.values()) == 1


def test_hard_bounce_is_suppressed_and_soft_failure_deferred(tmp_path: Path):
    with AioSink("127.0.0.2") as sink:
        sink.rcpt_replies["gone@example.org"] = "550 5.1.1 <gone@example.org>: no such user"
        sink.rcpt_replies["later@example.org"] = "451 4.2.0 mailbox busy, try later"
        setup = NodeSetup(tmp_path / "node", {"example.org": sink.address})
        with running_node(setup):
            replies = _submit(
                setup.endpoint,
                [job("mixed", ["ok@example.org", "gone@example.org", "later@example.org"])],
            )
            reply = replies["mixed"]
            assert reply.status == "accepted"
            mids = {a.to: a.message_id for a in reply.accepted}

            def settled() -> dict[str, str]:
                states = final_states(setup.events())
                if any(states.get(m, "accepted") == "accepted" for m in mids.values()):
                    return {}
                return states

            states = wait_for(settled, 60, 0.1)
            assert states, f"no final events: {setup.events()}"
            assert states[mids["ok@example.org"]] == "delivered"
            assert states[mids["gone@example.org"]] == "bounced"
            assert states[mids["later@example.org"]] == "deferred"

            log = {e["message_id"]: e for e in setup.events() if e["type"] != "accepted"}
            bounced = log[mids["gone@example.org"]]
            assert (bounced["code"], bounced["status"]) == (550, "5.1.1"), bounced
            assert "no such user" in bounced["text"]
            deferred = log[mids["later@example.org"]]
            assert (deferred["code"], deferred["status"]) == (451, "4.2.0"), deferred
            assert deferred["next_attempt"] > deferred["ts"], deferred
            assert deferred["attempt"] == 1

            # Suppressed after the hard bounce (checked from another process, while running).
            def suppressed() -> bool:
                check = setup.cli(
                    "suppress", "--data", str(setup.data_dir), "check", "gone@example.org"
                )
                return check.returncode == 1

            assert wait_for(suppressed, 20, 0.2), "the 5.1.1 bounce did not suppress the address"
            clean = setup.cli("suppress", "--data", str(setup.data_dir), "check", "ok@example.org")
            assert clean.returncode == 0, clean.stdout + clean.stderr
            assert (
                setup.cli(
                    "suppress", "--data", str(setup.data_dir), "check", "later@example.org"
                ).returncode
                == 0
            )  # a 4xx does not suppress

            # A new job to the bounced address is refused at intake.
            again = _submit(setup.endpoint, [job("again", ["gone@example.org", "new@example.org"])])
            assert again["again"].status == "partial"
            assert [(r.to, r.reason) for r in again["again"].rejected] == [
                ("gone@example.org", "suppressed")
            ]
        states = setup.queue_states()
        assert states.get("deferred") == 1, states
        assert states.get("bounced") == 1, states
    assert [m.rcpts for m in sink.snapshot()].count(["ok@example.org"]) == 1
    assert all("gone@example.org" not in m.rcpts for m in sink.snapshot())


def test_a_deferred_recipient_is_retried_and_a_dns_failure_deferred(tmp_path: Path):
    from nodeutil import free_port

    # nowhere.example has no static route: it goes to DNS, whose server does not answer
    # (nothing listens on that port): a temporary failure, never a bounce.
    dead_dns = f'[dns]\nnameservers = ["127.0.0.1:{free_port("127.0.0.1")}"]\ntimeout = "1s"\n'
    with AioSink("127.0.0.2") as sink:
        sink.rcpt_once["retry@example.org"] = "421 4.7.0 greylisted, come back later"
        setup = NodeSetup(
            tmp_path / "node",
            {"example.org": sink.address},
            first_retry="1s",
            max_retry="2s",
            extra=dead_dns,
        )
        with running_node(setup):
            reply = _submit(
                setup.endpoint, [job("retry", ["retry@example.org", "x@nowhere.example"])]
            )["retry"]
            assert reply.status == "accepted"
            mids = {a.to: a.message_id for a in reply.accepted}
            mid = mids["retry@example.org"]
            assert wait_for(lambda: mid in sink.by_message_id(), 60, 0.1), setup.events()
            wait_for(lambda: final_states(setup.events()).get(mid) == "delivered", 20, 0.1)
            log = [e for e in setup.events() if e.get("message_id") == mid]

            def unroutable_events() -> list[dict]:
                other = mids["x@nowhere.example"]
                return [e for e in setup.events() if e.get("message_id") == other]

            # Its DNS lookup times out after 1 s: it may end after the retried one.
            wait_for(lambda: len(unroutable_events()) >= 2, 20, 0.1)
            unroutable = unroutable_events()
    assert [e["type"] for e in log] == ["accepted", "deferred", "delivered"], log
    assert (log[1]["code"], log[1]["status"], log[1]["attempt"]) == (421, "4.7.0", 1)
    assert log[1]["next_attempt"] > log[1]["ts"]
    assert log[2]["attempt"] == 2
    assert sink.by_message_id()[mid] == 1
    assert unroutable[0]["type"] == "accepted"
    assert unroutable[1]["type"] == "deferred", unroutable
    assert unroutable[1]["status"] == "4.4.3", unroutable


def test_a_domain_without_a_route_is_delivered_by_mx_and_a_null_mx_one_bounces(tmp_path: Path):
    import socket

    from nodeutil import free_port
    from test_resolver import DNSMASQ, Dnsmasq

    if not os.path.exists(DNSMASQ):
        pytest.skip("dnsmasq is not installed (apt: dnsmasq)")
    port = free_port("127.0.0.6")
    # A listener where null-mx.test's A record points: a router that ignored the null MX
    # (RFC 7505) and fell back to the implicit MX would connect here.
    trap = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    trap.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    trap.bind(("127.0.0.7", port))
    trap.listen(8)
    trap.setblocking(False)
    records = [
        "--mx-host=mx-routed.test,mx.mx-routed.test,10",
        "--host-record=mx.mx-routed.test,127.0.0.6",
        "--dns-rr=null-mx.test,15,000000",
        "--host-record=null-mx.test,127.0.0.7",
    ]
    with (
        trap,
        Dnsmasq(records, tmp_path / "dns.log") as dns_server,
        AioSink("127.0.0.6", port) as sink,
    ):
        setup = NodeSetup(
            tmp_path / "node",
            {},
            extra=f"""
[dns]
nameservers = ["{dns_server.nameserver}"]
timeout = "5s"
allow_private_destinations = true
smtp_port = {port}
""",
        )
        with running_node(setup):
            reply = _submit(setup.endpoint, [job("mx", ["ann@mx-routed.test", "bob@null-mx.test"])])
            assert reply["mx"].status == "accepted"
            mids = {a.to: a.message_id for a in reply["mx"].accepted}

            def settled() -> dict[str, str]:
                states = final_states(setup.events())
                if any(states.get(m, "accepted") == "accepted" for m in mids.values()):
                    return {}
                return states

            states = wait_for(settled, 60, 0.1)
            assert states, f"no final events: {setup.events()}"
            log = {e["message_id"]: e for e in setup.events() if e["type"] != "accepted"}
        with pytest.raises(BlockingIOError):
            trap.accept()
    assert states[mids["ann@mx-routed.test"]] == "delivered", log
    assert sink.by_message_id()[mids["ann@mx-routed.test"]] == 1
    assert log[mids["ann@mx-routed.test"]]["host"] == "127.0.0.6"
    bounced = log[mids["bob@null-mx.test"]]
    assert states[mids["bob@null-mx.test"]] == "bounced", bounced
    assert bounced["status"] == "5.1.10", bounced
    assert "null MX" in bounced["text"], bounced
    assert dns_server.queries("null-mx.test", "A") == 0  # no address was even looked up
    assert all("bob@null-mx.test" not in m.rcpts for m in sink.snapshot())
