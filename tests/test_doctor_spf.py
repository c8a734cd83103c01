"""SPF evaluation (salvo.core.doctor.spf) on DNS answers given as a dict: the terms,
include and redirect, the 10-lookup and void-lookup limits, macros, and malformed
records (hypothesis: never a crash, always a result with a reason)."""

from __future__ import annotations

import pytest
from doctorutil import zone
from hypothesis import given, settings
from hypothesis import strategies as st

from salvo.core.doctor import spf
from salvo.core.doctor.authentication import check_spf
from salvo.core.doctor.model import Status


def test_ip4_ip6_and_all_qualifiers() -> None:
    dns = zone({("a.test", "TXT"): ["v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 ~all"]})
    assert spf.check_host("192.0.2.7", "a.test", dns).result == "pass"
    assert spf.check_host("2001:db8::1", "a.test", dns).result == "pass"
    assert spf.check_host("198.51.100.1", "a.test", dns).result == "softfail"


def test_a_and_mx_with_prefixes() -> None:
    dns = zone(
        {
            ("a.test", "TXT"): ["v=spf1 a mx/30 -all"],
            ("a.test", "A"): ["192.0.2.1"],
            ("a.test", "MX"): ["10 mx.a.test"],
            ("mx.a.test", "A"): ["198.51.100.4"],
        }
    )
    assert spf.check_host("192.0.2.1", "a.test", dns).result == "pass"
    assert spf.check_host("198.51.100.6", "a.test", dns).result == "pass"  # in the /30
    verdict = spf.check_host("198.51.100.9", "a.test", dns)
    assert verdict.result == "fail" and verdict.lookups == 2


def test_include_and_redirect() -> None:
    dns = zone(
        {
            ("a.test", "TXT"): ["v=spf1 include:_spf.b.test redirect=c.test"],
            ("_spf.b.test", "TXT"): ["v=spf1 ip4:192.0.2.1 -all"],
            ("c.test", "TXT"): ["v=spf1 ip4:192.0.2.2 -all"],
        }
    )
    assert spf.check_host("192.0.2.1", "a.test", dns).result == "pass"
    # include's fail is "no match": evaluation goes on to the redirect
    assert spf.check_host("192.0.2.2", "a.test", dns).result == "pass"
    verdict = spf.check_host("192.0.2.3", "a.test", dns)
    assert verdict.result == "fail" and verdict.lookups == 2


def test_include_of_a_domain_without_spf_is_permerror() -> None:
    dns = zone({("a.test", "TXT"): ["v=spf1 include:none.test -all"]})
    verdict = spf.check_host("192.0.2.1", "a.test", dns)
    assert verdict.result == "permerror" and "none.test" in verdict.reason


def test_more_than_ten_lookups_is_permerror() -> None:
    records = {("a.test", "TXT"): ["v=spf1 include:i0.test -all"]}
    for n in range(12):
        records[(f"i{n}.test", "TXT")] = [f"v=spf1 include:i{n + 1}.test"]
    records[("i12.test", "TXT")] = ["v=spf1 ip4:192.0.2.1 -all"]
    dns = zone(records)
    verdict = spf.check_host("192.0.2.1", "a.test", dns)
    assert verdict.result == "permerror" and "more than 10" in verdict.reason
    count = spf.count_lookups("a.test", dns)
    assert count.total == 13 and not count.problems


def test_count_walks_every_branch() -> None:
    dns = zone(
        {
            ("a.test", "TXT"): ["v=spf1 ip4:192.0.2.1 include:b.test a mx -all"],
            ("b.test", "TXT"): ["v=spf1 include:c.test exists:%{i}.x.test ~all"],
            ("c.test", "TXT"): ["v=spf1 ptr ~all"],
        }
    )
    count = spf.count_lookups("a.test", dns)
    assert count.total == 6, count  # include b, include c, ptr, exists, a, mx
    # evaluation stops at the first match: the address is listed first
    assert spf.check_host("192.0.2.1", "a.test", dns).lookups == 0


def test_include_loop_is_bounded() -> None:
    dns = zone(
        {
            ("a.test", "TXT"): ["v=spf1 include:b.test -all"],
            ("b.test", "TXT"): ["v=spf1 include:a.test -all"],
        }
    )
    assert spf.check_host("192.0.2.1", "a.test", dns).result == "permerror"
    assert spf.count_lookups("a.test", dns).problems


def test_void_lookup_limit() -> None:
    dns = zone({("a.test", "TXT"): ["v=spf1 a:n1.test a:n2.test a:n3.test -all"]})
    verdict = spf.check_host("192.0.2.1", "a.test", dns)
    assert verdict.result == "permerror" and "found nothing" in verdict.reason


def test_dns_error_is_temperror() -> None:
    dns = zone({("a.test", "TXT"): ["v=spf1 include:b.test -all"], ("b.test", "TXT"): "ERROR"})
    assert spf.check_host("192.0.2.1", "a.test", dns).result == "temperror"


def test_macros() -> None:
    expanded = spf.expand_macros(
        "%{ir}.%{v}._spf.%{d2}", ip="192.0.2.3", sender="x@a.b.test", domain="a.b.test"
    )
    assert expanded == "3.2.0.192.in-addr._spf.b.test"
    dns = zone(
        {
            ("a.test", "TXT"): ["v=spf1 exists:%{i}._ok.a.test -all"],
            ("192.0.2.3._ok.a.test", "A"): ["127.0.0.2"],
        }
    )
    assert spf.check_host("192.0.2.3", "a.test", dns).result == "pass"
    assert spf.check_host("192.0.2.4", "a.test", dns).result == "fail"


def test_ptr_mechanism() -> None:
    dns = zone(
        {
            ("a.test", "TXT"): ["v=spf1 ptr -all"],
            ("3.2.0.192.in-addr.arpa", "PTR"): ["mail.a.test"],
            ("mail.a.test", "A"): ["192.0.2.3"],
        }
    )
    assert spf.check_host("192.0.2.3", "a.test", dns).result == "pass"


@pytest.mark.parametrize(
    "record",
    [
        "v=spf1 ip4:300.1.1.1 -all",
        "v=spf1 ip4:192.0.2.0/33",
        "v=spf1 include -all",
        "v=spf1 foo:bar -all",
        "v=spf1 all:x",
        "v=spf1 redirect=a.test redirect=b.test",
        "v=spf1 a:%{z}.test",
        "v=spf1 ip6:192.0.2.1",
    ],
)
def test_syntax_errors(record: str) -> None:
    with pytest.raises(spf.SpfSyntaxError):
        spf.parse(record)
    verdict = spf.check_host("192.0.2.1", "a.test", zone({("a.test", "TXT"): [record]}))
    assert verdict.result == "permerror" and verdict.reason


def test_with_address_goes_before_all() -> None:
    assert spf.with_address("v=spf1 ip4:192.0.2.1 -all", "192.0.2.2") == (
        "v=spf1 ip4:192.0.2.1 ip4:192.0.2.2 -all"
    )
    assert spf.with_address("v=spf1 redirect=x.test", "2001:db8::1") == (
        "v=spf1 ip6:2001:db8::1 redirect=x.test"
    )


_WORDS = st.sampled_from(
    ["v=spf1", "ip4:", "ip6:", "a", "mx", "include:", "all", "-all", "+all", "?all", "~",
     "redirect=", "exists:", "ptr", "/", "//", "%{", "}", "i", "d", ".test", "b.test",
     "192.0.2.1", "::", "=", ":", " ", "%%", "0", "33", "\t", "é"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(_WORDS, max_size=12).map("".join), st.sampled_from(["192.0.2.1", "2001:db8::1"]))
def test_malformed_records_never_crash(text: str, ip: str) -> None:
    record = "v=spf1 " + text
    dns = zone({("a.test", "TXT"): [record], ("b.test", "TXT"): [record]})
    verdict = spf.check_host(ip, "a.test", dns)
    assert verdict.result in (
        "pass",
        "fail",
        "softfail",
        "neutral",
        "none",
        "permerror",
        "temperror",
    )
    assert verdict.reason
    for result in check_spf("a.test", (ip,), dns):
        assert result.detail
        if result.status in (Status.WARN, Status.FAIL):
            assert result.fix
