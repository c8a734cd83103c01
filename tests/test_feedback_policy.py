"""The feedback policy and its application to a spool (core/feedback/policy.py, apply.py,
store.py): tying by Message-ID and VERP token, hard and soft bounces, complaints, mailto
unsubscribes, and reports that tie to nothing changing nothing."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from feedbackutil import arf, dsn, plain

from salvo.core.feedback import apply as fb_apply
from salvo.core.feedback import tokens
from salvo.core.feedback.parse import parse_report
from salvo.core.feedback.policy import FeedbackPolicy, decide
from salvo.core.feedback.report import Kind, RecipientReport
from salvo.core.feedback.store import RawReport, ReportStoreFull
from salvo.core.protocol import Job, Recipient
from salvo.core.spool import Spool

SECRET = b"k" * 32
NOW = 1_800_000_000.0
POLICY = FeedbackPolicy(soft_bounce_limit=3, soft_bounce_window=14 * 86400)


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    spool = Spool.open(tmp_path / "data", map_size=8 << 20)
    yield spool
    spool.close()


def _sent(spool: Spool, *rcpts: str, tenant: str = "acme", campaign: str = "spring") -> dict:
    job = Job(
        id="j1",
        tenant=tenant,
        campaign=campaign,
        from_="Acme <news@acme.example>",
        subject="s",
        text="hi",
        recipients=[Recipient(to=t) for t in rcpts],
    )
    reply = spool.submit_many([job], NOW - 100)[0].reply
    return {a.to: a.message_id for a in reply.accepted}


def _apply(spool: Spool, data: bytes, *, rcpts=("fbl@bounces.acme.example",), now=NOW, **kw):
    raw = RawReport(NOW, "test", "", tuple(rcpts), data, **kw)
    report = parse_report(data) if data else None
    return spool.store.write(
        lambda txn: fb_apply.apply_report_in(
            spool, txn, raw, report, secret=SECRET, policy=POLICY, now=now
        )
    )


def _suppressed(spool: Spool, address: str, tenant: str = "acme"):
    return spool.suppression.check_many([address], tenant=tenant, now=NOW + 1)[0]


def test_decisions():
    hard = RecipientReport(address="a@b.c", status="5.1.1", hard=True, reason="userunknown")
    soft = RecipientReport(address="a@b.c", status="4.2.2", reason="mailboxfull")
    assert decide(Kind.BOUNCE, hard).suppress == "hard-bounce"
    assert decide(Kind.BOUNCE, soft).soft and not decide(Kind.BOUNCE, soft).suppress
    assert decide(Kind.COMPLAINT, None, "abuse").suppress == "complaint"
    assert decide(Kind.COMPLAINT, None, "not-spam").event == ""
    assert decide(Kind.AUTOREPLY, hard).event == "" and decide(Kind.NONE, hard).event == ""


def test_a_hard_bounce_tied_by_message_id_suppresses_with_job_and_campaign(spool: Spool):
    mids = _sent(spool, "ann@example.org", "bob@example.org")
    applied = _apply(spool, dsn(mids["ann@example.org"], "ann@example.org"))
    assert [e.type for e in applied.events] == ["bounced"]
    e = applied.events[0]
    assert (e.job, e.campaign, e.tenant, e.recipient) == ("j1", "spring", "acme", "ann@example.org")
    assert e.async_ and e.hard and e.suppressed and e.status == "5.1.1"
    assert e.message_id == mids["ann@example.org"]
    assert _suppressed(spool, "ann@example.org").reason == "hard-bounce"
    assert _suppressed(spool, "bob@example.org") is None


def test_a_report_about_a_message_never_sent_changes_nothing(spool: Spool):
    _sent(spool, "ann@example.org")
    applied = _apply(spool, dsn("<never@acme.example>", "ann@example.org"))
    assert applied.events == [] and applied.untied == 1
    assert _suppressed(spool, "ann@example.org") is None
    assert spool.suppression.count() == 0


def test_the_address_suppressed_is_the_one_sent_to_not_the_one_the_report_names(spool: Spool):
    mids = _sent(spool, "ann@example.org")
    applied = _apply(spool, dsn(mids["ann@example.org"], "ceo@victim.example"))
    assert [e.recipient for e in applied.events] == ["ann@example.org"]
    assert _suppressed(spool, "ceo@victim.example") is None


def test_trusted_reports_suppress_by_address_only_when_ingested_so(spool: Spool):
    _apply(spool, dsn("<x@y>", "dee@example.org"))
    assert _suppressed(spool, "dee@example.org") is None
    applied = _apply(spool, dsn("<x@y>", "dee@example.org"), trusted=True, tenant="acme")
    assert [e.type for e in applied.events] == ["bounced"]
    assert _suppressed(spool, "dee@example.org") is not None


def test_soft_bounces_suppress_at_the_limit_within_the_window(spool: Spool):
    mids = _sent(spool, "cy@example.org")
    report = dsn(mids["cy@example.org"], "cy@example.org", status="4.2.2", code=452)
    old = _apply(spool, report, now=NOW - 30 * 86400)  # outside the window
    assert old.events[0].type == "bounced" and not old.events[0].suppressed
    for _ in range(POLICY.soft_bounce_limit - 1):
        events = _apply(spool, report).events
        assert not events[0].hard and not events[0].suppressed
        assert _suppressed(spool, "cy@example.org") is None
    last = _apply(spool, report).events[0]
    assert last.suppressed
    assert _suppressed(spool, "cy@example.org").reason == "soft-bounce"


def test_a_complaint_suppresses_for_the_tenant_and_counts_against_the_campaign(spool: Spool):
    mids = _sent(spool, "eve@example.org")
    applied = _apply(spool, arf(mids["eve@example.org"], "redacted@isp.example"))
    assert [(e.type, e.feedback_type, e.campaign) for e in applied.events] == [
        ("complained", "abuse", "spring")
    ]
    assert _suppressed(spool, "eve@example.org").reason == "complaint"
    assert _suppressed(spool, "eve@example.org", tenant="other") is None
    assert spool.feedback.counters(b"complaint:") == {b"complaint:acme\0spring": 1}


def test_a_verp_token_ties_the_report_and_a_forged_one_does_not(spool: Spool):
    mids = _sent(spool, "fay@example.org")
    token = tokens.verp_token(SECRET, 1, 0)
    forged = tokens.verp_token(b"x" * 32, 1, 0)
    report = dsn("<unknown@elsewhere>", "fay@example.org")
    assert _apply(spool, report, rcpts=[f"b-{forged}@bounces.acme.example"]).events == []
    events = _apply(spool, report, rcpts=[f"b-{token}@bounces.acme.example"]).events
    assert [(e.type, e.message_id) for e in events] == [("bounced", mids["fay@example.org"])]


def test_a_mailto_unsubscribe_suppresses_for_the_tenant_whoever_sent_it(spool: Spool):
    mids = _sent(spool, "gus@example.org")
    token = tokens.unsubscribe_mailto_token(SECRET, 1, 0)
    events = _apply(spool, plain(), rcpts=[f"u-{token}@bounces.acme.example"]).events
    assert [(e.type, e.tenant, e.recipient, e.job, e.campaign, e.message_id) for e in events] == [
        ("unsubscribed", "acme", "gus@example.org", "j1", "spring", mids["gus@example.org"])
    ]
    assert _suppressed(spool, "gus@example.org").reason == "unsubscribe"
    assert _suppressed(spool, "gus@example.org", tenant="other") is None
    forged = tokens.unsubscribe_mailto_token(b"x" * 32, 1, 0)
    assert _apply(spool, plain(), rcpts=[f"u-{forged}@bounces.acme.example"]).events == []
    # A VERP token is no unsubscribe: each kind of token has its own key.
    verp = tokens.verp_token(SECRET, 1, 0)
    assert _apply(spool, plain(), rcpts=[f"u-{verp}@bounces.acme.example"]).events == []
    # A second mail for the same address: already suppressed, no second event.
    assert _apply(spool, plain(), rcpts=[f"u-{token}@bounces.acme.example"]).events == []


def test_autoreplies_and_plain_mail_change_nothing(spool: Spool):
    _sent(spool, "ivy@example.org")
    assert _apply(spool, plain()).events == []
    assert spool.suppression.count() == 0


def test_the_report_store_is_bounded_and_reports_are_taken_once(spool: Spool):
    fb = spool.feedback
    reports = [RawReport(NOW, "p", "", ("x@b",), b"x" * 100) for _ in range(3)]
    ids = spool.store.write(
        lambda txn: fb.put_reports_in(txn, reports, max_pending=3, max_bytes=10_000)
    )
    assert ids == [1, 2, 3] and fb.pending_ids() == [1, 2, 3]
    with pytest.raises(ReportStoreFull):
        spool.store.write(
            lambda txn: fb.put_reports_in(txn, reports[:1], max_pending=3, max_bytes=10_000)
        )
    assert spool.store.write(lambda txn: fb.take_in(txn, 2)) is not None
    assert spool.store.write(lambda txn: fb.take_in(txn, 2)) is None
    assert fb.pending_ids() == [1, 3]
    assert fb.counters(b"\0pending") == {b"\0pending": 2}


def test_salvo_feedback_ingest_suppresses_only_with_trust_when_nothing_ties(tmp_path: Path):
    import subprocess
    import sys

    report = tmp_path / "r.eml"
    report.write_bytes(dsn("<never@acme.example>", "zed@example.org"))
    data = str(tmp_path / "data")

    def run(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "salvo", "feedback", "ingest", "--data", data, *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    plain_run = run(str(report))
    assert plain_run.returncode == 0 and plain_run.stdout == ""
    assert "0 tied, 1 not tied" in plain_run.stderr
    trusted = run("--trust", "--tenant", "acme", str(report))
    assert trusted.returncode == 0 and '"type":"bounced"' in trusted.stdout
    spool = Spool.open(data)
    try:
        assert _suppressed(spool, "zed@example.org").reason == "hard-bounce"
    finally:
        spool.close()


def test_a_complaint_counts_against_the_source_and_provider_it_was_sent_from(tmp_path: Path):
    """The delivered attempt keeps its source and provider: a complaint about the message
    is counted in their KPI dimensions and against the warm-up lane it went out on."""
    from salvo.actors.warmup import WarmupLanes
    from salvo.core import kpis
    from salvo.core.config import parse_config
    from salvo.core.spool import Outcome

    config = parse_config(
        '[node]\ndata_dir = "data"\n[warmup.new]\ndaily = [50, 100]\n'
        '[pools.default]\nsources = ["127.0.0.2"]\nwarmup = { "127.0.0.2" = "new" }\n',
        base_dir=str(tmp_path),
    )
    spool = Spool.open(tmp_path / "data", map_size=8 << 20)
    try:
        mids = _sent(spool, "eve@example.org")
        [c] = spool.claim_due(NOW, 10, with_bodies=False).claimed
        delivered = Outcome(
            seq=c.seq, idx=c.idx, state="delivered", code=250, source="127.0.0.2", provider="gmail"
        )
        spool.record_outcomes([delivered], NOW - 50)
        lanes = WarmupLanes(config, spool, random.Random(1))
        raw = RawReport(NOW, "test", "", ("fbl@bounces.acme.example",), b"")
        report = parse_report(arf(mids["eve@example.org"], "redacted@isp.example"))

        def apply(txn):
            applied = fb_apply.apply_report_in(
                spool, txn, raw, report, secret=SECRET, policy=POLICY, now=NOW
            )
            spool.add_kpis_in(txn, kpis.book_events(applied.events, NOW))
            lanes.complaints_in(txn, applied.events, NOW)
            return applied

        [event] = spool.store.write(apply).events
        assert (event.type, event.source, event.provider) == ("complained", "127.0.0.2", "gmail")
        minute = range(kpis.minute_of(NOW), kpis.minute_of(NOW) + 1)
        assert spool.kpi_counts(kpis.source_dim("127.0.0.2"), minute)["complained"] == 1
        assert spool.kpi_counts(kpis.dim_key(None, "spring", "gmail"), minute)["complained"] == 1
        assert spool.warmup.get("127.0.0.2", "gmail").complained == 1
    finally:
        spool.close()
