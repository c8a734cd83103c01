"""Bad input to a running node: every bad frame gets its documented reply (docs/protocol.md)
and the node keeps serving other producers.

The render check at intake: a recipient whose variables miss a placeholder of the job's
template is rejected before the commit (``missing-variable``, naming it) and never acked; a
job none of whose recipients can render gets ``error`` and writes nothing. A message that
passed the check but cannot be made at send time (a value that would inject a header, a
list where text is expected) ends ``failed``: final, not a bounce, suppressing no one.
"""

from __future__ import annotations

import re

import pytest
from nodeutil import AioSink, NodeSetup, RawProducer, job, node_with_sink, wait_for

DELIVERY_BOUND = 60.0
REPLY_KEYS = {"id", "status", "accepted", "rejected", "error"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory):
    with node_with_sink(tmp_path_factory.mktemp("input"), "127.0.0.5") as running:
        yield running


@pytest.fixture
def producer(node):
    setup, _, _ = node
    p = RawProducer(setup.endpoint)
    yield p
    p.close()


def _error(reply: dict | None) -> str:
    assert reply is not None, "no reply"
    assert set(reply) == REPLY_KEYS, reply
    assert reply["status"] == "error", reply
    assert reply["accepted"] == [] and reply["rejected"] == [], reply
    return reply["error"]


def test_not_msgpack(producer):
    error = _error(producer.request(b"\xc1\xc1 not msgpack"))
    assert error.startswith("not a msgpack value"), error


def test_msgpack_list(producer):
    reply = producer.request(["id", "x"])
    assert reply is not None and reply["id"] == ""
    assert "must be a msgpack map" in _error(reply)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"recipients": {}}, "recipients"),
        ({"recipients": [{"to": 5}]}, "recipients[0].to"),
        ({"expires_in": "1h"}, "expires_in"),
        ({"subject": 3}, "subject"),
        ({"headers": {"X-A": 1}}, "headers["),
        ({"from": None}, "from"),
    ],
)
def test_wrong_field_types(producer, changes, field):
    bad = {**job("types", ["ann@example.org"]), **changes}
    reply = producer.request(bad)
    assert reply is not None and reply["id"] == "types"
    assert _error(reply).startswith(field), reply


def test_missing_required_field(producer):
    bad = job("nofrom", ["ann@example.org"])
    del bad["from"]
    assert _error(producer.request(bad)) == "from: required field is missing"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"subject": "Hi\r\nBcc: victim@example.org"}, "subject"),
        ({"subject": "Hi\nBcc: victim@example.org"}, "subject"),
        ({"from": "news@acme.example\r\nBcc: victim@example.org"}, "from"),
        ({"headers": {"X-Tag": "a\r\nBcc: victim@example.org"}}, "headers['X-Tag']"),
        ({"return_path": "b@acme.example\r\nRCPT TO:<victim@example.org>"}, "return_path"),
        (
            {"recipients": [{"to": "ann@example.org\r\nBcc: victim@example.org"}]},
            "recipients[0].to",
        ),
    ],
)
def test_cr_lf_injection(producer, node, changes, field):
    bad = {**job("inject", ["ann@example.org"]), **changes}
    error = _error(producer.request(bad))
    assert error.startswith(field), error
    assert "CR, LF or NUL" in error, error


def test_invalid_addresses_are_rejected_per_recipient(producer, node):
    _, _, sink = node
    reply = producer.request(job("addr-partial", ["not-an-address", "good1@example.org", "a@@b"]))
    assert reply is not None and reply["status"] == "partial", reply
    assert [a["to"] for a in reply["accepted"]] == ["good1@example.org"]
    assert [(r["to"], r["reason"]) for r in reply["rejected"]] == [
        ("not-an-address", "invalid-address"),
        ("a@@b", "invalid-address"),
    ]
    reply = producer.request(job("addr-none", ["nobody", "@example.org"]))
    assert reply is not None and reply["status"] == "rejected", reply
    assert reply["accepted"] == []
    assert {r["reason"] for r in reply["rejected"]} == {"invalid-address"}
    assert wait_for(lambda: "good1@example.org" in _rcpts(sink), 60, 0.1)


def test_a_50_mb_job_gets_an_error_naming_its_size(producer):
    big = job("big", ["ann@example.org"])
    big["text"] = "x" * (50 * 1024 * 1024)
    frame_reply = producer.request(big, timeout=30)
    error = _error(frame_reply)
    assert frame_reply["id"] in ("big", "")
    assert "bytes; the limit is 33554432" in error, error
    assert error.startswith("job frame is 5"), error
    # The same socket still works afterwards.
    reply = producer.request(job("after-big", ["after-big@example.org"]))
    assert reply is not None and reply["status"] == "accepted", reply


def test_a_suppressed_recipient_is_rejected(producer, node):
    setup, _, _ = node
    added = setup.cli("suppress", "--data", str(setup.data_dir), "add", "blocked@example.org")
    assert added.returncode == 0, added.stderr
    reply = producer.request(job("supp-all", ["blocked@example.org"]))
    assert reply is not None and reply["status"] == "rejected", reply
    assert reply["rejected"] == [{"to": "blocked@example.org", "reason": "suppressed"}]
    reply = producer.request(job("supp-some", ["Blocked@Example.org", "free@example.org"]))
    assert reply is not None and reply["status"] == "partial", reply
    assert [(r["to"], r["reason"]) for r in reply["rejected"]] == [
        ("Blocked@Example.org", "suppressed")
    ]
    assert [a["to"] for a in reply["accepted"]] == ["free@example.org"]
    # Resubmitting the id returns the first reply.
    again = producer.request(job("supp-some", ["other@example.org"]))
    assert again == reply


def test_the_node_keeps_serving_other_producers(node, producer):
    setup, process, sink = node
    # More garbage on this socket, then a good job from another socket.
    for frame in (b"", b"\x00", b"\x91\x01", b"\xde\xad\xbe\xef" * 1000):
        producer.send(frame)
    other = RawProducer(setup.endpoint)
    try:
        reply = other.request(job("other-producer", ["other@example.org"]))
    finally:
        other.close()
    assert reply is not None and reply["status"] == "accepted", reply
    mid = reply["accepted"][0]["message_id"]
    assert wait_for(lambda: mid in sink.by_message_id(), 60, 0.1), "not delivered"
    garbage = [producer.recv(10) for _ in range(4)]
    assert all(g is not None and g["status"] == "error" for g in garbage), garbage
    assert process.proc.poll() is None, "the node died"
    assert "Traceback" not in process.log(), process.log()[-3000:]


def _rcpts(sink: AioSink) -> set[str]:
    return {r for m in sink.snapshot() for r in m.rcpts}


def test_req_style_delimiter_frame(node):
    """A REQ socket puts an empty delimiter before the job; the reply comes back to it."""
    import msgspec
    import zmq

    setup, _, _ = node
    req = zmq.Context.instance().socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(setup.endpoint)
    try:
        req.send(msgspec.msgpack.encode(job("req-1", ["req@example.org"])))
        assert req.poll(30_000, zmq.POLLIN), "no reply to a REQ socket"
        reply = msgspec.msgpack.decode(req.recv())
    finally:
        req.close()
    assert reply["id"] == "req-1" and reply["status"] == "accepted", reply


def test_cr_lf_fails_and_missing_variable_is_rejected_only_that_recipient(producer, node):
    """A missing variable is found at intake: that recipient is rejected, never acked.
    A value that would inject a header is found at send time: that recipient ends
    ``failed`` (not a bounce, not suppressed); the job's other recipients go out."""
    setup, _, sink = node
    bad = job("vars", ["v-ok@example.org", "v-crlf@example.org", "v-missing@example.org"])
    bad["recipients"][1]["vars"] = {"name": "x\r\nBcc: victim@example.org"}
    bad["recipients"][2]["vars"] = {}
    reply = producer.request(bad)
    assert reply is not None and reply["status"] == "partial", reply
    assert [(r["to"], r["reason"]) for r in reply["rejected"]] == [
        ("v-missing@example.org", "missing-variable")
    ]
    mids = {a["to"]: a["message_id"] for a in reply["accepted"]}

    def final() -> dict[str, dict]:
        events = {
            e["message_id"]: e for e in setup.events() if e.get("message_id") in mids.values()
        }
        return events if all(e["type"] != "accepted" for e in events.values()) else {}

    assert wait_for(lambda: len(final()) == 2, 60, 0.1), setup.events()[-10:]
    events = final()
    assert events[mids["v-ok@example.org"]]["type"] == "delivered"
    event = events[mids["v-crlf@example.org"]]
    assert event["type"] == "failed", event
    assert "control character" in event["text"]
    assert "victim@example.org" not in _rcpts(sink)
    assert "v-crlf@example.org" not in _rcpts(sink)
    check = setup.cli("suppress", "--data", str(setup.data_dir), "check", "v-crlf@example.org")
    assert check.returncode == 0, check.stdout  # not a mailbox problem: not suppressed


def _events_of(setup: NodeSetup, job_ids: set[str]) -> list[dict]:
    return [e for e in setup.events() if e.get("job") in job_ids]


def test_a_recipient_missing_a_variable_is_rejected_the_others_delivered(producer, node):
    setup, process, sink = node
    three = job("mv-3", ["mv-ann@example.org", "mv-bob@example.org", "mv-cy@example.org"])
    del three["recipients"][1]["vars"]["name"]
    order = job("mv-order", ["mv-dee@example.org", "mv-eve@example.org"])
    order["text"] = "Hello {{ name }}, your order {{ order.id }} is on its way.\n"
    order["recipients"][0]["vars"]["order"] = {"id": 7}
    order["recipients"][1]["vars"]["order"] = "7"  # a string: order.id does not resolve

    reply = producer.request(three)
    assert reply is not None and reply["status"] == "partial", reply
    assert reply["rejected"] == [
        {
            "to": "mv-bob@example.org",
            "reason": "missing-variable",
            "text": "missing variable 'name'",
        }
    ]
    assert [a["to"] for a in reply["accepted"]] == ["mv-ann@example.org", "mv-cy@example.org"]
    reply2 = producer.request(order)
    assert reply2 is not None and reply2["status"] == "partial", reply2
    assert reply2["rejected"] == [
        {
            "to": "mv-eve@example.org",
            "reason": "missing-variable",
            "text": "missing variable 'order.id'",
        }
    ]
    accepted = {a["message_id"]: a["to"] for r in (reply, reply2) for a in r["accepted"]}
    assert len(accepted) == 3

    def outcomes() -> list[dict]:
        return [e for e in _events_of(setup, {"mv-3", "mv-order"}) if e["type"] != "accepted"]

    assert wait_for(lambda: len(outcomes()) == 3, DELIVERY_BOUND, 0.1), setup.events()[-10:]
    assert {e["message_id"]: e["type"] for e in outcomes()} == dict.fromkeys(accepted, "delivered")
    assert {"mv-ann@example.org", "mv-cy@example.org", "mv-dee@example.org"} <= _rcpts(sink)
    assert not {"mv-bob@example.org", "mv-eve@example.org"} & _rcpts(sink)
    events = _events_of(setup, {"mv-3", "mv-order"})
    assert not [e for e in events if e["type"] == "bounced"], events
    # Rejected before the commit: no event at all, and not in the spool's records.
    assert not [e for e in events if e["recipient"] in ("mv-bob@example.org", "mv-eve@example.org")]
    shown = setup.cli("queue", "--data", str(setup.data_dir), "show", "mv-3")
    assert shown.returncode == 0, shown.stderr
    assert "rejected mv-bob@example.org: missing-variable" in shown.stdout
    assert "[2]" not in shown.stdout  # two recipient records: Ann and Cy
    # A resubmission gets the first reply, rejection text included.
    again = producer.request(three)
    assert again == reply
    assert process.proc.poll() is None


def test_a_job_no_recipient_can_render_is_an_error_and_not_written(producer, node):
    setup, _, _ = node
    bad = job("mv-none", ["mv-fay@example.org", "mv-gus@example.org"])
    for rcpt in bad["recipients"]:
        rcpt["vars"] = {}
    before = setup.queue_states()
    reply = producer.request(bad)
    assert reply is not None and reply["status"] == "error", reply
    assert reply["accepted"] == []
    assert "missing variable 'name'" in reply["error"], reply
    assert [(r["to"], r["reason"]) for r in reply["rejected"]] == [
        ("mv-fay@example.org", "missing-variable"),
        ("mv-gus@example.org", "missing-variable"),
    ]
    shown = setup.cli("queue", "--data", str(setup.data_dir), "show", "mv-none")
    assert shown.returncode == 1 and "no job or message" in shown.stdout, shown.stdout
    assert setup.queue_states() == before
    # Not remembered: the corrected job with the same id is taken.
    for rcpt in bad["recipients"]:
        rcpt["vars"] = {"name": "Fay"}
    fixed = producer.request(bad)
    assert fixed is not None and fixed["status"] == "accepted", fixed


def test_a_template_that_cannot_compile_is_an_error(producer, node):
    bad = job("mv-syntax", ["mv-hal@example.org"], subject="Hello {{ name")
    reply = producer.request(bad)
    assert reply is not None and reply["status"] == "error", reply
    assert "unclosed" in reply["error"], reply


def test_a_message_that_cannot_be_made_at_send_time_ends_failed(producer, node):
    """The check looks variables up; a value that would inject a header line, or a list
    where text is expected, is found only by the renderer, in the signer."""
    setup, _, sink = node
    sent = job("fail-1", ["fl-ok@example.org", "fl-crlf@example.org", "fl-list@example.org"])
    sent["recipients"][1]["vars"] = {"name": "x\r\nBcc: fl-victim@example.org"}
    sent["recipients"][2]["vars"] = {"name": ["a", "list"]}
    reply = producer.request(sent)
    assert reply is not None and reply["status"] == "accepted", reply
    mids = {a["to"]: a["message_id"] for a in reply["accepted"]}

    def finals() -> dict[str, dict]:
        return {e["recipient"]: e for e in _events_of(setup, {"fail-1"}) if e["type"] != "accepted"}

    assert wait_for(lambda: len(finals()) == 3, DELIVERY_BOUND, 0.1), setup.events()[-10:]
    events = finals()
    assert events["fl-ok@example.org"]["type"] == "delivered"
    crlf, listed = events["fl-crlf@example.org"], events["fl-list@example.org"]
    assert (crlf["type"], listed["type"]) == ("failed", "failed"), events
    assert crlf["text"].startswith("cannot make the message: HeaderInjectionError"), crlf
    assert "control character" in crlf["text"], crlf
    assert "TemplateError" in listed["text"] and "list" in listed["text"], listed
    for e in (crlf, listed):
        assert e["message_id"] == mids[e["recipient"]]
        assert not e.get("code") and not e.get("status"), e  # no SMTP reply: not a bounce
    assert not [e for e in _events_of(setup, {"fail-1"}) if e["type"] == "bounced"]
    assert not {"fl-crlf@example.org", "fl-list@example.org", "fl-victim@example.org"} & _rcpts(
        sink
    )
    check = setup.cli(
        "suppress", "--data", str(setup.data_dir), "check", "fl-crlf@example.org",
        "fl-list@example.org",
    )  # fmt: skip
    assert check.returncode == 0 and "suppressed" not in check.stdout, check.stdout
    assert setup.queue_states()["failed"] >= 2
    shown = setup.cli("queue", "--data", str(setup.data_dir), "show", "fail-1")
    assert len(re.findall(r"\] fl-\S+  failed  attempts 0 ", shown.stdout)) == 2, shown.stdout
    assert "failed     -  cannot make the message: HeaderInjectionError" in shown.stdout


def test_salvo_submit_shows_the_rejection(node, tmp_path):
    """The issue's case: ``salvo submit --text body.txt`` with ``Hello {{ name }}`` and no
    ``name`` was accepted, then bounced; now the CLI says why it is refused."""
    setup, _, _ = node
    body = tmp_path / "body.txt"
    body.write_text("Hello {{ name }}\n", encoding="utf-8")
    done = setup.cli(
        "submit", "--endpoint", setup.endpoint, "--from", "Acme <news@acme.example>",
        "--to", "cli-ann@example.org", "--subject", "Hello", "--text", str(body),
        "--id", "cli-1",
    )  # fmt: skip
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert '"status": "error"' in done.stdout
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "line 1, job cli-1: error: no recipient can be rendered: missing variable 'name'",
        "line 1, job cli-1: cli-ann@example.org rejected "
        "(missing-variable: missing variable 'name')",
    ], done.stderr
