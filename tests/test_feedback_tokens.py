"""VERP and unsubscribe tokens (salvo.core.feedback.tokens): round trips, and nothing else
reads back: no altered character, no other secret, no token of another kind, no random
string."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from salvo.core.feedback import tokens as t

SECRET = bytes(range(32))
OTHER = bytes(range(1, 33))

SEQ = st.integers(min_value=0, max_value=2**64 - 1)
IDX = st.integers(min_value=0, max_value=2**32 - 1)
TEXT = st.text(max_size=300)

COMPACT_ALPHABET = "0123456789abcdef"
URL_ALPHABET = string.ascii_letters + string.digits + "-_"
# Substitutes for one character: the token's alphabet, its neighbours and a few that
# appear in addresses and URLs.
SUBSTITUTES = sorted(set(string.ascii_letters + string.digits + "-_=+/.@ ~"))


def _alterations(token: str):
    """Every token that differs from ``token`` in one character (substituted, removed,
    or inserted)."""
    for i, c in enumerate(token):
        for s in SUBSTITUTES:
            if s != c:
                yield token[:i] + s + token[i + 1 :]
        yield token[:i] + token[i + 1 :]
    for i in range(len(token) + 1):
        for s in "a2A_":
            yield token[:i] + s + token[i:]


# -- VERP ----------------------------------------------------------------------------------


def test_verp_round_trip_and_format():
    token = t.verp_token(SECRET, 1234, 56)
    assert re.fullmatch(r"[0-9a-f]+", token)
    assert t.read_verp_token(SECRET, token) == (1234, 56)
    address = t.verp_address(SECRET, 1234, 56, "bounces.acme.example")
    assert address == f"b-{token}@bounces.acme.example"
    assert t.read_verp_address(SECRET, address) == (1234, 56)
    assert t.read_verp_address(SECRET, address.upper()) == (1234, 56)  # case-folded either way
    assert t.read_verp_token(SECRET, token.upper()) == (1234, 56)


def test_verp_extremes_fit_a_local_part():
    for seq, idx in ((0, 0), (2**64 - 1, 2**32 - 1), (1, 9999)):
        address = t.verp_address(SECRET, seq, idx, "b.example")
        assert len(address.partition("@")[0]) <= 64
        assert t.read_verp_address(SECRET, address) == (seq, idx)
    with pytest.raises(ValueError):
        t.verp_token(SECRET, 2**64, 0)
    with pytest.raises(ValueError):
        t.verp_token(SECRET, 0, -1)
    with pytest.raises(ValueError):
        t.verp_token(b"short", 1, 1)


def test_every_single_character_alteration_of_a_verp_token_is_rejected():
    token = t.verp_token(SECRET, 987654, 321)
    for altered in _alterations(token):
        if altered.lower() == token:
            continue  # the same letter in the other case: the same token
        assert t.read_verp_token(SECRET, altered) is None, altered


def test_every_single_character_alteration_of_a_mailto_token_is_rejected():
    token = t.unsubscribe_mailto_token(SECRET, 42, 7)
    for altered in _alterations(token):
        if altered.lower() == token:
            continue
        assert t.read_unsubscribe_mailto_token(SECRET, altered) is None, altered


def test_kinds_and_secrets_do_not_mix():
    verp = t.verp_token(SECRET, 5, 6)
    mailto = t.unsubscribe_mailto_token(SECRET, 5, 6)
    assert verp != mailto
    assert t.read_unsubscribe_mailto_token(SECRET, verp) is None
    assert t.read_verp_token(SECRET, mailto) is None
    assert t.read_verp_token(OTHER, verp) is None
    assert t.read_unsubscribe_mailto_token(OTHER, mailto) is None
    assert t.read_verp_address(SECRET, f"u-{verp}@b.example") is None  # wrong prefix
    assert t.read_unsubscribe_mailto(SECRET, f"b-{mailto}@b.example") is None
    url = t.unsubscribe_token(SECRET, "acme", "ann@example.org")
    assert t.read_verp_token(SECRET, url.lower()) is None
    assert t.read_unsubscribe_token(OTHER, url) is None


def test_mailto_round_trip():
    address = t.unsubscribe_mailto(SECRET, 77, 3, "bounces.acme.example")
    assert address.startswith("u-") and address.endswith("@bounces.acme.example")
    assert len(address.partition("@")[0]) <= 64
    assert t.read_unsubscribe_mailto(SECRET, address) == (77, 3)
    assert t.read_unsubscribe_mailto(SECRET, address.lower()) == (77, 3)
    assert t.read_unsubscribe_mailto(SECRET, address.upper()) == (77, 3)


@settings(max_examples=300, deadline=None)
@given(SEQ, IDX)
def test_compact_tokens_round_trip_and_survive_lowercasing(seq, idx):
    verp = t.verp_address(SECRET, seq, idx, "Bounces.Example")
    local = verp.partition("@")[0]
    assert len(local) <= 64 and re.fullmatch(r"b-[0-9a-f]+", local)
    assert t.read_verp_address(SECRET, verp.lower()) == (seq, idx)
    mailto = t.unsubscribe_mailto(SECRET, seq, idx, "bounces.example")
    assert len(mailto.partition("@")[0]) <= 64
    assert t.read_unsubscribe_mailto(SECRET, mailto.lower()) == (seq, idx)
    assert t.read_verp_token(OTHER, local[2:]) is None


# -- the unsubscribe URL token ---------------------------------------------------------------


def test_url_token_round_trip_and_format():
    token = t.unsubscribe_token(SECRET, "acme", "Ann.Lee@Example.org")
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert t.read_unsubscribe_token(SECRET, token) == ("acme", "Ann.Lee@Example.org")
    eai = t.unsubscribe_token(SECRET, "tenant ü", "jörg@bücher.example")
    assert t.read_unsubscribe_token(SECRET, eai) == ("tenant ü", "jörg@bücher.example")
    assert t.read_unsubscribe_token(SECRET, token + "=") is None  # no padding
    assert t.read_unsubscribe_token(SECRET, token.lower()) is None  # case matters in a URL


def test_url_token_carries_at_least_96_bits_of_mac():
    # 12 bytes of MAC: the token grows by 16 base64 characters over its payload.
    short = t.unsubscribe_token(SECRET, "", "a")
    assert len(short) >= 16 + 4


def test_every_single_character_alteration_of_a_url_token_is_rejected():
    token = t.unsubscribe_token(SECRET, "acme", "ann@example.org")
    for altered in _alterations(token):
        assert t.read_unsubscribe_token(SECRET, altered) is None, altered


def test_tenant_and_address_cannot_be_shifted():
    # The tenant is length-prefixed: ("ab", "c@x") and ("a", "bc@x") are different tokens.
    a = t.unsubscribe_token(SECRET, "ab", "c@x.example")
    b = t.unsubscribe_token(SECRET, "a", "bc@x.example")
    assert a != b
    assert t.read_unsubscribe_token(SECRET, a) == ("ab", "c@x.example")
    assert t.read_unsubscribe_token(SECRET, b) == ("a", "bc@x.example")


@settings(max_examples=300, deadline=None)
@given(TEXT, TEXT)
def test_url_tokens_round_trip(tenant, address):
    try:
        token = t.unsubscribe_token(SECRET, tenant, address)
    except UnicodeEncodeError:
        return  # lone surrogates are not text a producer can send
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert t.read_unsubscribe_token(SECRET, token) == (tenant, address)
    assert t.read_unsubscribe_token(OTHER, token) is None


# -- random strings --------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(COMPACT_ALPHABET, max_size=64), st.text(max_size=80)))
def test_random_strings_are_never_compact_tokens(text):
    assert t.read_verp_token(SECRET, text) is None
    assert t.read_unsubscribe_mailto_token(SECRET, text) is None
    assert t.read_verp_address(SECRET, f"b-{text}@x.example") is None
    assert t.read_unsubscribe_mailto(SECRET, f"u-{text}@x.example") is None


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(URL_ALPHABET, max_size=200), st.text(max_size=200)))
def test_random_strings_are_never_url_tokens(text):
    assert t.read_unsubscribe_token(SECRET, text) is None


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=3, max_size=60))
def test_random_payloads_are_never_tokens(raw):
    import base64

    compact = raw.hex()
    assert t.read_verp_token(SECRET, compact) is None
    url = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    assert t.read_unsubscribe_token(SECRET, url) is None


def test_non_strings_are_not_tokens():
    for value in (None, b"abc", 12, ["a"]):
        assert t.read_verp_token(SECRET, value) is None  # type: ignore[arg-type]
        assert t.read_unsubscribe_token(SECRET, value) is None  # type: ignore[arg-type]
