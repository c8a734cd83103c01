"""Content scoring with a real spamd (Debian's 4.0.1, local rules only): the checker in
process, through a real node, and ``salvo lint``.

One spamd serves the module (it takes seconds to compile its rules). A relay in front of
it counts the exchanges, one connection each, and can stall them; a fixed-reply server
plays a broken spamd.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from nodeutil import RawProducer, free_port, job, node_with_sink, wait_for
from spamdutil import GTUBE, FixedReplyServer, Relay, Spamd, available

from salvo.actors import content
from salvo.actors.content import ContentChecker
from salvo.actors.metrics import Metrics
from salvo.core.config import ContentSection
from salvo.core.events import Event
from salvo.core.protocol import Job, Recipient
from salvo.testing.webhook_receiver import WebhookReceiver

NEWSLETTER_TEXT = (
    "Hello {{ name }},\n\n"
    "Our spring catalogue is out: twelve new garden tools, and the workshop schedule for "
    "April and May. Members get early booking from Monday.\n\n"
    "See you soon,\nthe Acme team\n"
)
NEWSLETTER_HTML = (
    "<html><body><p>Hello {{ name }},</p><p>Our spring catalogue is out: twelve new "
    "garden tools, and the workshop schedule for April and May. Members get early "
    "booking from Monday.</p><p>See you soon,<br>the Acme team</p></body></html>"
)
DELIVERY_BOUND = 90.0
REPLY_BOUND = 30.0


@pytest.fixture(scope="module")
def spamd(tmp_path_factory):
    assert available(), "spamd is not installed: run ./dev.sh setup (Debian package spamd)"
    server = Spamd(tmp_path_factory.mktemp("spamd")).start()
    try:
        yield server
    finally:
        server.stop()


def newsletter(job_id: str, recipients: list[str], **extra) -> dict:
    return job(
        job_id,
        recipients,
        subject="Acme spring catalogue, {{ name }}",
        text=NEWSLETTER_TEXT,
        html=NEWSLETTER_HTML,
        headers={"Reply-To": "help@acme.example"},
        **extra,
    )


def gtube(job_id: str) -> dict:
    text = f"Hello {{{{ name }}}}\n{GTUBE}\n"
    return job(job_id, ["ann@example.org"], text=text, html=None, headers={})


def as_job(obj: dict) -> Job:
    return Job(
        id=obj["id"],
        from_=obj["from"],
        subject=obj.get("subject"),
        text=obj.get("text"),
        html=obj.get("html"),
        headers=obj.get("headers", {}),
        recipients=[Recipient(to=r["to"], vars=r["vars"]) for r in obj["recipients"]],
    )


# -- the checker, in process -------------------------------------------------------------


def screen_all(
    section: ContentSection, jobs: list[dict], *, one_by_one: bool = False, metrics=None
) -> tuple[list, list[Event], object]:
    """Screen the jobs with one checker, all at once or one by one; (replies, events,
    statistics)."""

    async def main():
        send, receive = trio.open_memory_channel[list[Event]](1000)
        checker = ContentChecker(section, send)
        checker.metrics = metrics
        replies: list = [None] * len(jobs)

        async def one(i: int) -> None:
            replies[i] = await checker.screen(as_job(jobs[i]))

        async with trio.open_nursery() as nursery:
            for i in range(len(jobs)):
                if one_by_one:
                    await one(i)
                else:
                    nursery.start_soon(one, i)
        send.close()
        events = [e async for batch in receive for e in batch]
        return replies, events, checker.statistics

    return trio.run(main)


def test_checker_scores_each_template_once(spamd):
    with Relay(spamd.port) as relay:
        section = ContentSection(spamassassin=relay.address)
        jobs = [gtube(f"g{i}") for i in range(5)] + [
            newsletter(f"n{i}", [f"r{i}@example.org"]) for i in range(5)
        ]
        metrics = Metrics()
        replies, events, stats = screen_all(section, jobs, metrics=metrics)
        assert relay.connections == 2, spamd.log()
    value = metrics.registry.get_sample_value
    assert value("salvo_content_checks_total", {"result": "reject"}) == 5
    assert value("salvo_content_checks_total", {"result": "pass"}) == 5
    assert value("salvo_content_spamd_requests_total", {"outcome": "ok"}) == 2
    assert stats.calls == 2 and stats.cache_hits == 0 and stats.failures == 0
    for reply in replies[:5]:
        assert reply.status == "error"
        assert reply.error.startswith("content scored 1000.0 >= 5 (")
        assert "GTUBE" in reply.error
    assert replies[5:] == [None] * 5
    assert sorted(e.type for e in events) == ["content_rejected"] * 5
    assert all(e.score >= 1000 and e.tenant == "default" for e in events)


def test_checker_warns_between_the_thresholds(spamd):
    section = ContentSection(spamassassin=spamd.address, warn_at=5.0, reject_at=5000.0)
    replies, events, _ = screen_all(section, [gtube("g")])
    assert replies == [None]
    assert [e.type for e in events] == ["content_warning"]
    assert "content scored 1000.0 >= 5 (" in events[0].text and "GTUBE" in events[0].text


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (b"HTTP/1.0 400 Bad Request\r\n\r\n", "not a SPAMD status line"),
        (b"SPAMD/1.0 76 Bad header line: X\r\n", "EX_PROTOCOL"),
        (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 4\r\n\r\nGTUB", "no Spam header"),
        (b"", "closed the connection without a reply"),
    ],
)
def test_checker_broken_spamd_accepts_with_an_event(reply, says):
    with FixedReplyServer(reply) as server:
        section = ContentSection(spamassassin=server.address)
        replies, events, stats = screen_all(section, [newsletter("n", ["a@example.org"])])
    assert replies == [None]
    assert [e.type for e in events] == ["content_unchecked"]
    assert says in events[0].text and "job accepted unscored" in events[0].text
    assert stats.failures == 1


def test_checker_down_refuses_when_told():
    port = free_port()  # nothing listens there
    section = ContentSection(spamassassin=f"127.0.0.1:{port}", when_down="refuse")
    jobs = [newsletter("n1", ["a@example.org"]), gtube("g1")]
    replies, events, stats = screen_all(section, jobs, one_by_one=True)
    for reply in replies:
        assert reply.status == "retry"
        assert reply.error.startswith(f"content check unavailable: spamd at 127.0.0.1:{port}")
    assert [e.type for e in events] == ["content_unchecked"] * 2
    # The second template came while spamd was known to be down: not asked.
    assert stats.calls == 1 and stats.failures == 1


def test_checker_times_out_on_a_hanging_spamd(spamd):
    with Relay(spamd.port) as relay:
        relay.stall = True
        section = ContentSection(spamassassin=relay.address, timeout="1s")
        started = time.monotonic()
        replies, events, _ = screen_all(section, [newsletter("n", ["a@example.org"])])
        assert time.monotonic() - started < 15
    assert replies == [None]
    assert "no answer within 1 s" in events[0].text


def test_checker_pause_after_a_failure_ends(monkeypatch):
    monkeypatch.setattr(content, "DOWN_PAUSE", 0.0)
    section = ContentSection(spamassassin=f"127.0.0.1:{free_port()}")
    jobs = [newsletter("n1", ["a@example.org"]), gtube("g1")]
    _, events, stats = screen_all(section, jobs, one_by_one=True)
    assert stats.calls == 2 and stats.failures == 2
    assert all("not asked again" not in e.text for e in events)


# -- through a node ----------------------------------------------------------------------


def content_config(address: str, **keys) -> str:
    lines = [f'spamassassin = "{address}"'] + [f"{k} = {v!r}" for k, v in keys.items()]
    return "\n[content]\n" + "\n".join(lines).replace("'", '"') + "\n"


def rcpts(sink) -> int:
    return sum(len(m.rcpts) for m in sink.snapshot())


def test_node_rejects_gtube_and_scores_each_template_once(spamd, tmp_path):
    receiver = WebhookReceiver()
    hook = f'\n[[webhooks]]\nurl = "{receiver.url}"\nevents = ["content_rejected"]\n'
    with (
        receiver,
        Relay(spamd.port) as relay,
        node_with_sink(
            tmp_path, "127.0.0.1", content_config(relay.address, timeout="4s") + hook
        ) as (setup, _node, sink),
    ):
        producer = RawProducer(setup.endpoint)
        try:
            reply = producer.request(gtube("spam-1"), REPLY_BOUND)
            assert reply is not None and reply["status"] == "error", reply
            assert reply["error"].startswith("content scored 1000.0 >= 5 (")
            assert "GTUBE" in reply["error"]
            assert relay.connections == 1

            # A campaign in 20 jobs at once: one spamd exchange, all accepted.
            jobs = [
                newsletter(f"news-{i}", [f"r{i}-{k}@example.org" for k in range(3)])
                for i in range(20)
            ]
            for j in jobs:
                producer.send_obj(j)
            replies = [producer.recv(REPLY_BOUND) for _ in jobs]
            assert all(r is not None and r["status"] == "accepted" for r in replies), replies
            assert relay.connections == 2
            # The same spam again (a new job id): from the cache.
            again = producer.request(gtube("spam-2"), REPLY_BOUND)
            assert again["status"] == "error" and "GTUBE" in again["error"]
            assert relay.connections == 2

            # spamd hangs: a new template waits (up to the timeout) in its own task, and
            # a job of a scored template is answered meanwhile.
            relay.stall = True
            producer.send_obj(job("slow-1", ["s@example.org"], subject="Other {{ name }}"))
            producer.send_obj(newsletter("news-late", ["late@example.org"]))
            first = producer.recv(REPLY_BOUND)
            assert first["id"] == "news-late" and first["status"] == "accepted", first
            second = producer.recv(REPLY_BOUND)
            assert second["id"] == "slow-1" and second["status"] == "accepted", second
        finally:
            producer.close()
        delivered = wait_for(lambda: rcpts(sink) >= 62, DELIVERY_BOUND)
        assert delivered, f"{rcpts(sink)} of 62 delivered"
        assert not any(GTUBE.encode() in m.content for m in sink.snapshot())
        events = wait_for(
            lambda: [e for e in setup.events() if e["type"].startswith("content_")], 10
        )
        kinds = sorted(e["type"] for e in events)
        assert kinds == ["content_rejected", "content_rejected", "content_unchecked"], events
        unchecked = next(e for e in events if e["type"] == "content_unchecked")
        assert unchecked["job"] == "slow-1" and "no answer within 4 s" in unchecked["text"]
        rejected = next(e for e in events if e["type"] == "content_rejected")
        assert rejected["job"] == "spam-1" and rejected["score"] == 1000.0
        assert rejected["tenant"] == "acme" and rejected["campaign"] == "e2e"
        # the webhook has both rejections, from its durable outbox
        hooked = wait_for(lambda: len(receiver.events()) >= 2 and receiver.events(), 10)
        assert sorted(e["job"] for e in hooked) == ["spam-1", "spam-2"], hooked
        assert all(e["type"] == "content_rejected" for e in hooked)


def test_node_broken_or_down_spamd_accepts_with_an_event(tmp_path):
    with (
        FixedReplyServer(b"220 smtp.example ESMTP ready\r\n") as server,
        node_with_sink(tmp_path, "127.0.0.1", content_config(server.address)) as (
            setup,
            node,
            sink,
        ),
    ):
        producer = RawProducer(setup.endpoint)
        try:
            reply = producer.request(newsletter("n1", ["a@example.org"]), REPLY_BOUND)
            assert reply["status"] == "accepted", reply
            # spamd known to be down: the next template is not asked, nor held up.
            reply = producer.request(gtube("g1"), REPLY_BOUND)
            assert reply["status"] == "accepted", reply
            assert server.connections == 1
        finally:
            producer.close()
        assert wait_for(lambda: rcpts(sink) >= 2, DELIVERY_BOUND)
        events = wait_for(
            lambda: [e for e in setup.events() if e["type"] == "content_unchecked"], 10
        )
        assert len(events) == 2, events
        first, second = events
        assert first["job"] == "n1" and "not a SPAMD status line: '220 smtp" in first["text"]
        assert second["job"] == "g1" and "not asked again" in second["text"]
        assert node.proc.poll() is None


# -- salvo lint --------------------------------------------------------------------------


def lint(tmp_path: Path, address: str, text: str, *extra: str) -> subprocess.CompletedProcess:
    config = tmp_path / "node.toml"
    config.write_text(content_config(address, warn_at=3.0, reject_at=5.0))
    template = tmp_path / "t.toml"
    template.write_text(
        json_toml(
            {
                "from": "Acme <news@acme.example>",
                "subject": "Spring catalogue, {{ name }}",
                "text": text,
            }
        )
    )
    variables = tmp_path / "v.json"
    variables.write_text(json.dumps({"to": "ann@example.org", "vars": {"name": "Ann"}}))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "salvo",
            "lint",
            "--config",
            str(config),
            "--template",
            str(template),
            "--vars",
            str(variables),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def json_toml(fields: dict[str, str]) -> str:
    """TOML of string fields (JSON strings are valid TOML basic strings)."""
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in fields.items())


def test_lint_prints_the_score_and_rules(spamd, tmp_path):
    spam = lint(tmp_path, spamd.address, f"Hi {{{{ name }}}}\n{GTUBE}\n")
    assert spam.returncode == 1, spam.stderr
    head, *rows = spam.stdout.splitlines()
    assert head == "score 1000.0: would be rejected (reject_at 5, warn_at 3)"
    assert rows[0].split()[:2] == ["1000.0", "GTUBE"]
    assert "Generic Test for Unsolicited Bulk Email" in rows[0]

    clean = lint(tmp_path, spamd.address, NEWSLETTER_TEXT, "--json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    result = json.loads(clean.stdout)
    assert result["verdict"] == "pass" and result["score"] < 3.0
    assert all(rule["name"] != "GTUBE" for rule in result["rules"])


def test_lint_errors_exit_2(tmp_path):
    down = lint(tmp_path, f"127.0.0.1:{free_port()}", "Hello")
    assert down.returncode == 2 and "salvo lint: error: spamd at 127.0.0.1:" in down.stderr
    with FixedReplyServer(b"nonsense\r\n") as server:
        garbled = lint(tmp_path, server.address, "Hello")
    assert garbled.returncode == 2 and "not a SPAMD status line" in garbled.stderr
    (tmp_path / "off.toml").write_text("")
    off = subprocess.run(
        [
            *(sys.executable, "-m", "salvo", "lint", "--config", str(tmp_path / "off.toml")),
            *("--template", str(tmp_path / "t.toml"), "--to", "a@example.org"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert off.returncode == 2 and "[content] spamassassin is not set" in off.stderr
    missing = lint(tmp_path, "127.0.0.1:1", "Hello {{ nobody }}")
    assert missing.returncode == 2 and "nobody" in missing.stderr
