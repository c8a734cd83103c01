"""The spamd protocol client (sans-IO), the content key, the sample and the policy.

Replies are spamd 4.0.1's, as captured from the spamd the suite runs; hostile replies
(hypothesis) give :class:`SpamdReplyError` or a score, never another exception.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from salvo.core.config import ConfigError, parse_config
from salvo.core.content import spamc
from salvo.core.content.screen import ContentPolicy, ScoreCache, content_key, sample_message
from salvo.core.protocol import Job, Recipient

SYMBOLS_REPLY = (
    b"SPAMD/1.1 0 EX_OK\r\nContent-length: 55\r\nSpam: True ; 1000.0 / 5.0\r\n\r\n"
    b"GTUBE,MSGID_SHORT,NO_RECEIVED,NO_RELAYS,TVD_SPACE_RATIO"
)
REPORT_BODY = (
    b'Spam detection software, running on the system "vm",\nhas identified this incoming '
    b"email as possible spam.\n\nContent preview:  hello\n\n"
    b"Content analysis details:   (1000.0 points, 5.0 required)\n\n"
    b" pts rule name              description\n"
    b"---- ---------------------- --------------------------------------------------\n"
    b"-0.0 NO_RECEIVED            Informational: message has no Received headers\n"
    b" 0.1 URIBL_BLOCKED          ADMINISTRATOR NOTICE: The query to URIBL was\n"
    b"                            blocked.  See\n"
    b"                            http://wiki.apache.org/spamassassin/DnsBlocklists\n"
    b"1000 GTUBE                  BODY: Generic Test for Unsolicited Bulk Email\n"
    b" 0.0 TVD_SPACE_RATIO        No description available.\n\n"
)
REPORT_REPLY = (
    b"SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\nSpam: True ; 1000.0 / 5.0\r\n\r\n"
    % len(REPORT_BODY)
) + REPORT_BODY


def test_request_has_the_length_and_the_message():
    message = b"Subject: hi\r\n\r\nbody\r\n"
    out = spamc.request("SYMBOLS", message)
    assert out == b"SYMBOLS SPAMC/1.5\r\nContent-length: 21\r\n\r\n" + message
    assert spamc.request("REPORT", b"x", user="bulk").startswith(
        b"REPORT SPAMC/1.5\r\nContent-length: 1\r\nUser: bulk\r\n\r\n"
    )
    with pytest.raises(ValueError):
        spamc.request("PROCESS", message)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        spamc.request("CHECK", message, user="a\r\nX: y")


def test_symbols_reply():
    score = spamc.parse_reply(SYMBOLS_REPLY, "SYMBOLS")
    assert score.spam and score.score == 1000.0 and score.threshold == 5.0
    assert score.rule_names == (
        "GTUBE",
        "MSGID_SHORT",
        "NO_RECEIVED",
        "NO_RELAYS",
        "TVD_SPACE_RATIO",
    )


def test_clean_reply_without_rules():
    reply = b"SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: False ; -0.1 / 5.0\r\n\r\n"
    assert spamc.reply_complete(reply)
    score = spamc.parse_reply(reply, "SYMBOLS")
    assert not score.spam and score.score == -0.1 and score.rules == ()


def test_check_reply_and_legacy_yes():
    reply = b"SPAMD/1.1 0 EX_OK\r\nSpam: Yes ; 6.5 / 5.0\r\n\r\n"
    score = spamc.parse_reply(reply, "CHECK")
    assert score.spam and score.score == 6.5 and score.rules == ()


def test_report_reply_has_points_and_descriptions():
    score = spamc.parse_reply(REPORT_REPLY, "REPORT")
    rules = {rule.name: rule for rule in score.rules}
    assert list(rules) == ["NO_RECEIVED", "URIBL_BLOCKED", "GTUBE", "TVD_SPACE_RATIO"]
    assert rules["GTUBE"].points == 1000.0
    assert rules["GTUBE"].description == "BODY: Generic Test for Unsolicited Bulk Email"
    assert rules["URIBL_BLOCKED"].description.startswith(
        "ADMINISTRATOR NOTICE: The query to URIBL was blocked. See http://"
    )


def test_reply_complete_follows_content_length():
    for cut in range(len(SYMBOLS_REPLY)):
        assert not spamc.reply_complete(SYMBOLS_REPLY[:cut])
    assert spamc.reply_complete(SYMBOLS_REPLY)
    # A refusal is one status line, without headers.
    assert spamc.reply_complete(b"SPAMD/1.0 76 Bad header line: GARBAGE\r\n")


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (b"", "without a reply"),
        (b"HTTP/1.1 200 OK\r\n\r\n", "not a SPAMD status line"),
        (b"SPAMD/1.0 76 Bad header line: GARBAGE\r\n", "EX_PROTOCOL: Bad header line"),
        (b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1 / 5\r\n", "headers do not end"),
        (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n", "no Spam header"),
        (b"SPAMD/1.1 0 EX_OK\r\nSpam: maybe ; 1 / 5\r\n\r\n", "bad Spam header"),
        (b"SPAMD/1.1 0 EX_OK\r\nContent-length: x\r\nSpam: True ; 1 / 5\r\n\r\n", "Content"),
        (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 9\r\nSpam: True ; 1 / 5\r\n\r\nAB", "cut short"),
        (b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1 / 5\r\nnocolon\r\n\r\n", "not a header line"),
        (b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1 / 5\r\n\r\nA B,<x>", "not a rule name"),
    ],
)
def test_bad_replies_are_typed_errors(reply, says):
    with pytest.raises(spamc.SpamdReplyError, match=says.replace("(", r"\(")):
        spamc.parse_reply(reply, "SYMBOLS")


@settings(max_examples=400, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda cut, noise: SYMBOLS_REPLY[:cut] + noise,
            st.integers(0, len(SYMBOLS_REPLY)),
            st.binary(max_size=40),
        ),
        st.builds(
            lambda cut, noise: REPORT_REPLY[:cut] + noise,
            st.integers(0, len(REPORT_REPLY)),
            st.binary(max_size=40),
        ),
    ),
    kind=st.sampled_from(spamc.KINDS),
)
def test_hostile_replies_never_crash(data, kind):
    with contextlib.suppress(spamc.SpamdReplyError):
        spamc.reply_complete(data)
    try:
        score = spamc.parse_reply(data, kind)
    except spamc.SpamdReplyError as exc:
        assert str(exc)
    else:
        assert isinstance(score.score, float)


def job(**fields) -> Job:
    base = {
        "id": "j1",
        "from_": "News <news@acme.example>",
        "subject": "Hello {{ name }}",
        "text": "Hi {{ name }}, our news.",
        "recipients": [Recipient(to="ann@example.org", vars={"name": "Ann"})],
    }
    base.update(fields)
    return Job(**base)


def test_content_key_ignores_recipients_and_header_order():
    a = job(headers={"X-A": "1", "X-B": "2"})
    b = job(
        id="j2",
        headers={"X-B": "2", "X-A": "1"},
        recipients=[Recipient(to="bob@example.org", vars={"name": "Bob"})],
    )
    assert content_key(a) == content_key(b)
    for change in ({"subject": "Other"}, {"html": "<p>x</p>"}, {"headers": {"X-A": "2"}}):
        assert content_key(job(**change)) != content_key(a)
    assert content_key(job(text=None, html="x")) != content_key(job(text="x", html=None))


def test_sample_renders_the_first_recipient_that_renders():
    j = job(
        recipients=[
            Recipient(to="no-vars@example.org"),
            Recipient(to="bob@example.org", vars={"name": "Bob"}),
        ]
    )
    key = content_key(j)
    sample = sample_message(j, key, 1_700_000_000.0, 100_000)
    assert sample is not None
    assert b"Hello Bob" in sample and b"To: bob@example.org" in sample
    assert key.hex().encode() in sample  # the Message-ID: the same sample every time
    assert sample == sample_message(j, key, 1_700_000_000.0, 100_000)
    assert len(sample_message(j, key, 1_700_000_000.0, 50)) == 50
    nothing = job(recipients=[Recipient(to="a@example.org")])
    assert sample_message(nothing, key, 0.0, 1000) is None
    raw = job(raw="Subject: x\nFrom: a@acme.example\n\nbody\n", text=None, subject=None)
    assert sample_message(raw, key, 0.0, 1000) == (
        b"Subject: x\r\nFrom: a@acme.example\r\n\r\nbody\r\n"
    )


def test_policy_and_description():
    policy = ContentPolicy(reject_at=5.0, warn_at=3.0)
    gtube = spamc.parse_reply(SYMBOLS_REPLY, "SYMBOLS")
    assert policy.verdict(gtube) == "reject"
    assert policy.describe(gtube, "reject") == (
        "content scored 1000.0 >= 5 (GTUBE, MSGID_SHORT, NO_RECEIVED, NO_RELAYS, TVD_SPACE_RATIO)"
    )
    assert policy.verdict(spamc.Score(False, 3.0, 5.0)) == "warn"
    assert policy.verdict(spamc.Score(False, 2.9, 5.0)) == "pass"
    assert policy.verdict(spamc.Score(True, 5.0, 5.0)) == "reject"


def test_cache_keeps_the_most_recent():
    cache = ScoreCache(2)
    s = spamc.Score(False, 0.0, 5.0)
    cache.put(b"a", s)
    cache.put(b"b", s)
    assert cache.get(b"a") is s  # a is now the most recent
    cache.put(b"c", s)
    assert cache.get(b"b") is None and cache.get(b"a") is s and len(cache) == 2
    off = ScoreCache(0)
    off.put(b"a", s)
    assert off.get(b"a") is None


def test_content_config():
    config = parse_config(b'[content]\nspamassassin = "127.0.0.1:7830"\n')
    assert config.content.address() == ("127.0.0.1", 7830)
    assert parse_config(b'[content]\nspamassassin = "spamd"\n').content.address() == (
        "spamd",
        783,
    )
    assert parse_config(b"").content.spamassassin == ""
    for bad, says in [
        ('spamassassin = "127.0.0.1:x"', "spamassassin"),
        ("warn_at = 6.0", "warn_at"),
        ('when_down = "maybe"', "when_down"),
        ('timeout = "0s"', "timeout"),
        ("max_size = 10", "max_size"),
        ("max_connections = 0", "max_connections"),
        ("spamasassin = 'x'", "unknown key"),
    ]:
        with pytest.raises(ConfigError, match=says):
            parse_config(f"[content]\n{bad}\n".encode())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(
    text=st.sampled_from(["Hi {{ a }}", "{{ a.b }} {{ c }}", "plain", "{{ a | raw }}", "{{"]),
    to=st.sampled_from(["ann@example.org", "Ann <ann@example.org>", "bad", "a@b\r\nX: y"]),
    variables=st.dictionaries(st.sampled_from(["a", "b", "c"]), json_values, max_size=3),
    size=st.integers(1, 5000),
)
def test_sample_never_crashes(text, to, variables, size):
    j = job(text=text, subject=text, recipients=[Recipient(to=to, vars=variables)])
    sample = sample_message(j, content_key(j), 0.0, size)
    assert sample is None or 0 < len(sample) <= size
