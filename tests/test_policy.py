"""The sending policy (salvo.core.policy) as tables: no sockets, no clock, no sleeps."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from salvo.core import policy
from salvo.core.events import change_event
from salvo.core.policy import Next
from salvo.core.providers import Provider
from salvo.core.shaping import Limits
from salvo.core.smtp import Outcome, Reply, Scope, Status
from salvo.core.spool import Change
from salvo.core.spool_records import Attempt, RcptRecord

NOW = 1_700_000_000.0


def _reply(code: int, text: str = "x", esc: tuple[int, int, int] | None = None) -> Reply:
    return Reply(code, esc, (text,))


DELIVERED = Outcome.delivered("a@example.org", _reply(250, "ok", (2, 0, 0)))
SITE_SOFT = Outcome.deferred("a@example.org", Scope.SITE, "refused")
STREAM_SOFT = Outcome.deferred("a@example.org", Scope.STREAM, "timed out")
RCPT_SOFT = Outcome.from_reply("a@example.org", _reply(450, "busy", (4, 2, 0)), Scope.RECIPIENT)
BYE_421 = Outcome.from_reply("a@example.org", _reply(421, "bye", (4, 7, 0)), Scope.RECIPIENT)
HARD = Outcome.from_reply("a@example.org", _reply(550, "no such user", (5, 1, 1)), Scope.RECIPIENT)


@pytest.mark.parametrize(
    ("outcome", "tried", "hosts", "progress", "expected"),
    [
        (DELIVERED, 0, 2, False, Next.REPORT),
        (HARD, 0, 2, True, Next.REPORT),
        (SITE_SOFT, 0, 2, False, Next.NEXT_HOST),  # a soft failure of one host: the next
        (STREAM_SOFT, 0, 3, True, Next.NEXT_HOST),
        (SITE_SOFT, 1, 2, False, Next.REPORT),  # no host left: deferred
        (RCPT_SOFT, 0, 2, False, Next.REPORT),  # about the recipient, not the host
        (BYE_421, 0, 1, True, Next.AGAIN),  # a per-connection limit after deliveries
        (BYE_421, 0, 1, False, Next.REPORT),  # "later": deferred
    ],
)
def test_after_a_transaction(outcome, tried, hosts, progress, expected):
    assert policy.after_transaction(outcome, tried, hosts, progress) is expected


@pytest.mark.parametrize(
    ("paused", "refused", "expected"),
    [
        (0.0, 1, Next.AGAIN),  # other connections work: a refusal, first in line again
        (0.0, policy.MAX_REFUSED - 1, Next.AGAIN),
        (0.0, policy.MAX_REFUSED, Next.REPORT),  # refused again and again: deferred
        (30.0, 1, Next.DEAD),  # the lane's last connection failed: everything waits
    ],
)
def test_after_a_failed_connection(paused, refused, expected):
    assert policy.after_failed_connect(paused, refused) is expected


def test_share_of_max_ready():
    unlimited = Provider("big", limits=Limits(max_connections=20))
    assert policy.share(unlimited, 4096, 32) == 4096
    configured = Provider("own", limits=Limits(max_messages_per_second=1), max_ready=77)
    assert policy.share(configured, 4096, 32) == 77
    # 10/s: 30 s of its rate, but at least a batch per connection...
    slow = Provider("slow", limits=Limits(max_connections=2, max_messages_per_second=10))
    assert policy.share(slow, 4096, 32) == 300
    tiny = Provider("tiny", limits=Limits(max_connections=4, max_messages_per_hour=36))
    assert policy.share(tiny, 4096, 32) == 128
    # ...and at most half the node.
    fast = Provider("fast", limits=Limits(max_messages_per_second=1000))
    assert policy.share(fast, 4096, 32) == 2048


def test_hold_back():
    rng = random.Random(1)
    assert policy.hold_back(0.0, 10, 11, rng) is None
    at_share = policy.hold_back(0.0, 11, 11, rng)
    assert at_share == policy.HoldBack("at its share of max_ready", policy.HANDBACK_DELAY)
    paused = policy.hold_back(60.0, 0, 11, rng)
    assert paused is not None and "paused for 60 s" in paused.reason
    assert 60.0 <= paused.delay <= 66.0  # the pause's end, spread by a tenth of it
    assert policy.hold_back(60.0, 99, 11, rng).reason == paused.reason  # the pause first


def test_claim_room():
    assert policy.claim_room(4096, 0, 512) == 512
    assert policy.claim_room(4096, 4000, 512) == 96
    assert policy.claim_room(4096, 5000, 512) == 0


@given(
    weights=st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=5),
    rounds=st.integers(min_value=1, max_value=4),
)
def test_sources_are_picked_in_proportion_to_their_weights(weights, rounds):
    sources = [f"192.0.2.{i}" for i in range(len(weights))]
    picker = policy.SourcePicker(sources, weights)
    picks = Counter(picker.next() for _ in range(rounds * sum(weights)))
    assert picks == Counter({s: rounds * w for s, w in zip(sources, weights, strict=True)})


def test_weighted_sources_are_interleaved():
    picker = policy.SourcePicker(["a", "b"], [2, 1])
    assert [picker.next() for _ in range(6)] == ["a", "b", "a", "a", "b", "a"]


def test_spool_outcome_of_each_status():
    common = {"now": NOW, "attempts": 1, "first_retry": 300.0, "max_retry": 3600.0}
    rng = random.Random(2)
    delivered = policy.spool_outcome(1, 2, DELIVERED, "mx.example", rng=rng, **common)
    assert (delivered.state, delivered.code, delivered.enhanced, delivered.host) == (
        "delivered",
        250,
        "2.0.0",
        "mx.example",
    )
    assert policy.spool_outcome(1, 2, HARD, "mx", rng=rng, **common).state == "bounced"
    cannot = Outcome.failed("a@example.org", "cannot make the message: missing variable")
    failed = policy.spool_outcome(1, 2, cannot, "", rng=rng, **common)
    assert (failed.state, failed.code, failed.enhanced) == ("failed", 0, "")
    assert not policy.suppresses(failed.state, failed.code, False)
    deferred = policy.spool_outcome(1, 2, RCPT_SOFT, "mx", rng=rng, **common)
    assert deferred.state == "deferred"
    assert NOW + 240 <= deferred.next_attempt <= NOW + 360  # 5 min +- 20 %
    hinted = policy.spool_outcome(1, 2, SITE_SOFT, "", retry_at=NOW + 7200, rng=rng, **common)
    assert hinted.next_attempt == NOW + 7200  # a paused lane: not before its end
    long_text = Outcome(DELIVERED.recipient, Status.DEFERRED, Scope.SITE, None, None, "x" * 900)
    assert len(policy.spool_outcome(1, 2, long_text, "", rng=rng, **common).text) == 500


@pytest.mark.parametrize(
    ("state", "code", "hard", "expected"),
    [
        ("bounced", 550, True, True),  # a remote server: no such mailbox or domain
        ("bounced", 552, False, False),  # mailbox full: about the message, not the address
        ("bounced", 0, True, False),  # a local verdict (DNS): no reply code, never
        ("deferred", 450, True, False),
        ("delivered", 250, False, False),
    ],
)
def test_what_suppresses(state, code, hard, expected):
    assert policy.suppresses(state, code, hard) is expected


@pytest.mark.parametrize(
    ("code", "enhanced", "text", "reason", "hard"),
    [
        (550, "5.1.1", "no such user", "userunknown", True),
        (550, "", "User unknown", "userunknown", True),  # no enhanced code: the text decides
        (552, "5.2.2", "mailbox full", "mailboxfull", False),
        (554, "5.7.1", "Client host blocked using zen.spamhaus.org", "blocked", False),
    ],
)
def test_a_synchronous_refusal_gets_the_feedback_reason(code, enhanced, text, reason, hard):
    """The event of a refusal at RCPT carries the reason a later bounce report would get."""
    attempt = Attempt(NOW, "bounced", code=code, enhanced=enhanced, text=text, host="mx")
    record = RcptRecord("a@example.org", "a@example.org", "<m@x>", "bounced", 1, NOW, NOW, attempt)
    event = change_event(Change(1, 0, record), None, NOW)
    assert (event.reason, event.hard) == (reason, hard)
    assert policy.suppresses(event.type, event.code, event.hard) is hard


def test_throttle_signals():
    gmail = (re.compile(r"4\.7\.28|rate limit"),)
    bye = Outcome.from_reply("a@x", _reply(421, "try later", (4, 7, 0)), Scope.SITE)
    assert policy.throttles(bye, 421, "try later", ())
    rated = Outcome.from_reply("a@x", _reply(450, "4.7.28 rate limited", (4, 7, 28)), Scope.SITE)
    assert policy.throttles(rated, 450, "4.7.28 rate limited", gmail)
    assert not policy.throttles(RCPT_SOFT, 450, "busy", gmail)
    assert not policy.throttles(HARD, 550, "rate limit", gmail)  # permanent: never a throttle
    assert policy.throttles(None, 421, "too many connections", ())  # at connect
