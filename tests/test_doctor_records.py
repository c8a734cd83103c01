"""The pure record checks of salvo doctor: DKIM, DMARC, MTA-STS and TLS-RPT parsing,
alignment, and the DKIM key comparison, on DNS answers given as a dict."""

from __future__ import annotations

import pytest
from doctorutil import zone
from hypothesis import given, settings
from hypothesis import strategies as st

from salvo.core import dkimkeys
from salvo.core.doctor import Setup, Status
from salvo.core.doctor.alignment import aligned, organizational_domain
from salvo.core.doctor.authentication import check_dkim, check_dmarc
from salvo.core.doctor.hosts import check_mta_sts
from salvo.core.doctor.records import (
    RecordSyntaxError,
    parse_dkim,
    parse_dmarc,
    parse_mta_sts,
    parse_tls_rpt,
)
from salvo.core.doctor.setup import DkimSetup


@pytest.mark.parametrize(
    ("name", "org"),
    [
        ("acme.example", "acme.example"),
        ("bounces.acme.example", "acme.example"),
        ("a.b.acme.example.", "acme.example"),
        ("news.shop.co.uk", "shop.co.uk"),
        ("shop.co.uk", "shop.co.uk"),
    ],
)
def test_organizational_domain(name: str, org: str) -> None:
    assert organizational_domain(name) == org


def test_alignment() -> None:
    assert aligned("acme.example", "bounces.acme.example")
    assert not aligned("acme.example", "bounces.acme.example", strict=True)
    assert not aligned("a.co.uk", "b.co.uk")


@pytest.mark.parametrize(
    "text",
    [
        "p=MIIB; v=DKIM1",  # v= not first
        "v=DKIM2; p=abc",
        "v=DKIM1; k=dsa; p=abc",
        "v=DKIM1; h=sha1; p=abc",
        "v=DKIM1",
        "v=DKIM1; p=a; p=b",
        "v=DKIM1; garbage",
    ],
)
def test_dkim_syntax_errors(text: str) -> None:
    with pytest.raises(RecordSyntaxError):
        parse_dkim(text)


@pytest.mark.parametrize(
    "text",
    [
        "v=DMARC1",
        "v=DMARC1; p=maybe",
        "v=DMARC1; p=none; adkim=x",
        "v=DMARC1; p=none; pct=150",
        "v=DMARC1; p=none; rua=dmarc@acme.example",
        "p=none; v=DMARC1",
    ],
)
def test_dmarc_syntax_errors(text: str) -> None:
    with pytest.raises(RecordSyntaxError):
        parse_dmarc(text)


def test_good_tag_records() -> None:
    assert parse_dmarc("v=DMARC1; p=reject; rua=mailto:d@acme.example; aspf=s")["aspf"] == "s"
    assert parse_mta_sts("v=STSv1; id=20240101")["id"] == "20240101"
    assert parse_tls_rpt("v=TLSRPTv1; rua=mailto:tls@acme.example,https://r.example/x")
    with pytest.raises(RecordSyntaxError):
        parse_mta_sts("v=STSv1; id=2024-01-01")
    with pytest.raises(RecordSyntaxError):
        parse_tls_rpt("v=TLSRPTv1")


@pytest.fixture(scope="module")
def rsa_key() -> bytes:
    return dkimkeys.generate_private_key("rsa-sha256", 2048)


def _dkim(key: bytes, algorithm: str = "rsa-sha256") -> tuple[DkimSetup, ...]:
    return (DkimSetup("acme.example", "s1", algorithm, "s1.pem", key),)


def _by_check(results) -> dict[str, Status]:
    out: dict[str, Status] = {}
    for r in results:
        if out.get(r.check) is not Status.FAIL:
            out[r.check] = r.status
    return out


def test_dkim_key_matches_and_mismatches(rsa_key: bytes) -> None:
    name = ("s1._domainkey.acme.example", "TXT")
    good = zone({name: [dkimkeys.dns_record(rsa_key)]})
    assert _by_check(check_dkim("acme.example", _dkim(rsa_key), good)) == {
        "dkim.size": Status.PASS,
        "dkim.record": Status.PASS,
        "dkim.key": Status.PASS,
    }
    other = dkimkeys.generate_private_key("ed25519-sha256")
    results = check_dkim("acme.example", _dkim(other, "ed25519-sha256"), good)
    failed = [r for r in results if r.status is Status.FAIL]
    assert [r.check for r in failed] == ["dkim.key"]
    assert dkimkeys.dns_record(other) in failed[0].fix


def test_dkim_small_and_wrong_algorithm() -> None:
    small = dkimkeys.generate_private_key("rsa-sha256", 1024)
    dns = zone({("s1._domainkey.acme.example", "TXT"): [dkimkeys.dns_record(small)]})
    assert _by_check(check_dkim("acme.example", _dkim(small), dns))["dkim.size"] is Status.WARN
    wrong = _dkim(small, "ed25519-sha256")
    assert _by_check(check_dkim("acme.example", wrong, dns))["dkim.size"] is Status.FAIL


def _setup(**kw) -> Setup:
    base = dict(
        from_domains=("acme.example",),
        dkim=(DkimSetup("acme.example", "s1", "rsa-sha256", "k", b""),),
        pools=(),
        verp_domains=(("default", "bounces.acme.example"),),
        bounce_domains=("bounces.acme.example",),
        hostname="mta.acme.example",
    )
    return Setup(**{**base, **kw})


def test_dmarc_inherited_from_the_organizational_domain() -> None:
    dns = zone({("_dmarc.acme.example", "TXT"): ["v=DMARC1; p=none; sp=reject"]})
    setup = _setup(from_domains=("news.acme.example",), dkim=())
    results = _by_check(check_dmarc("news.acme.example", setup, dns))
    assert results["dmarc.record"] is Status.PASS
    assert results["dmarc.policy"] is Status.WARN  # no rua=; sp=reject is the policy
    assert results["dmarc.dkim_alignment"] is Status.FAIL  # no key for news.acme.example


def test_dmarc_strict_spf_alignment_fails_for_a_subdomain() -> None:
    dns = zone(
        {("_dmarc.acme.example", "TXT"): ["v=DMARC1; p=reject; aspf=s; rua=mailto:d@acme.example"]}
    )
    results = check_dmarc("acme.example", _setup(), dns)
    [spf] = [r for r in results if r.check == "dmarc.spf_alignment"]
    assert spf.status is Status.FAIL and "aspf=r" in spf.fix


def test_mta_sts_absent_is_info_and_bad_is_fail() -> None:
    assert {r.status for r in check_mta_sts("acme.example", zone({}))} == {Status.INFO}
    bad = zone(
        {
            ("_mta-sts.acme.example", "TXT"): ["v=STSv1; id=not-ok!"],
            ("_smtp._tls.acme.example", "TXT"): ["v=TLSRPTv1; rua=mailto:t@acme.example"],
        }
    )
    assert [r.status for r in check_mta_sts("acme.example", bad)] == [Status.FAIL, Status.PASS]


_TEXT = st.text(
    alphabet=st.sampled_from("v=DKIM1MARCSTSvTLSRPT;pkhtrsaed25519 :/@+=,.x"), max_size=60
)


@settings(max_examples=200, deadline=None)
@given(_TEXT, _TEXT)
def test_malformed_records_never_crash(dkim_text: str, dmarc_text: str) -> None:
    key = b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"
    dns = zone(
        {
            ("s1._domainkey.acme.example", "TXT"): [dkim_text],
            ("_dmarc.acme.example", "TXT"): [dmarc_text],
            ("_mta-sts.acme.example", "TXT"): [dmarc_text],
            ("_smtp._tls.acme.example", "TXT"): [dkim_text],
        }
    )
    results = [
        *check_dkim("acme.example", _dkim(key), dns),
        *check_dmarc("acme.example", _setup(), dns),
        *check_mta_sts("acme.example", dns),
    ]
    for result in results:
        assert result.detail
        if result.status in (Status.WARN, Status.FAIL):
            assert result.fix
