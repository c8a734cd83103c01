"""The pure sealing module (salvo.core.spool_crypto): round trips and refusals, with
Hypothesis for any data, associated data and key generation."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from salvo.core import spool_crypto as sc
from salvo.core.errors import SpoolError

KEYS = st.binary(min_size=32, max_size=32)
NONCES = st.binary(min_size=12, max_size=12)
GENS = st.integers(min_value=0, max_value=2**32 - 1)


@settings(max_examples=200, deadline=None)
@given(key=KEYS, nonce=NONCES, gen=GENS, plain=st.binary(max_size=4096), ad=st.binary())
def test_seal_then_open_gives_the_data_back(key, nonce, gen, plain, ad):
    cipher = sc.aead(key)
    sealed = sc.seal(cipher, gen, nonce, plain, ad)
    assert sc.is_sealed(sealed)
    assert sc.generation_of(sealed) == gen
    assert len(sealed) == len(plain) + sc.OVERHEAD
    assert sc.open_sealed(cipher, sealed, ad) == plain


@settings(max_examples=200, deadline=None)
@given(key=KEYS, nonce=NONCES, plain=st.binary(max_size=512), data=st.data())
def test_any_changed_byte_is_refused(key, nonce, plain, data):
    cipher = sc.aead(key)
    sealed = bytearray(sc.seal(cipher, 1, nonce, plain, sc.vars_ad(7, 3)))
    at = data.draw(st.integers(min_value=0, max_value=len(sealed) - 1))
    flip = data.draw(st.integers(min_value=1, max_value=255))
    sealed[at] ^= flip
    with pytest.raises(sc.SealError):
        sc.open_sealed(cipher, bytes(sealed), sc.vars_ad(7, 3))


@settings(max_examples=100, deadline=None)
@given(key=KEYS, other=KEYS, nonce=NONCES, plain=st.binary(max_size=256))
def test_another_key_or_place_is_refused(key, other, nonce, plain):
    cipher = sc.aead(key)
    sealed = sc.seal(cipher, 1, nonce, plain, sc.vars_ad(7, 3))
    with pytest.raises(sc.SealError):
        sc.open_sealed(cipher, sealed, sc.vars_ad(7, 4))  # moved to another recipient
    with pytest.raises(sc.SealError):
        sc.open_sealed(cipher, sealed, sc.job_ad(7))
    if other != key:
        with pytest.raises(sc.SealError):
            sc.open_sealed(sc.aead(other), sealed, sc.vars_ad(7, 3))


@settings(max_examples=100, deadline=None)
@given(value=st.binary(max_size=64))
def test_short_or_unmarked_values_are_refused_not_crashed(value):
    cipher = sc.aead(bytes(32))
    with pytest.raises(sc.SealError):
        sc.open_sealed(cipher, value, b"")


@settings(max_examples=100, deadline=None)
@given(master=KEYS, data_key=KEYS, nonce=NONCES, tenant=st.text(max_size=40))
def test_wrap_then_unwrap_and_the_scope_is_bound(master, data_key, nonce, tenant):
    cipher = sc.aead(master)
    scope = b"tenant\0" + tenant.encode() + b"\0\0\0\0\1"
    wrapped = sc.wrap_key(cipher, nonce, data_key, scope)
    assert data_key not in wrapped
    assert sc.unwrap_key(cipher, wrapped, scope) == data_key
    with pytest.raises(sc.SealError):
        sc.unwrap_key(cipher, wrapped, scope + b"x")  # copied to another tenant


def test_msgpack_maps_in_clear_are_not_taken_for_sealed_records():
    import msgspec

    for value in ({}, {"a": 1}, {str(i): i for i in range(20)}, {str(i): i for i in range(70000)}):
        assert not sc.is_sealed(msgspec.msgpack.encode(value))


@settings(max_examples=100, deadline=None)
@given(key=KEYS)
def test_master_key_text_forms(key):
    for text in (
        base64.b64encode(key).decode(),
        base64.urlsafe_b64encode(key).decode().rstrip("="),
        "  " + base64.b64encode(key).decode() + "\n",
    ):
        assert sc.parse_master_key(text, "k") == key
    assert sc.parse_master_key(sc.format_master_key(key), "k") == key
    assert len(sc.master_id(key)) == 16


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "32"),
        ("not base64 at all!", "base64"),
        (base64.b64encode(b"short").decode(), "5 bytes"),
        (b"\xff\xfe", "base64"),
    ],
)
def test_bad_master_keys_get_a_clear_error(text, why):
    with pytest.raises(SpoolError, match=why) as info:
        sc.parse_master_key(text, "[spool] master_key_file k")
    assert str(info.value).startswith("[spool] master_key_file k: ")


def test_master_ids_differ_and_reveal_nothing():
    a, b = os.urandom(32), os.urandom(32)
    assert sc.master_id(a) != sc.master_id(b)
    assert sc.master_id(a).encode() not in base64.b64encode(a)
