"""Webhooks' pure policy (salvo.core.webhooks) and the outbox in a real spool
(salvo.core.outbox): events queued in the transaction of their change, in commit order."""

from __future__ import annotations

import json
import random

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from salvo.core import pauses as pz
from salvo.core import webhooks as wh
from salvo.core.config import ConfigError, parse_config
from salvo.core.events import Event
from salvo.core.protocol import Job, Recipient
from salvo.core.spool import Outcome, Spool, SpoolConfig
from salvo.testing.webhook_receiver import verify

SUBS = wh.Subscriptions(
    [
        wh.Route("all", frozenset(wh.WEBHOOK_EVENTS)),
        wh.Route("bounces", frozenset({"bounced", "alert"}), frozenset({"acme"})),
    ]
)


def make_job(job_id: str, n: int, tenant: str = "acme", campaign: str = "c1") -> Job:
    rcpts = [Recipient(to=f"user{i}@dest.example") for i in range(n)]
    return Job(
        id=job_id,
        tenant=tenant,
        campaign=campaign,
        from_="Acme <news@acme.example>",
        recipients=rcpts,
        text="hi",
    )


@pytest.fixture
def spool(tmp_path):
    s = Spool.open(tmp_path / "d", SpoolConfig(max_age=500), webhooks=SUBS, map_size=1 << 20)
    yield s
    s.close()


def events_of(spool: Spool, name: str) -> list[dict]:
    return [json.loads(e.data) for e in spool.outbox.head(name, 10_000)]


# -- pure policy ---------------------------------------------------------------------------


def test_routes_filter_by_type_and_tenant():
    assert SUBS.targets("bounced", "acme") == ["all", "bounces"]
    assert SUBS.targets("bounced", "other") == ["all"]
    assert SUBS.targets("delivered", "acme") == ["all"]
    assert SUBS.targets("alert", "") == ["all", "bounces"]  # no tenant: every filter passes
    assert not wh.Subscriptions()
    assert wh.Subscriptions().types == frozenset()


def test_payload_puts_the_id_first_and_signs_timestamp_dot_body():
    raw = msgspec.json.encode(Event(type="bounced", ts=1.5, job="j", recipient="a@b.example"))
    body = wh.payload("hook-1", [("abc-1", raw), ("abc-2", raw)])
    doc = json.loads(body)
    assert doc["webhook"] == "hook-1"
    assert [e["id"] for e in doc["events"]] == ["abc-1", "abc-2"]
    assert doc["events"][0]["recipient"] == "a@b.example"
    assert body.startswith(b'{"webhook":"hook-1","events":[{"id":"abc-1",')
    signature = wh.sign(b"k" * 32, 1700000000, body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify(b"k" * 32, "1700000000", body, signature, now=1700000100)
    assert not verify(b"k" * 32, "1700000000", body + b" ", signature, now=1700000100)
    assert not verify(b"x" * 32, "1700000000", body, signature, now=1700000100)
    assert not verify(b"k" * 32, "1700000000", body, signature, now=1700009999)  # too old


def test_verdicts():
    assert wh.verdict(200) == wh.verdict(204) == wh.OK
    assert wh.verdict(413) == wh.SPLIT
    for status in (301, 400, 401, 404, 408, 429, 500, 503):
        assert wh.verdict(status) == wh.RETRY
    assert wh.retry_after("30", 10) == 10
    assert wh.retry_after("3", 10) == 3
    assert wh.retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 10) is None
    assert wh.retry_after(None, 10) is None


@given(st.integers(1, 10_000), st.floats(0.01, 100), st.floats(0.01, 1000), st.integers(0, 99))
def test_backoff_grows_and_stays_under_its_cap(failures, first, cap, seed):
    rng = random.Random(seed)
    delay = wh.backoff(failures, first, cap, rng)
    base = min(cap, first * 2 ** min(failures - 1, 60))
    assert base * 0.5 <= delay <= base


# -- config ---------------------------------------------------------------------------------


def test_config_defaults_and_errors():
    c = parse_config(b'[[webhooks]]\nurl = "https://hooks.example:8443/x"\nevents = ["alert"]\n')
    (hook,) = c.webhooks
    assert hook.name == "hooks.example_8443"
    assert hook.secret_file == "keys/webhook-hooks.example_8443.secret"
    assert hook.batch_max == 100
    bad = {
        'url = "ftp://x"\nevents = ["bounced"]': "url",
        'url = "http://x"\nevents = ["nope"]': "not an event type",
        'url = "http://x"\nevents = []': "at least one",
        'url = "http://x"\nevents = ["bounced"]\nbatch_max = 0': "batch_max",
        'url = "http://x"\nevents = ["bounced"]\nexpire_after = "0s"': "expire_after",
        'url = "http://x"\nevents = ["bounced"]\ntimeout = "soon"': "timeout",
        'url = "http://x"\nevents = ["bounced"]\nname = "a b"': "name",
        'url = "http://x"\nevents = ["bounced"]\nretry_first = "1h"\nretry_max = "1m"': "retry",
        'url = "http://x"\nevents = ["bounced"]\n[[webhooks]]\nurl = "http://x/y"\n'
        'events = ["bounced"]': "two webhooks",
    }
    for text, words in bad.items():
        with pytest.raises(ConfigError, match=words):
            parse_config(("[[webhooks]]\n" + text).encode())


# -- the outbox in the spool -----------------------------------------------------------------


def test_no_webhook_writes_nothing(tmp_path):
    s = Spool.open(tmp_path / "d", SpoolConfig(max_age=500), map_size=1 << 20)
    try:
        s.submit_many([make_job("j", 3)], 1000)
        s.record_outcomes([Outcome(seq=1, idx=0, state="delivered")], 1001)
        s.cancel(pz.Pause(pz.CANCEL, "campaign", "c1", 0, "t", 1002), 1002)
        assert s.add_webhook_events([Event(type="alert", ts=1.0, job="")]) == 0

        def count(txn):
            db = s.store.dbs
            return txn.stat(db["wh_out"])["entries"], txn.get(b"wh_next", db=db["meta"])

        assert s.store.read(count) == (0, None)
    finally:
        s.close()


def test_every_change_reaches_the_outbox_in_commit_order(spool):
    spool.submit_many([make_job("j1", 3), make_job("j2", 1, tenant="other")], 1000)
    spool.record_outcomes(
        [
            Outcome(seq=1, idx=0, state="delivered", host="mx.dest.example", source="10.0.0.1"),
            Outcome(seq=1, idx=1, state="deferred", code=451, text="later", next_attempt=1100),
            Outcome(seq=2, idx=0, state="bounced", code=550, enhanced="5.1.1", text="no user"),
        ],
        1010,
    )
    spool.record_outcomes([Outcome(seq=1, idx=1, state="bounced", code=550)], 1020)
    spool.cancel(pz.Pause(pz.CANCEL, "campaign", "c1", 0, "t", 1030), 1030)
    got = events_of(spool, "all")
    assert [(e["type"], e["recipient"]) for e in got] == [
        ("accepted", "user0@dest.example"),
        ("accepted", "user1@dest.example"),
        ("accepted", "user2@dest.example"),
        ("accepted", "user0@dest.example"),
        ("delivered", "user0@dest.example"),
        ("deferred", "user1@dest.example"),
        ("bounced", "user0@dest.example"),
        ("bounced", "user1@dest.example"),
        ("cancelled", "user2@dest.example"),
    ]
    delivered = got[4]
    assert delivered["job"] == "j1" and delivered["tenant"] == "acme"
    assert delivered["campaign"] == "c1" and delivered["source"] == "10.0.0.1"
    assert delivered["host"] == "mx.dest.example" and delivered["queued_at"] == 1000
    assert got[6]["reason"] and got[6]["tenant"] == "other"
    # The tenant filter: only acme's bounce.
    assert [(e["type"], e["job"]) for e in events_of(spool, "bounces")] == [("bounced", "j1")]
    entries = spool.outbox.head("all", 100)
    assert [e.seq for e in entries] == sorted(e.seq for e in entries)
    ids = [i for i, _ in spool.outbox.ids(entries)]
    assert len(set(ids)) == len(ids) and all(i.startswith(spool.outbox.store_id()) for i in ids)
    assert spool.outbox.stats("all").pending == 9


def test_expiry_and_claims_queue_their_events(spool):
    spool.submit_many([make_job("j1", 2)], 1000)
    claim = spool.claim_due(1600, 10)  # past max_age: both expire at the claim
    assert [c.record.state for c in claim.finished] == ["expired", "expired"]
    spool.submit_many([make_job("j2", 1)], 2000)
    assert spool.expire_due(2600) and spool.outbox.stats("all").pending == 6
    types = [e["type"] for e in events_of(spool, "all")]
    assert types == ["accepted", "accepted", "expired", "expired", "accepted", "expired"]


def test_remove_counts_once_and_alerts_go_through(spool):
    spool.add_webhook_events([Event(type="alert", ts=5.0, job="", text="complaint_rate")])
    (entry,) = spool.outbox.head("bounces", 10)
    assert json.loads(entry.data)["text"] == "complaint_rate"
    for _ in range(2):  # a repeated delete (after a crash) is not counted twice
        spool.store.write(lambda txn: spool.outbox.remove_in(txn, "bounces", [entry.key]))
    stats = spool.outbox.stats("bounces")
    assert (stats.pending, stats.delivered, stats.expired, stats.oldest) == (0, 1, 0, None)
    (entry,) = spool.outbox.head("all", 10)
    spool.store.write(lambda txn: spool.outbox.remove_in(txn, "all", [], [entry.key]))
    assert spool.outbox.stats("all").expired == 1
    assert sorted(spool.outbox.names()) == ["all", "bounces"]


def test_ids_survive_reopening(tmp_path):
    s = Spool.open(tmp_path / "d", SpoolConfig(), webhooks=SUBS, map_size=1 << 20)
    s.add_webhook_events([Event(type="alert", ts=5.0, job="")])
    first = s.outbox.ids(s.outbox.head("all", 10))
    s.close()
    s = Spool.open(tmp_path / "d", SpoolConfig(), webhooks=SUBS, map_size=1 << 20)
    try:
        s.add_webhook_events([Event(type="alert", ts=6.0, job="")])
        both = s.outbox.ids(s.outbox.head("all", 10))
        assert both[0] == first[0] and both[1][0] != first[0][0]
    finally:
        s.close()
