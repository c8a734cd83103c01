"""Address normalization and rejection."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from salvo.core.address import (
    bare_address,
    domain_of_mailbox,
    mailbox_key,
    normalize_domain,
    parse_address,
    parse_mailbox,
)
from salvo.core.errors import InvalidAddressError


@pytest.mark.parametrize(
    ("text", "domain", "key"),
    [
        ("Ann@Example.ORG", "example.org", "ann@example.org"),
        ("ann@example.org.", "example.org", "ann@example.org"),
        ("Ann.B+tag@Bücher.Example", "xn--bcher-kva.example", "ann.b+tag@xn--bcher-kva.example"),
        ("x@xn--bcher-kva.example", "xn--bcher-kva.example", "x@xn--bcher-kva.example"),
        ("ÄNN@example.org", "example.org", "änn@example.org"),
        ("a!#$%&'*+-/=?^_`{|}~@x.example", "x.example", "a!#$%&'*+-/=?^_`{|}~@x.example"),
    ],
)
def test_normalizes(text: str, domain: str, key: str) -> None:
    address = parse_address(text)
    assert address.domain == domain
    assert address.key == key
    assert address.local == text.rpartition("@")[0]  # the local part is kept as given


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ann",
        "@example.org",
        "ann@",
        "ann@.",
        "a b@example.org",
        "ann@exa mple.org",
        "ann@example.org\r\nBcc: x@y.z",
        "ann\x00@example.org",
        "ann@example.org\u2028",
        "a..b@example.org",
        ".a@example.org",
        '"quoted"@example.org',
        "ann@[192.0.2.1]",
        "ann@-bad.example",
        "ann@bad_.example",
        "ann@ab--cd.example",
        "x" * 65 + "@example.org",
        "a@" + ".".join(["x" * 63] * 4),
        "x" * 64 + "@" + ".".join(["y" * 60] * 3) + ".example",
    ],
)
def test_rejects(text: str) -> None:
    with pytest.raises(InvalidAddressError):
        parse_address(text)


def test_error_names_the_address() -> None:
    with pytest.raises(InvalidAddressError, match="ann@-bad"):
        parse_address("ann@-bad.example")


def test_mailbox_domain() -> None:
    assert domain_of_mailbox("Acme <News@ACME.example>") == "acme.example"
    assert domain_of_mailbox("news@acme.example") == "acme.example"
    assert normalize_domain("BÜCHER.example.") == "xn--bcher-kva.example"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_is_parsed_or_refused_cleanly(text: str) -> None:
    try:
        address = parse_address(text)
    except InvalidAddressError:
        return
    assert "\n" not in address.key and "\r" not in address.key
    assert len(str(address).encode()) <= 254


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=30),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=30),
)
def test_any_pair_is_parsed_or_refused_cleanly(local: str, domain: str) -> None:
    try:
        address = parse_address(f"{local}@{domain}")
    except InvalidAddressError:
        return
    assert address.domain.isascii()
    assert parse_address(str(address)).key == address.key  # normalization is idempotent


@pytest.mark.parametrize(
    ("text", "bare"),
    [
        ("ann@example.org", "ann@example.org"),
        ("<Ann@Example.org>", "Ann@Example.org"),
        ("Ann B <Ann@Example.org>", "Ann@Example.org"),
        ('"Lee, Ann <x>" <ann@example.org>', "ann@example.org"),
        ("Ann <ann@example.org", "Ann <ann@example.org"),  # no final ">": taken as is
    ],
)
def test_bare_address(text: str, bare: str) -> None:
    assert bare_address(text) == bare


def test_parse_mailbox_validates_the_bare_address() -> None:
    address = parse_mailbox("Ann <Ann@Bücher.Example>")
    assert address == parse_address("Ann@Bücher.Example")
    assert address.local == "Ann" and address.key == "ann@xn--bcher-kva.example"
    assert parse_mailbox("<ann@example.org>") == parse_address("ann@example.org")
    for bad in ("Ann <>", "Ann <a b@example.org>", "Ann <ann@example.org> ", "<ann>", "Ann"):
        with pytest.raises(InvalidAddressError) as err:
            parse_mailbox(bad)
        assert err.value.text == bad  # the error names what was given


@given(st.text(st.characters(codec="utf-8"), max_size=40), st.sampled_from(["", "<", "N <"]))
@settings(max_examples=500, deadline=None)
def test_mailbox_key_agrees_with_parse_mailbox(text: str, prefix: str) -> None:
    for candidate in (text, f"{prefix}{text}>" if prefix else f"{text}@example.org"):
        try:
            expected = parse_mailbox(candidate)
        except InvalidAddressError as exc:
            with pytest.raises(InvalidAddressError) as err:
                mailbox_key(candidate)
            assert err.value.text == exc.text
        else:
            assert mailbox_key(candidate) == (expected.key, expected.domain)


@pytest.mark.parametrize(
    "text",
    ["Ann@Example.ORG", "Ann <A.B+x@Bücher.Example>", "<ÄNN@example.org>", "x@" + "a" * 250],
)
def test_mailbox_key_examples(text: str) -> None:
    try:
        expected = parse_mailbox(text)
    except InvalidAddressError:
        with pytest.raises(InvalidAddressError):
            mailbox_key(text)
    else:
        assert mailbox_key(text) == (expected.key, expected.domain)


# Found by the address fuzz target (salvo.bench.fuzz): "her.." kept a trailing dot in the
# domain, so "ann@her.." and "ann@her" had different suppression keys; a full stop other
# than "." (U+3002, U+FF0E) at the end is the root, as "." is.
@pytest.mark.parametrize("text", ["Anng.M@her..", "a@b...", "a@b.\u3002", "a@\u3002"])
def test_fuzz_found_second_trailing_dot_is_refused(text: str) -> None:
    with pytest.raises(InvalidAddressError, match="Empty Label"):
        parse_mailbox(text)
    with pytest.raises(InvalidAddressError):
        mailbox_key(text)


@pytest.mark.parametrize("text", ["a@her.", "a@her\u3002", "a@HER\uff0e"])
def test_fuzz_found_unicode_root_dot_is_removed(text: str) -> None:
    parsed = parse_mailbox(text)
    assert parsed.domain == "her"
    assert parse_address(str(parsed)).key == parsed.key == "a@her"
