"""MX routing decisions, sans-IO: from DNS answers to the hosts to try, or a failure.

The resolver (``salvo.actors.resolver``) asks DNS and hands the answers here as
:class:`Lookup` values; this module decides, as data:

* :func:`mx_hosts` -- from the MX answer of a domain: the host names to try, in
  preference order (randomized within one preference, with the ``rng`` passed in), at
  most ``max_hosts``; no MX records -> the domain itself as its implicit MX (RFC 5321
  section 5.1); a null MX (RFC 7505) -> a permanent failure, no connection at all;
  NXDOMAIN -> permanent; SERVFAIL or timeout -> temporary.
* :func:`plan` -- from the A and AAAA answers of those hosts: an :class:`MXPlan` of
  :class:`Candidate` (host, addresses, port), or a :class:`RouteFailure`. Addresses that
  are loopback, private (RFC 1918, ULA), link-local, unspecified, multicast or reserved,
  or one of this node's own addresses, are refused unless ``allow_private``.

Every failure says whether it is permanent (bounce) or temporary (defer), why, and the
enhanced status code (RFC 3463) to record.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import random

SMTP_PORT = 25
DEFAULT_MAX_HOSTS = 5


class LookupStatus(enum.Enum):
    """How one DNS query (one name, one type) ended."""

    OK = "ok"  # records of the type
    NODATA = "nodata"  # the name exists, with no records of the type
    NXDOMAIN = "nxdomain"  # the name does not exist
    TEMPFAIL = "tempfail"  # SERVFAIL, REFUSED from every server, timeout, network error
    INVALID = "invalid"  # the name cannot be a DNS name (an empty label, too long)


@dataclass(frozen=True, slots=True)
class Lookup:
    """The answer to one query: MX records as ``(preference, host)``, A/AAAA records as
    address strings. ``ttl`` is how long the answer may be cached (negative answers
    too); ``text`` explains a failure."""

    status: LookupStatus
    records: tuple = ()
    ttl: float = 0.0
    text: str = ""

    @classmethod
    def ok(cls, records: Sequence, ttl: float = 0.0) -> Lookup:
        return cls(LookupStatus.OK, tuple(records), ttl)

    @classmethod
    def nodata(cls, ttl: float = 0.0) -> Lookup:
        return cls(LookupStatus.NODATA, (), ttl)

    @classmethod
    def nxdomain(cls, ttl: float = 0.0) -> Lookup:
        return cls(LookupStatus.NXDOMAIN, (), ttl)

    @classmethod
    def tempfail(cls, text: str = "DNS server failure", ttl: float = 0.0) -> Lookup:
        return cls(LookupStatus.TEMPFAIL, (), ttl, text)

    @classmethod
    def invalid(cls, text: str) -> Lookup:
        return cls(LookupStatus.INVALID, (), 0.0, text)


class FailureReason(enum.Enum):
    """Why a domain (or one of its hosts) cannot be reached."""

    NULL_MX = "null-mx"  # RFC 7505: the domain accepts no mail
    NXDOMAIN = "nxdomain"  # the domain does not exist
    INVALID_DOMAIN = "invalid-domain"  # not a DNS name
    NO_ADDRESS = "no-address"  # the hosts exist but have no A/AAAA records
    REFUSED_DESTINATION = "refused-destination"  # private, loopback... or ourselves
    TEMPORARY = "temporary"  # SERVFAIL, timeout: try again later


@dataclass(frozen=True, slots=True)
class RouteFailure:
    """No host to connect to: permanent (bounce) or temporary (defer)."""

    domain: str
    reason: FailureReason
    permanent: bool
    text: str
    esc: tuple[int, int, int]

    @property
    def status(self) -> str:
        """The enhanced status code as text, e.g. ``"5.1.10"``."""
        return ".".join(map(str, self.esc))


@dataclass(frozen=True, slots=True)
class Candidate:
    """One MX host to try: its name, its usable addresses (IPv4 first), and the port."""

    host: str
    addresses: tuple[str, ...]
    port: int = SMTP_PORT
    preference: int = 0


@dataclass(frozen=True, slots=True)
class Refusal:
    """A host (or one of its addresses) that will not be tried, and why."""

    host: str
    text: str
    permanent: bool
    reason: FailureReason = FailureReason.NO_ADDRESS
    loop: bool = False  # the address is this node's own


@dataclass(frozen=True, slots=True)
class MXHosts:
    """The host names to look up, in the order to try them (at most ``max_hosts``)."""

    domain: str
    hosts: tuple[tuple[int, str], ...]  # (preference, name)
    implicit: bool = False  # no MX records: the domain itself (RFC 5321 section 5.1)


@dataclass(frozen=True, slots=True)
class MXPlan:
    """Where to deliver a domain's mail: the candidates in the order to try them."""

    domain: str
    candidates: tuple[Candidate, ...]
    implicit: bool = False
    refused: tuple[Refusal, ...] = field(default=())

    def destinations(self) -> list[tuple[str, str, int]]:
        """Every (host name, address, port) in the order to try them."""
        return [(c.host, a, c.port) for c in self.candidates for a in c.addresses]


Route = MXPlan | RouteFailure


def _fail(domain: str, reason: FailureReason, text: str, esc: tuple[int, int, int]) -> RouteFailure:
    return RouteFailure(domain, reason, esc[0] == 5, text, esc)


def _name(value: str) -> str:
    return value.rstrip(".").lower()


# What a failed DNS answer means: (reason, text, enhanced status code). The text is
# formatted with the name looked up, what was asked (MX, A...) and the resolver's detail.
_LOOKUP_FAILURES = {
    LookupStatus.NXDOMAIN: (
        FailureReason.NXDOMAIN,
        "{name}: the domain does not exist (DNS NXDOMAIN for {what})",
        (5, 1, 2),
    ),
    LookupStatus.INVALID: (
        FailureReason.INVALID_DOMAIN,
        "{name}: not a valid domain name ({detail})",
        (5, 1, 2),
    ),
    LookupStatus.TEMPFAIL: (
        FailureReason.TEMPORARY,
        "{name}: DNS lookup of {what} failed temporarily ({detail})",
        (4, 4, 3),
    ),
}


def _lookup_failure(domain: str, name: str, lookup: Lookup, what: str) -> RouteFailure | None:
    """The failure a non-OK, non-NODATA answer for ``name`` means for ``domain``."""
    failure = _LOOKUP_FAILURES.get(lookup.status)
    if failure is None:
        return None
    reason, text, esc = failure
    detail = lookup.text or ("server failure" if reason is FailureReason.TEMPORARY else "")
    return _fail(domain, reason, text.format(name=name, what=what, detail=detail), esc)


def mx_hosts(
    domain: str, mx: Lookup, rng: random.Random, max_hosts: int = DEFAULT_MAX_HOSTS
) -> MXHosts | RouteFailure:
    """The hosts of ``domain`` from its MX answer (see the module docstring)."""
    domain = _name(domain)
    failure = _lookup_failure(domain, domain, mx, "MX")
    if failure is not None:
        return failure
    if mx.status is LookupStatus.NODATA or not mx.records:
        return MXHosts(domain, ((0, domain),), implicit=True)
    records = [(int(pref), _name(str(host))) for pref, host in mx.records]
    real = [(pref, host) for pref, host in records if host]
    if not real:
        # Only "." targets: a null MX (RFC 7505 section 3). Its preference should be 0;
        # any preference is taken as the domain saying "no mail", as Postfix does.
        return _fail(
            domain,
            FailureReason.NULL_MX,
            f"{domain}: the domain accepts no mail (null MX, RFC 7505)",
            (5, 1, 10),
        )
    # A "." mixed with real hosts is invalid (RFC 7505 section 3): the "." is ignored.
    best: dict[str, int] = {}  # a host listed twice counts at its best preference
    for pref, host in real:
        best[host] = min(pref, best.get(host, pref))
    by_pref: dict[int, list[str]] = {}
    for host, pref in best.items():
        by_pref.setdefault(pref, []).append(host)
    ordered: list[tuple[int, str]] = []
    for pref in sorted(by_pref):
        group = by_pref[pref]
        rng.shuffle(group)
        ordered.extend((pref, host) for host in group)
    return MXHosts(domain, tuple(ordered[: max(1, max_hosts)]))


def literal_plan(
    domain: str,
    *,
    own_addresses: Collection[str] = (),
    allow_private: bool = False,
    port: int = SMTP_PORT,
) -> Route | None:
    """A domain literal (``[192.0.2.1]``, ``[IPv6:2001:db8::1]``, RFC 5321 4.1.3) is its
    own destination, without DNS; None when ``domain`` is not a literal."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
    try:
        address = str(ipaddress.ip_address(inner))
    except ValueError:
        return _fail(
            domain, FailureReason.INVALID_DOMAIN, f"{domain}: not an address literal", (5, 1, 2)
        )
    why = refused_address(address, own_addresses, allow_private)
    if why is not None:
        return _fail(
            domain,
            FailureReason.REFUSED_DESTINATION,
            f"{domain}: a refused destination ({why}; [dns] allow_private_destinations allows it)",
            (5, 4, 6) if "own address" in why else (5, 4, 4),
        )
    return MXPlan(domain, (Candidate(address, (address,), port),))


def refused_address(
    address: str, own_addresses: Collection[str] = (), allow_private: bool = False
) -> str | None:
    """Why mail must not go to ``address``, or None when it may."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"{address!r} is not an IP address"
    if allow_private:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if str(ip) in own_addresses or address in own_addresses:
        return f"{address} is this node's own address (mail would loop)"
    for test, what in (
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
    ):
        if test:
            return f"{address} is a {what} address"
    return None


def _addresses(v4: Lookup, v6: Lookup) -> tuple[str, ...]:
    seen: list[str] = []
    for lookup in (v4, v6):
        if lookup.status is LookupStatus.OK:
            for a in lookup.records:
                if str(a) not in seen:
                    seen.append(str(a))
    return tuple(seen)


def plan(
    hosts: MXHosts,
    addresses: Mapping[str, tuple[Lookup, Lookup]],
    *,
    own_addresses: Collection[str] = (),
    allow_private: bool = False,
    port: int = SMTP_PORT,
) -> Route:
    """The plan for ``hosts`` given each host's (A, AAAA) answers (see the docstring).

    A host is dropped when its name does not exist, it has no addresses, or every address
    is refused; when one of its lookups failed temporarily and the other gave nothing, it
    is dropped for this attempt only. The domain fails when no host is left: temporarily
    if any host was dropped for a temporary reason, permanently otherwise.
    """
    domain = hosts.domain
    candidates: list[Candidate] = []
    refused: list[Refusal] = []
    for pref, host in hosts.hosts:
        v4, v6 = addresses.get(host, (Lookup.tempfail("not looked up"),) * 2)
        found = _addresses(v4, v6)
        if not found:
            temp = [lk for lk in (v4, v6) if lk.status is LookupStatus.TEMPFAIL]
            if temp:
                text = f"{host}: address lookup failed ({temp[0].text})"
                refused.append(Refusal(host, text, False, FailureReason.TEMPORARY))
            elif LookupStatus.INVALID in (v4.status, v6.status):
                text = f"{host}: not a valid host name"
                refused.append(Refusal(host, text, True, FailureReason.INVALID_DOMAIN))
            elif v4.status is LookupStatus.NXDOMAIN and v6.status is LookupStatus.NXDOMAIN:
                text = f"{host}: no such host (NXDOMAIN)"
                refused.append(Refusal(host, text, True, FailureReason.NXDOMAIN))
            else:
                refused.append(Refusal(host, f"{host}: no A or AAAA records", True))
            continue
        usable = []
        for address in found:
            why = refused_address(address, own_addresses, allow_private)
            if why is None:
                usable.append(address)
            else:
                own = "own address" in why
                refused.append(
                    Refusal(host, f"{host}: {why}", True, FailureReason.REFUSED_DESTINATION, own)
                )
        if usable:
            candidates.append(Candidate(host, tuple(usable), port, pref))
    if candidates:
        return MXPlan(domain, tuple(candidates), hosts.implicit, tuple(refused))
    detail = "; ".join(r.text for r in refused) or "no hosts"
    if any(not r.permanent for r in refused):
        return _fail(
            domain,
            FailureReason.TEMPORARY,
            f"{domain}: no mail host reachable now: {detail}",
            (4, 4, 3),
        )
    reasons = {r.reason for r in refused}
    if reasons == {FailureReason.REFUSED_DESTINATION}:
        return _fail(
            domain,
            FailureReason.REFUSED_DESTINATION,
            f"{domain}: every mail host is a refused destination (private, loopback or "
            f"this node; [dns] allow_private_destinations allows them): {detail}",
            (5, 4, 6) if any(r.loop for r in refused) else (5, 4, 4),
        )
    if hosts.implicit and reasons == {FailureReason.NXDOMAIN}:
        return _fail(domain, FailureReason.NXDOMAIN, f"{domain}: {detail}", (5, 1, 2))
    return _fail(
        domain,
        FailureReason.NO_ADDRESS,
        f"{domain}: no mail host has a usable address: {detail}",
        (5, 4, 4),
    )
