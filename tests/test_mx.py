"""MX routing decisions (salvo.core.mx), sans-IO: DNS answers in, a plan or a failure out."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from salvo.core.mx import (
    Candidate,
    FailureReason,
    Lookup,
    MXHosts,
    MXPlan,
    RouteFailure,
    literal_plan,
    mx_hosts,
    plan,
    refused_address,
)

RNG = random.Random(7)
PUBLIC_A = Lookup.ok(["192.0.43.10"], 300)  # not private, not reserved
PUBLIC_AAAA = Lookup.ok(["2606:2800:21f:cb07::1"], 300)
NODATA = Lookup.nodata(60)


def hosts_of(result: MXHosts | RouteFailure) -> list[str]:
    assert isinstance(result, MXHosts), result
    return [h for _, h in result.hosts]


# -- MX answer -> hosts -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ([(10, "mx1.a.test")], ["mx1.a.test"]),
        ([(20, "b.a.test"), (10, "a.a.test")], ["a.a.test", "b.a.test"]),
        ([(30, "c."), (0, "A."), (5, "b.")], ["a", "b", "c"]),  # lowercase, no final dot
        ([(10, "x.test"), (10, "x.test.")], ["x.test"]),  # duplicates once
        ([(30, "x.test"), (20, "y.test"), (10, "x.test")], ["x.test", "y.test"]),
        ([(10, "."), (20, "real.test")], ["real.test"]),  # "." among real hosts: ignored
    ],
)
def test_mx_hosts_in_preference_order(records, expected):
    assert hosts_of(mx_hosts("A.Test.", Lookup.ok(records, 300), RNG)) == expected


def test_equal_preferences_are_shuffled_and_every_order_occurs():
    records = [(10, "a.test"), (10, "b.test"), (10, "c.test"), (5, "first.test")]
    rng = random.Random(1234)
    seen = set()
    for _ in range(300):  # 6 orders; 300 tries leave none out with this seed
        got = hosts_of(mx_hosts("d.test", Lookup.ok(records, 60), rng))
        assert got[0] == "first.test"
        seen.add(tuple(got[1:]))
    assert seen == set(itertools.permutations(["a.test", "b.test", "c.test"]))


def test_same_seed_same_order():
    records = [(10, f"h{i}.test") for i in range(8)]
    a = hosts_of(mx_hosts("d.test", Lookup.ok(records, 60), random.Random(5)))
    b = hosts_of(mx_hosts("d.test", Lookup.ok(records, 60), random.Random(5)))
    assert a == b


@pytest.mark.parametrize("max_hosts", [1, 2, 5])
def test_at_most_max_hosts(max_hosts):
    records = [(i, f"h{i}.test") for i in range(10)]
    got = hosts_of(mx_hosts("d.test", Lookup.ok(records, 60), RNG, max_hosts))
    assert got == [f"h{i}.test" for i in range(max_hosts)]


@pytest.mark.parametrize("answer", [Lookup.nodata(60), Lookup.ok([], 60)])
def test_no_mx_is_the_domain_itself_implicit_mx(answer):
    result = mx_hosts("Only-A.test", answer, RNG)
    assert isinstance(result, MXHosts)
    assert result.implicit
    assert hosts_of(result) == ["only-a.test"]


@pytest.mark.parametrize(
    ("answer", "reason", "permanent", "esc", "words"),
    [
        (Lookup.ok([(0, ".")], 300), FailureReason.NULL_MX, True, (5, 1, 10), "null MX"),
        (Lookup.ok([(0, "")], 300), FailureReason.NULL_MX, True, (5, 1, 10), "accepts no mail"),
        (Lookup.nxdomain(60), FailureReason.NXDOMAIN, True, (5, 1, 2), "does not exist"),
        (Lookup.invalid("empty label"), FailureReason.INVALID_DOMAIN, True, (5, 1, 2), "valid"),
        (Lookup.tempfail("SERVFAIL"), FailureReason.TEMPORARY, False, (4, 4, 3), "SERVFAIL"),
        (Lookup.tempfail("DNS timeout"), FailureReason.TEMPORARY, False, (4, 4, 3), "timeout"),
    ],
)
def test_mx_answer_failures(answer, reason, permanent, esc, words):
    result = mx_hosts("d.test", answer, RNG)
    assert isinstance(result, RouteFailure), result
    assert (result.reason, result.permanent, result.esc) == (reason, permanent, esc)
    assert words in result.text and "d.test" in result.text
    assert result.status == ".".join(map(str, esc))


# -- hosts + addresses -> plan ------------------------------------------------------------


def mxh(*hosts: str, implicit: bool = False) -> MXHosts:
    return MXHosts("d.test", tuple((10 * i, h) for i, h in enumerate(hosts)), implicit)


def test_plan_keeps_the_order_and_puts_ipv4_first():
    result = plan(
        mxh("a.test", "b.test"),
        {"a.test": (PUBLIC_A, PUBLIC_AAAA), "b.test": (NODATA, PUBLIC_AAAA)},
        port=2525,
    )
    assert result == MXPlan(
        "d.test",
        (
            Candidate("a.test", ("192.0.43.10", "2606:2800:21f:cb07::1"), 2525, 0),
            Candidate("b.test", ("2606:2800:21f:cb07::1",), 2525, 10),
        ),
    )
    assert result.destinations()[0] == ("a.test", "192.0.43.10", 2525)
    assert len(result.destinations()) == 3


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.5.6.7",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.1.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "::",
        "fd00::1",
        "fe80::1",
        "ff02::1",
        "::ffff:10.0.0.1",
        "240.0.0.1",
    ],
)
def test_private_and_special_addresses_are_refused_unless_allowed(address):
    assert refused_address(address) is not None
    assert refused_address(address, allow_private=True) is None


def test_public_addresses_pass_and_our_own_are_refused():
    assert refused_address("192.0.43.10") is None
    assert refused_address("2606:2800:21f:cb07::1") is None
    assert "own address" in refused_address("192.0.43.10", own_addresses={"192.0.43.10"})


def test_a_refused_host_is_skipped_and_the_next_used():
    result = plan(
        mxh("inside.test", "outside.test"),
        {
            "inside.test": (Lookup.ok(["10.0.0.5"]), NODATA),
            "outside.test": (PUBLIC_A, NODATA),
        },
    )
    assert isinstance(result, MXPlan)
    assert [c.host for c in result.candidates] == ["outside.test"]
    assert [r.host for r in result.refused] == ["inside.test"]
    assert "private" in result.refused[0].text


def test_only_the_refused_addresses_of_a_host_are_dropped():
    result = plan(mxh("mixed.test"), {"mixed.test": (Lookup.ok(["127.0.0.1"]), PUBLIC_AAAA)})
    assert isinstance(result, MXPlan)
    assert result.candidates[0].addresses == ("2606:2800:21f:cb07::1",)


@pytest.mark.parametrize(
    ("answers", "own", "esc", "word"),
    [
        ({"a.test": (Lookup.ok(["10.0.0.1"]), NODATA)}, (), (5, 4, 4), "private"),
        ({"a.test": (Lookup.ok(["127.0.0.1"]), Lookup.ok(["::1"]))}, (), (5, 4, 4), "loopback"),
        ({"a.test": (PUBLIC_A, NODATA)}, ("192.0.43.10",), (5, 4, 6), "own address"),
    ],
)
def test_every_host_refused_fails_permanently_with_a_clear_text(answers, own, esc, word):
    result = plan(mxh("a.test"), answers, own_addresses=own)
    assert isinstance(result, RouteFailure), result
    assert result.permanent and result.reason is FailureReason.REFUSED_DESTINATION
    assert result.esc == esc
    assert word in result.text and "allow_private_destinations" in result.text
    allowed = plan(mxh("a.test"), answers, own_addresses=own, allow_private=True)
    assert isinstance(allowed, MXPlan)


@pytest.mark.parametrize(
    ("v4", "v6", "implicit", "permanent", "reason", "esc"),
    [
        (NODATA, NODATA, False, True, FailureReason.NO_ADDRESS, (5, 4, 4)),
        (Lookup.nxdomain(), Lookup.nxdomain(), False, True, FailureReason.NO_ADDRESS, (5, 4, 4)),
        (Lookup.nxdomain(), Lookup.nxdomain(), True, True, FailureReason.NXDOMAIN, (5, 1, 2)),
        (NODATA, NODATA, True, True, FailureReason.NO_ADDRESS, (5, 4, 4)),
        (Lookup.tempfail("SERVFAIL"), NODATA, False, False, FailureReason.TEMPORARY, (4, 4, 3)),
        (
            Lookup.tempfail("t"),
            Lookup.tempfail("t"),
            True,
            False,
            FailureReason.TEMPORARY,
            (4, 4, 3),
        ),
    ],
)
def test_hosts_without_addresses(v4, v6, implicit, permanent, reason, esc):
    result = plan(mxh("a.test", implicit=implicit), {"a.test": (v4, v6)})
    assert isinstance(result, RouteFailure), result
    assert (result.permanent, result.reason, result.esc) == (permanent, reason, esc)


def test_a_temporary_host_failure_does_not_hide_a_usable_host():
    result = plan(
        mxh("down.test", "up.test"),
        {
            "down.test": (Lookup.tempfail("timeout"), Lookup.tempfail("timeout")),
            "up.test": (PUBLIC_A, NODATA),
        },
    )
    assert isinstance(result, MXPlan)
    assert [c.host for c in result.candidates] == ["up.test"]
    assert not result.refused[0].permanent


def test_temporary_and_permanent_host_failures_together_are_temporary():
    result = plan(
        mxh("gone.test", "down.test"),
        {
            "gone.test": (Lookup.nxdomain(), Lookup.nxdomain()),
            "down.test": (Lookup.tempfail("x"), NODATA),
        },
    )
    assert isinstance(result, RouteFailure) and not result.permanent


# -- properties ------------------------------------------------------------------------------

mx_sets = st.lists(
    st.tuples(st.integers(0, 65535), st.sampled_from([f"h{i}.test" for i in range(12)])),
    min_size=1,
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(records=mx_sets, max_hosts=st.integers(1, 10), seed=st.integers(0, 2**32))
def test_random_mx_sets(records, max_hosts, seed):
    result = mx_hosts("d.test", Lookup.ok(records, 60), random.Random(seed), max_hosts)
    got = list(hosts_of(result))
    prefs = [p for p, _ in result.hosts]
    assert len(got) <= max_hosts
    assert len(set(got)) == len(got)
    assert prefs == sorted(prefs)
    # The best preference is always tried first; every host chosen is an advertised one.
    assert prefs[0] == min(p for p, _ in records)
    assert {(p, h) for p, h in result.hosts} <= set(records)
    best = {h: min(p for p, h2 in records if h2 == h) for _, h in records}
    assert all(best[h] == p for p, h in result.hosts)  # a host at its best preference
    if len(got) < max_hosts:
        assert set(got) == set(best)  # room left: every host is there
    else:
        worst = prefs[-1]
        assert {h for h, p in best.items() if p < worst} <= set(got)  # none better left out


@settings(max_examples=200, deadline=None)
@given(
    addresses=st.lists(st.ip_addresses().map(str), min_size=1, max_size=6),
    allow=st.booleans(),
)
def test_plan_never_keeps_a_refused_address(addresses, allow):
    v4 = [a for a in addresses if ":" not in a]
    v6 = [a for a in addresses if ":" in a]
    result = plan(
        mxh("a.test"),
        {"a.test": (Lookup.ok(v4) if v4 else NODATA, Lookup.ok(v6) if v6 else NODATA)},
        allow_private=allow,
    )
    kept = result.candidates[0].addresses if isinstance(result, MXPlan) else ()
    for a in kept:
        assert refused_address(a, allow_private=allow) is None
    if allow:
        assert isinstance(result, MXPlan)
    else:
        assert isinstance(result, MXPlan) or result.permanent


@pytest.mark.parametrize(
    ("domain", "allow", "expected"),
    [
        ("[192.0.43.10]", False, ("192.0.43.10", None)),
        ("[IPv6:2606:2800:21f:cb07::1]", False, ("2606:2800:21f:cb07::1", None)),
        ("[127.0.0.2]", False, (None, FailureReason.REFUSED_DESTINATION)),
        ("[127.0.0.2]", True, ("127.0.0.2", None)),
        ("[not-an-ip]", True, (None, FailureReason.INVALID_DOMAIN)),
    ],
)
def test_address_literals_need_no_dns(domain, allow, expected):
    result = literal_plan(domain, allow_private=allow, port=2525)
    address, reason = expected
    if address:
        assert isinstance(result, MXPlan)
        assert result.destinations() == [(address, address, 2525)]
    else:
        assert isinstance(result, RouteFailure) and result.permanent
        assert result.reason is reason
    assert literal_plan("example.org") is None
