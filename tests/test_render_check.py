"""The render check at intake and the ``failed`` state, on a real node (issue 17, item 3).

A recipient whose variables miss a placeholder of the job's template is rejected before
the commit (``missing-variable``, naming it) and never acked; a job none of whose
recipients can render gets ``error`` and writes nothing. A message that passed the check
but cannot be made at send time (a value that would inject a header, a list where text is
expected) ends ``failed``: final, not a bounce, suppressing no one.
"""

from __future__ import annotations

import re

import pytest
from nodeutil import AioSink, NodeSetup, RawProducer, job, node_with_sink, wait_for

DELIVERY_BOUND = 60.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory):
    with node_with_sink(tmp_path_factory.mktemp("rendercheck"), "127.0.0.6") as running:
        yield running


@pytest.fixture
def producer(node):
    setup, _, _ = node
    p = RawProducer(setup.endpoint)
    yield p
    p.close()


def _rcpts(sink: AioSink) -> set[str]:
    return {r for m in sink.snapshot() for r in m.rcpts}


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
