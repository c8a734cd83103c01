"""The render check in the spool's screening: what is written, replied and replayed, and
the ``failed`` outcome (LMDB in tmp_path, no node)."""

from __future__ import annotations

from pathlib import Path

import pytest

import salvo.core.spool as spool_module
from salvo.core.protocol import Job, Recipient, Rejected
from salvo.core.spool import Outcome, Spool

NOW = 1_700_000_000.0
MISSING_NAME = Rejected("bob@example.org", "missing-variable", "missing variable 'name'")


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    spool = Spool.open(tmp_path / "data", map_size=8 << 20)
    yield spool
    spool.close()


def job(job_id: str, rcpts: list[tuple[str, dict]], **kw) -> Job:
    fields = dict(from_="Acme <news@acme.example>", subject="Hi {{ name }}", text="hi")
    fields.update(kw)
    return Job(id=job_id, recipients=[Recipient(to=t, vars=v) for t, v in rcpts], **fields)


def test_rejected_recipients_are_not_written_and_the_replay_keeps_the_text(spool):
    j = job("j1", [("ann@example.org", {"name": "Ann"}), ("bob@example.org", {})])
    (first,) = spool.submit_many([j], NOW)
    assert first.reply.status == "partial"
    assert first.reply.rejected == [MISSING_NAME]
    (seq,) = spool.find_jobs("j1")
    assert [rec.to for _, rec in spool.recipients(seq)] == ["ann@example.org"]
    (again,) = spool.submit_many([j], NOW + 1)
    assert again.duplicate and again.reply == first.reply


def test_no_recipient_renders_error_and_nothing_written(spool):
    j = job("j2", [("bob@example.org", {}), ("bad address", {}), ("cy@example.org", {"x": 1})])
    (res,) = spool.submit_many([j], NOW)
    assert res.reply.status == "error" and not res.duplicate
    assert res.reply.error == "no recipient can be rendered: missing variable 'name'"
    assert [x.reason for x in res.reply.rejected] == [
        "missing-variable",
        "invalid-address",
        "missing-variable",
    ]
    assert spool.find_jobs("j2") == []
    assert spool.summary(NOW).jobs == 0


def test_all_suppressed_or_invalid_is_still_rejected_as_before(spool):
    (res,) = spool.submit_many([job("j3", [("bad address", {"name": "x"})])], NOW)
    assert res.reply.status == "rejected"
    assert res.reply.rejected == [Rejected("bad address", "invalid-address")]


def test_a_rejected_recipient_does_not_make_a_later_one_a_duplicate(spool):
    j = job("j4", [("bob@example.org", {}), ("Bob <bob@example.org>", {"name": "Bob"})])
    (res,) = spool.submit_many([j], NOW)
    assert res.reply.rejected == [MISSING_NAME]
    assert [a.to for a in res.reply.accepted] == ["Bob <bob@example.org>"]


def test_raw_jobs_and_templates_without_placeholders_are_not_checked(spool):
    raw = Job(
        id="raw",
        from_="news@acme.example",
        raw="From: news@acme.example\r\nSubject: {{ name }}\r\n\r\nx\r\n",
        recipients=[Recipient(to="ann@example.org")],
    )
    plain = job("plain", [("ann@example.org", {})], subject="Hi")
    assert [r.reply.status for r in spool.submit_many([raw, plain], NOW)] == ["accepted"] * 2


def test_a_template_that_cannot_compile_is_an_error(spool):
    bad = job("syntax", [("ann@example.org", {"name": "x"})], html="{{ a | bold }}")
    (res,) = spool.submit_many([bad], NOW)
    assert res.reply.status == "error" and "unknown filter" in res.reply.error
    assert spool.find_jobs("syntax") == []


def test_an_unexpected_error_fails_that_job_only(spool, monkeypatch):
    real = spool_module.job_template

    def flaky(j: Job, limits=None):
        if j.id == "boom":
            raise RuntimeError("renderer bug")
        return real(j, limits)

    monkeypatch.setattr(spool_module, "job_template", flaky)
    ok = job("ok", [("ann@example.org", {"name": "Ann"})])
    boom = job("boom", [("ann@example.org", {"name": "Ann"})])
    replies = [r.reply for r in spool.submit_many([boom, ok], NOW)]
    assert [r.status for r in replies] == ["error", "accepted"]
    assert "RuntimeError: renderer bug" in replies[0].error


def test_failed_is_final_counted_apart_and_not_an_attempt(spool):
    j = job("j5", [("ann@example.org", {"name": "Ann"})])
    spool.submit_many([j], NOW)
    (claimed,) = spool.claim_due(NOW + 1, 10).claimed
    text = "cannot make the message: HeaderInjectionError: refused value for Subject"
    (change,) = spool.record_outcomes(
        [Outcome(seq=claimed.seq, idx=claimed.idx, state="failed", text=text)], NOW + 2
    )
    assert change.record.state == "failed" and change.record.attempts == 0
    assert change.record.last.text == text
    # Final: a later outcome changes nothing, and nothing is due again.
    late = Outcome(seq=claimed.seq, idx=claimed.idx, state="deferred", next_attempt=NOW + 3)
    assert spool.record_outcomes([late], NOW + 3) == []
    assert spool.next_due() is None
    summary = spool.summary(NOW + 4)
    assert summary.states["failed"] == 1 and summary.states["bounced"] == 0
    assert spool.get_job(claimed.seq).finished == NOW + 2


# The template language: paths outside `default` and `if` tests must exist; loops and
# output are bounded, and what the variables show past a bound is refused at intake.

RICH = (
    "Hi {{ first | default('there') }},\n"
    "{% if vip %}VIP code: {{ vip.code }}{% endif %}\n"
    "{% for item in order.items %}{{ loop.index }}. {{ item.name | upper }}\n{% endfor %}"
)


def test_paths_guarded_by_default_or_if_may_be_missing(spool):
    j = job(
        "rich1",
        [
            ("ann@example.org", {"order": {"items": [{"name": "mug"}]}}),
            ("bob@example.org", {"order": {"items": []}, "vip": {"code": "X1"}, "first": "B"}),
        ],
        subject="Hi",
        text=RICH,
    )
    (res,) = spool.submit_many([j], NOW)
    assert res.reply.status == "accepted", res.reply


def test_paths_used_outside_default_or_if_must_exist(spool):
    j = job(
        "rich2",
        [
            ("ann@example.org", {"order": {"items": [{"name": "mug"}]}}),
            ("bob@example.org", {}),  # no order
            ("cy@example.org", {"order": {"items": [{"label": "x"}]}}),  # item without name
            ("dee@example.org", {"order": {"items": []}, "vip": {"level": 1}}),  # vip, no code
        ],
        subject="Hi",
        text=RICH,
    )
    (res,) = spool.submit_many([j], NOW)
    assert res.reply.status == "partial"
    assert [(x.to, x.reason, x.text) for x in res.reply.rejected] == [
        ("bob@example.org", "missing-variable", "missing variable 'order.items'"),
        ("cy@example.org", "missing-variable", "missing variable 'item.name'"),
        ("dee@example.org", "missing-variable", "missing variable 'vip.code'"),
    ]
    (seq,) = spool.find_jobs("rich2")
    assert [rec.to for _, rec in spool.recipients(seq)] == ["ann@example.org"]


def test_a_loop_over_the_limit_is_refused_at_intake(tmp_path: Path):
    config = spool_module.SpoolConfig(template_limits=(3, 10_000))
    spool = Spool.open(tmp_path / "data", map_size=8 << 20, config=config)
    try:
        j = job(
            "loops",
            [
                ("ann@example.org", {"items": [1, 2, 3]}),
                ("bob@example.org", {"items": [1, 2, 3, 4]}),
                ("cy@example.org", {"items": "abcd"}),
            ],
            subject="Hi",
            text="{% for i in items %}{{ i }}{% endfor %}",
        )
        (res,) = spool.submit_many([j], NOW)
        assert res.reply.status == "partial"
        assert [(x.to, x.reason) for x in res.reply.rejected] == [
            ("bob@example.org", "template-error"),
            ("cy@example.org", "template-error"),
        ]
        assert "a loop over 4 items (the limit is 3)" in res.reply.rejected[0].text
        big = job(
            "big",
            [("ann@example.org", {"items": ["x" * 4000] * 3})],
            subject="Hi",
            text="{% for i in items %}{{ i }}{{ i }}{% endfor %}",
        )
        (res,) = spool.submit_many([big], NOW)
        assert res.reply.status == "error"
        assert res.reply.rejected[0].reason == "template-error"
        assert "output over 10,000 characters" in res.reply.error
    finally:
        spool.close()


def test_a_syntax_error_names_the_line_and_column(spool):
    bad = job("syn", [("ann@example.org", {})], text="ok\n{% if x %}\n{{ y ) }}\n{% endif %}")
    (res,) = spool.submit_many([bad], NOW)
    assert res.reply.status == "error"
    assert "text: line 3, column 6" in res.reply.error
