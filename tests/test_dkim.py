"""salvo.ext.dkim: every signature is checked by an independent verifier (dkimpy)."""

import base64
import re

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from salvo.ext.dkim import (
    DEFAULT_HEADERS,
    OVERSIGNED_HEADERS,
    DKIMSigner,
    canonicalize_body,
    canonicalize_headers,
    parse_headers,
    public_key_record,
    sign_many,
)
from salvo.ext.errors import DKIMError, LineEndingError, WeakKeyError

# Throwaway test keys: `cryptography` refuses to generate RSA keys this small.
RSA_512 = b"""-----BEGIN PRIVATE KEY-----
MIIBVgIBADANBgkqhkiG9w0BAQEFAASCAUAwggE8AgEAAkEAtP/WeNRbU5ElPr2K
M6bAueZ7Ep4Jb9GiEBC0vjdnxjpzY8Eqkps1AhNWaQGXJ0nos2OpDfHS9QiU0SB0
4MWhmQIDAQABAkEAoH2Fr8gkXpoB23r3U0tV8sCyelSVa4gHWpVlnpDEPJhTNWK1
bHsa9NPm7wxX4bFP58iLucyZ3puyGuzR7HYwTQIhAOMX2cQfIfUCwpev/gvNWcJn
qvNAu6iaGE1f331v9qqXAiEAzAn0vG8gq2DZyt93j1MmCImCV2Jl0die/zs7LJcR
i08CIQCJ/cEuojhRGDdEUwXNCCAFuFaxb2FYhyJDSgGUyEcbywIgCvcWAfJu7Qbd
bXuo7zjmuFq7eHq/QhHEKa9DNNhBhx0CIQDOWpLwM9eY9yCYwf++TJMV1tXPL2dJ
PZC6GKiYwx05eA==
-----END PRIVATE KEY-----
"""
RSA_768 = b"""-----BEGIN PRIVATE KEY-----
MIIB5AIBADANBgkqhkiG9w0BAQEFAASCAc4wggHKAgEAAmEAsTM+5Zlj3Icp2/Qw
84nXb3sfI1Wc34ROK7VFK0ZykGYfr3313VQsB50MTRPvPB2T7B6n2ZcWMYve8Ikt
TxTRZmtgutDUUbM8tcGolQt0g6ISp/uYj0dCKoF537OeDFchAgMBAAECYCUmhU1F
t3YIsHH45Dpq78vjmEekL1t9NZZcTsAf6Oz1PDdixSU9/G0sM+QFBecom/0dYkdS
e4Uu2o65kzklyDU95OnDnUtNoO0g6ISAJa4KlMoIxl9UWLtXEK7e1+gAsQIxAOUa
UhbAdrOCW7ZsBZs75CwzZHGid8+TruyrTXAtrEW22itZITPVxETYpgf5kdLQZwIx
AMYA/hqxAiwWfDErDinhGXCooUt7SmsdUFLtjyM24DLiTJkAEIISeAPr06hWIUNH
NwIxAN2p7rzGsNKUEQpaT75XXzgI7Wko6cU0Pa4NPBqKhkDZXxNL5F0TuhdmipXy
uU2AhwIwEMSYwE3pLy6gSdGpm2ZSrzW4oxnHzZZn7P3tN0A4cFa1wec9fqZtv3dD
L2hL3NS1AjBzAg4zfbdaLVMZciT5LrkRWWu2wz6B/AMQYEv4euNy/uxxNIKiS7mh
RBm+Hb6m9hs=
-----END PRIVATE KEY-----
"""

CANONS = [
    ("relaxed", "relaxed"),
    ("relaxed", "simple"),
    ("simple", "relaxed"),
    ("simple", "simple"),
]
ALGS = ["rsa-sha256", "ed25519-sha256"]

MSG = (
    b"Received: from mx.example.net by relay; Tue, 1 Oct 2024 10:00:00 +0000\r\n"
    b"From: =?utf-8?q?Ren=C3=A9?= <rene@acme.example>\r\n"
    b"To: Bob <bob@example.org>,\r\n\tCarol <carol@example.org>\r\n"
    b"Subject:  Quarterly   news \t\r\n"
    b"Date: Tue, 1 Oct 2024 10:00:00 +0000\r\n"
    b"Message-ID: <1@acme.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"List-Unsubscribe: <https://acme.example/u/1>\r\n"
    b"X-Mailer: salvo\r\n"
    b"\r\n"
    b"Hello  Bob,\r\n"
    b"  caf\xc3\xa9 \t \r\n"
    b"\r\n"
    b"Bye\r\n"
    b"\r\n\r\n"
)


def _pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def keys() -> dict[str, bytes]:
    """One RSA-2048 and one Ed25519 key for the whole module (RSA keygen is slow)."""
    return {
        "rsa-sha256": _pem(rsa.generate_private_key(65537, 2048)),
        "ed25519-sha256": _pem(ed25519.Ed25519PrivateKey.generate()),
    }


def _dns(records: dict[bytes, str]):
    """A dkimpy dnsfunc answering ``selector._domainkey.domain.`` from ``records``."""

    def dnsfunc(name, timeout=5):
        return records[name].encode()

    return dnsfunc


def _verify(signed: bytes, selector: str, domain: str, pem: bytes, alg: str) -> bool:
    name = f"{selector}._domainkey.{domain}.".encode()
    return dkim.verify(signed, dnsfunc=_dns({name: public_key_record(pem, alg)}))


def _tags(field: bytes) -> dict[bytes, bytes]:
    value = field.split(b":", 1)[1]
    value = re.sub(rb"\s+", b"", value)
    return dict(t.split(b"=", 1) for t in value.split(b";") if t)


@pytest.mark.parametrize("canon", CANONS)
@pytest.mark.parametrize("alg", ALGS)
def test_signature_verifies(keys, alg, canon):
    signer = DKIMSigner("acme.example", "s1", keys[alg], algorithm=alg, canonicalization=canon)
    field = signer.sign(MSG)
    assert field.startswith(b"DKIM-Signature: ") and field.endswith(b"\r\n")
    tags = _tags(field)
    assert tags[b"a"] == alg.encode() and tags[b"c"] == "/".join(canon).encode()
    assert b"l" not in tags
    assert _verify(field + MSG, "s1", "acme.example", keys[alg], alg)


@pytest.mark.parametrize("alg", ALGS)
def test_key_accepted_as_str_and_traditional_pem(keys, alg):
    key = serialization.load_pem_private_key(keys[alg], None)
    fmt = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if alg == "rsa-sha256"
        else serialization.PrivateFormat.PKCS8
    )
    pem = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    signer = DKIMSigner(b"acme.example", b"s1", pem.decode(), algorithm=alg)
    assert _verify(signer.sign(MSG) + MSG, "s1", "acme.example", keys[alg], alg)


def test_sign_many_each_verifies_and_matches_single_signs(keys):
    signers = [
        DKIMSigner("acme.example", "r1", keys["rsa-sha256"]),
        DKIMSigner("acme.example", "e1", keys["ed25519-sha256"], algorithm="ed25519-sha256"),
        DKIMSigner(
            "mailer.example",
            "m1",
            keys["rsa-sha256"],
            canonicalization=("simple", "simple"),
            identity="bounces@news.mailer.example",
        ),
    ]
    fields = sign_many(MSG, signers, timestamp=1_700_000_000)
    # RSA PKCS#1 v1.5 and Ed25519 are deterministic: same bytes as independent signs.
    assert fields == b"".join(s.sign(MSG, timestamp=1_700_000_000) for s in signers)
    signed = fields + MSG
    dns = _dns(
        {
            b"r1._domainkey.acme.example.": public_key_record(keys["rsa-sha256"]),
            b"e1._domainkey.acme.example.": public_key_record(
                keys["ed25519-sha256"], "ed25519-sha256"
            ),
            b"m1._domainkey.mailer.example.": public_key_record(keys["rsa-sha256"]),
        }
    )
    d = dkim.DKIM(signed)
    assert [d.verify(idx=i, dnsfunc=dns) for i in range(3)] == [True, True, True]
    assert d.verify(idx=3, dnsfunc=dns) is False  # there is no fourth signature
    third = fields.split(b"DKIM-Signature:")[3]
    assert _tags(b"DKIM-Signature:" + third)[b"i"] == b"bounces@news.mailer.example"


PREPENDED = [
    b"Subject: Urgent: wire money\r\n",
    b"From: ceo@acme.example\r\n",
    b"To: victim@example.org\r\n",
    b"Date: Wed, 2 Oct 2024 10:00:00 +0000\r\n",
    b"Message-ID: <2@acme.example>\r\n",
    b"Reply-To: thief@evil.example\r\n",
    b"MIME-Version: 1.0\r\n",
    b"Content-Type: text/html\r\n",
    b"List-Unsubscribe: <https://evil.example/>\r\n",
]


@pytest.mark.parametrize("extra", PREPENDED, ids=lambda h: h.split(b":")[0].decode())
@pytest.mark.parametrize("canon", [("relaxed", "relaxed"), ("simple", "simple")])
def test_prepended_header_breaks_signature(keys, extra, canon):
    alg = "ed25519-sha256"
    signer = DKIMSigner("acme.example", "s1", keys[alg], algorithm=alg, canonicalization=canon)
    field = signer.sign(MSG)
    assert _verify(field + MSG, "s1", "acme.example", keys[alg], alg)
    assert not _verify(field + extra + MSG, "s1", "acme.example", keys[alg], alg)


@pytest.mark.parametrize("canon", CANONS)
def test_body_byte_change_breaks_and_unsigned_header_change_does_not(keys, canon):
    alg = "ed25519-sha256"
    signer = DKIMSigner("acme.example", "s1", keys[alg], algorithm=alg, canonicalization=canon)
    signed = signer.sign(MSG) + MSG
    assert _verify(signed, "s1", "acme.example", keys[alg], alg)
    assert not _verify(signed.replace(b"Bye", b"Bye!"), "s1", "acme.example", keys[alg], alg)
    assert not _verify(signed.replace(b"Hello", b"Hallo"), "s1", "acme.example", keys[alg], alg)
    for changed in (
        signed.replace(b"X-Mailer: salvo", b"X-Mailer: other"),
        signed.replace(b"Received: from", b"Received: by"),
        b"Received: from relay2\r\n" + signed,
    ):
        assert _verify(changed, "s1", "acme.example", keys[alg], alg)


def test_signed_header_change_breaks(keys):
    alg = "ed25519-sha256"
    signer = DKIMSigner("acme.example", "s1", keys[alg], algorithm=alg)
    signed = signer.sign(MSG) + MSG
    for old, new in ((b"Quarterly", b"Quarterlyy"), (b"<1@acme", b"<9@acme"), (b"Carol", b"Eve")):
        assert not _verify(signed.replace(old, new), "s1", "acme.example", keys[alg], alg)


def test_h_tag_oversigning_counts(keys):
    msg = (
        b"From: a@acme.example\r\n"
        b"To: b@example.org\r\n"
        b"To: c@example.org\r\n"
        b"References: <0@acme.example>\r\n"
        b"Feedback-ID: 1:2:3\r\n"
        b"Feedback-ID: 4:5:6\r\n"
        b"subject: lower-case name\r\n"
        b"\r\nbody\r\n"
    )
    signer = DKIMSigner("acme.example", "s1", keys["rsa-sha256"])
    field = signer.sign(msg)
    h = _tags(field)[b"h"].decode().split(":")
    present = {"from": 1, "to": 2, "references": 1, "feedback-id": 2, "subject": 1}
    expected = []
    for name in DEFAULT_HEADERS:
        n = present.get(name, 0) + (name in OVERSIGNED_HEADERS)
        expected += [name] * n
    assert h == expected
    assert h.count("to") == 3 and h.count("cc") == 1 and "in-reply-to" not in h
    assert _verify(field + msg, "s1", "acme.example", keys["rsa-sha256"], "rsa-sha256")


def test_repeated_headers_signed_bottom_up(keys):
    alg = "ed25519-sha256"
    msg = b"From: a@acme.example\r\nX-Tag: one\r\nX-Tag: two\r\n\r\nbody\r\n"
    signer = DKIMSigner("acme.example", "s1", keys[alg], algorithm=alg, headers=["X-Tag"])
    field = signer.sign(msg)
    assert _tags(field)[b"h"] == b"from:from:x-tag:x-tag"  # From added and over-signed
    assert signer.headers == ("from", "x-tag")
    assert _verify(field + msg, "s1", "acme.example", keys[alg], alg)
    swapped = msg.replace(b"one", b"tmp").replace(b"two", b"one").replace(b"tmp", b"two")
    assert not _verify(field + swapped, "s1", "acme.example", keys[alg], alg)


def test_custom_oversign_set(keys):
    msg = b"From: a@acme.example\r\nSubject: s\r\n\r\nbody\r\n"
    signer = DKIMSigner(
        "acme.example", "s1", keys["rsa-sha256"], headers=["From", "Subject"], oversign=[]
    )
    assert _tags(signer.sign(msg))[b"h"] == b"from:subject"


def test_t_and_x_tags(keys):
    alg = "ed25519-sha256"
    signer = DKIMSigner("acme.example", "s1", keys[alg], algorithm=alg, expires_in=86400)
    tags = _tags(signer.sign(MSG, timestamp=1_700_000_000))
    assert tags[b"t"] == b"1700000000" and tags[b"x"] == b"1700086400"
    # With the current time the signature verifies (dkimpy checks t= and x=).
    assert _verify(signer.sign(MSG) + MSG, "s1", "acme.example", keys[alg], alg)
    with pytest.raises(DKIMError):
        DKIMSigner("acme.example", "s1", keys[alg], algorithm=alg, expires_in=0)


@pytest.mark.parametrize("alg", ALGS)
def test_folded_lines_fit_78_columns(keys, alg):
    headers = [*DEFAULT_HEADERS, "x-campaign-identifier-header", "x-another-long-header-name"]
    msg = b"".join(n.encode() + b": v\r\n" for n in headers) + b"\r\nbody\r\n"
    signer = DKIMSigner(
        "mail.a-rather-long-subdomain-name.example-organisation.example",
        "selector-2024-10-rotation",
        keys[alg],
        algorithm=alg,
        headers=headers,
        identity="newsletters@mail.a-rather-long-subdomain-name.example-organisation.example",
        expires_in=3600,
    )
    field = signer.sign(msg)
    lines = field[:-2].split(b"\r\n")
    assert len(lines) > 5 and max(len(line) for line in lines) <= 78
    assert all(line[:1] in (b" ", b"\t") for line in lines[1:])
    assert _verify(field + msg, signer.selector, signer.domain, keys[alg], alg)


def test_no_body_and_empty_body(keys):
    alg = "ed25519-sha256"
    for canon in CANONS:
        signer = DKIMSigner("acme.example", "s1", keys[alg], algorithm=alg, canonicalization=canon)
        for msg in (
            b"From: a@acme.example\r\nSubject: x\r\n",
            b"From: a@acme.example\r\nSubject: x\r\n\r\n",
            b"From: a@acme.example\r\n\r\n\r\n\r\n",
        ):
            assert _verify(signer.sign(msg) + msg, "s1", "acme.example", keys[alg], alg), (
                canon,
                msg,
            )


def test_empty_body_canonical_forms():
    # RFC 6376 3.4.3 / 3.4.4 (errata 1384): simple keeps one CRLF, relaxed hashes nothing.
    assert canonicalize_body(b"", "simple") == b"\r\n"
    assert canonicalize_body(b"\r\n\r\n", "simple") == b"\r\n"
    assert canonicalize_body(b"", "relaxed") == b""
    assert canonicalize_body(b" \t\r\n\r\n", "relaxed") == b""


def test_unterminated_last_line_is_signed_as_sent(keys):
    # The SMTP client ends the data with CRLF, so "abc  " reaches the receiver as "abc  \r\n".
    assert canonicalize_body(b"x\r\nabc \t ", "relaxed") == b"x\r\nabc\r\n"
    assert canonicalize_body(b"x\r\nabc \t ", "simple") == b"x\r\nabc \t \r\n"
    alg = "ed25519-sha256"
    msg = b"From: a@acme.example\r\n\r\nabc  "
    signer = DKIMSigner("acme.example", "s1", keys[alg], algorithm=alg)
    assert _verify(signer.sign(msg) + msg + b"\r\n", "s1", "acme.example", keys[alg], alg)


@pytest.mark.parametrize("bits, pem", [(512, RSA_512), (768, RSA_768)])
def test_weak_rsa_key_refused(bits, pem):
    with pytest.raises(WeakKeyError, match=rf"{bits} bits.*1024.*RFC 8301"):
        DKIMSigner("acme.example", "s1", pem)


def test_key_type_must_match_algorithm(keys):
    with pytest.raises(DKIMError, match="needs an RSA key"):
        DKIMSigner("acme.example", "s1", keys["ed25519-sha256"], algorithm="rsa-sha256")
    with pytest.raises(DKIMError, match="needs an Ed25519 key"):
        DKIMSigner("acme.example", "s1", keys["rsa-sha256"], algorithm="ed25519-sha256")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"algorithm": "rsa-sha1"}, "unknown algorithm"),
        ({"algorithm": "hmac"}, "unknown algorithm"),
        ({"canonicalization": ("relaxed", "nowsp")}, "unknown canonicalization"),
        ({"canonicalization": ("relaxed",)}, "canonicalization must be"),
        ({"headers": ["Subject", "DKIM-Signature"]}, "must not be signed"),
        ({"headers": ["Bad Name"]}, "bad header name"),
        ({"identity": "a@evil.example"}, "identity"),
    ],
)
def test_bad_options_refused(keys, kwargs, match):
    with pytest.raises(DKIMError, match=match):
        DKIMSigner("acme.example", "s1", keys["rsa-sha256"], **kwargs)


def test_bad_key_or_names_refused(keys):
    with pytest.raises(DKIMError, match="cannot load"):
        DKIMSigner("acme.example", "s1", b"-----BEGIN PRIVATE KEY-----\nAAAA\n")
    with pytest.raises(DKIMError, match="A-label"):
        DKIMSigner("bücher.example", "s1", keys["rsa-sha256"])
    with pytest.raises(DKIMError, match="contains"):
        DKIMSigner("acme.example", "s1; x=1", keys["rsa-sha256"])


@pytest.mark.parametrize(
    "msg",
    [
        b"From: a@acme.example\nSubject: x\r\n\r\nbody\r\n",
        b"From: a@acme.example\r\nSubject: x\r\r\n\r\nbody\r\n",
        b"From: a@acme.example\r\n\r\nline one\nline two\r\n",
        b"From: a@acme.example\r\n\r\nline one\rline two\r\n",
        b"From: a@acme.example\r\n\r\n" + b"long line without CR " * 10 + b"\n",
        b"From: a@acme.example\r\n\r\nends with CR\r",
    ],
)
@pytest.mark.parametrize("body_canon", ["relaxed", "simple"])
def test_bare_cr_or_lf_refused(keys, msg, body_canon):
    signer = DKIMSigner(
        "acme.example", "s1", keys["rsa-sha256"], canonicalization=("relaxed", body_canon)
    )
    with pytest.raises(LineEndingError, match="normalize line endings"):
        signer.sign(msg)
    assert issubclass(LineEndingError, DKIMError)


def test_malformed_messages_refused(keys):
    signer = DKIMSigner("acme.example", "s1", keys["rsa-sha256"])
    with pytest.raises(DKIMError, match="no From"):
        signer.sign(b"To: b@example.org\r\nSubject: x\r\n\r\nbody\r\n")
    with pytest.raises(DKIMError, match="malformed header"):
        signer.sign(b"From: a@acme.example\r\nnot a header\r\n\r\nbody\r\n")
    with pytest.raises(DKIMError, match="malformed header"):
        signer.sign(b" folded first\r\nFrom: a@acme.example\r\n\r\n")
    with pytest.raises(TypeError):
        signer.sign("From: a@acme.example\r\n\r\n")


def test_parse_headers():
    fields, body = parse_headers(MSG)
    assert fields[2] == (b"To", b" Bob <bob@example.org>,\r\n\tCarol <carol@example.org>")
    assert fields[3] == (b"Subject", b"  Quarterly   news \t")
    assert [n for n, _ in fields][-1] == b"X-Mailer" and len(fields) == 10
    assert body == MSG.split(b"\r\n\r\n", 1)[1]
    assert parse_headers(b"From: a\r\nTo: b") == ([(b"From", b" a"), (b"To", b" b")], b"")


def test_canonicalize_headers_rfc_cases():
    # WSP before the colon (obsolete syntax dkimpy cannot parse) goes in relaxed only.
    fields = [(b"Subject \t", b" a \r\n\tb  "), (b"X-Empty", b""), (b"X-A", b"\x0bv\x0c")]
    assert canonicalize_headers(fields, "relaxed") == (
        b"subject:a b\r\nx-empty:\r\nx-a:\x0bv\x0c\r\n"
    )
    assert canonicalize_headers(fields, "simple") == (
        b"Subject \t: a \r\n\tb  \r\nX-Empty:\r\nX-A:\x0bv\x0c\r\n"
    )
    with pytest.raises(LineEndingError):
        canonicalize_headers([(b"Subject", b" a\r\nb")], "relaxed")


def test_public_key_records(keys):
    rec = public_key_record(keys["rsa-sha256"])
    assert rec.startswith("v=DKIM1; k=rsa; p=")
    pub = serialization.load_der_public_key(base64.b64decode(rec.split("p=")[1]))
    assert pub.key_size == 2048
    rec = public_key_record(keys["ed25519-sha256"], "ed25519-sha256")
    assert rec.startswith("v=DKIM1; k=ed25519; p=")
    raw = base64.b64decode(rec.split("p=")[1])
    key = serialization.load_pem_private_key(keys["ed25519-sha256"], None)
    assert raw == key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
