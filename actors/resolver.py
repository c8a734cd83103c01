"""The MX resolver: dnspython's async resolver on Trio, with a TTL cache and coalescing.

``await resolver.route(domain)`` asks DNS for the domain's MX records, then the A and
AAAA records of its first ``max_mx_hosts`` hosts (or of the domain itself when it has no
MX: the implicit MX), and returns what :mod:`salvo.core.mx` decides: an
:class:`~salvo.core.mx.MXPlan` (hosts with their addresses and the port, in the order
to try them) or a :class:`~salvo.core.mx.RouteFailure` (permanent or temporary).

* Every answer (name, type) is cached for its TTL, negative ones too (NXDOMAIN and
  NODATA: the SOA's negative TTL, RFC 2308, or ``NEGATIVE_TTL`` without one); temporary
  failures for ``TEMPFAIL_TTL`` (RFC 9520: at least 1 second, at most 5 minutes). The
  cache holds at most ``cache_size`` answers (least recently used ones leave first).
* Concurrent lookups of one (name, type) share one query: a thousand messages for one
  domain signed at once make one MX query.
* Time comes from ``clock`` (default: Trio's clock), so tests can use a fake one.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import random
from collections.abc import Callable, Collection
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import trio

from salvo.core import mx
from salvo.core.config import Config, DnsSection, parse_duration
from salvo.core.mx import Lookup

log = logging.getLogger("salvo.resolver")

NEGATIVE_TTL = 60.0  # a negative answer without an SOA
TEMPFAIL_TTL = 5.0  # SERVFAIL, timeout
MAX_TTL = 86400.0  # no answer is kept longer than a day
LEADER_RETRIES = 3  # a waiter whose query's owner was cancelled asks again, this often


@dataclass(frozen=True)
class ResolverSettings:
    """What the resolver needs from ``[dns]``."""

    nameservers: tuple[tuple[str, int], ...] = ()  # () = /etc/resolv.conf
    timeout: float = 10.0
    max_mx_hosts: int = mx.DEFAULT_MAX_HOSTS
    allow_private_destinations: bool = False
    cache_size: int = 10_000
    smtp_port: int = mx.SMTP_PORT

    @classmethod
    def from_config(cls, dns_section: DnsSection) -> ResolverSettings:
        return cls(
            nameservers=tuple(dns_section.nameserver_addresses()),
            timeout=parse_duration(dns_section.timeout, key="[dns] timeout"),
            max_mx_hosts=dns_section.max_mx_hosts,
            allow_private_destinations=dns_section.allow_private_destinations,
            cache_size=dns_section.cache_size,
            smtp_port=dns_section.smtp_port,
        )


class _Pending:
    """One query in progress; waiters read ``result`` once ``done`` is set."""

    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: Lookup | None = None  # None when its owner was cancelled


class Resolver:
    """MX routing over DNS; see the module docstring."""

    def __init__(
        self,
        settings: ResolverSettings,
        *,
        own_addresses: Collection[str] = (),
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.own_addresses = frozenset(own_addresses)
        self._clock = clock or trio.current_time
        self._rng = rng or random.Random()
        self._cache: collections.OrderedDict[tuple[str, str], tuple[float, Lookup]] = (
            collections.OrderedDict()
        )
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._dns: dns.asyncresolver.Resolver | None = None
        self.queries = 0  # DNS queries sent (cache misses that were not coalesced)

    @classmethod
    def from_config(cls, config: Config, **kwargs) -> Resolver:
        """A resolver for the node: its ``[dns]`` and its own addresses."""
        own = set(local_addresses())
        for pool in config.pools.values():
            own.update(pool.sources)
        return cls(ResolverSettings.from_config(config.dns), own_addresses=own, **kwargs)

    # -- the routing decision -------------------------------------------------------------

    async def route(self, domain: str) -> mx.Route:
        """Where mail for ``domain`` goes: an MXPlan, or a RouteFailure."""
        domain = domain.rstrip(".").lower()
        literal = mx.literal_plan(
            domain,
            own_addresses=self.own_addresses,
            allow_private=self.settings.allow_private_destinations,
            port=self.settings.smtp_port,
        )
        if literal is not None:
            return literal
        hosts = mx.mx_hosts(
            domain, await self.lookup(domain, "MX"), self._rng, self.settings.max_mx_hosts
        )
        if isinstance(hosts, mx.RouteFailure):
            return hosts
        answers: dict[str, tuple[Lookup, Lookup]] = {}

        async def addresses(host: str) -> None:
            results: dict[str, Lookup] = {}

            async def one(rdtype: str) -> None:
                results[rdtype] = await self.lookup(host, rdtype)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(one, "A")
                nursery.start_soon(one, "AAAA")
            answers[host] = (results["A"], results["AAAA"])

        async with trio.open_nursery() as nursery:
            for _pref, host in hosts.hosts:
                nursery.start_soon(addresses, host)
        return mx.plan(
            hosts,
            answers,
            own_addresses=self.own_addresses,
            allow_private=self.settings.allow_private_destinations,
            port=self.settings.smtp_port,
        )

    # -- cached, coalesced lookups ----------------------------------------------------------

    async def lookup(self, name: str, rdtype: str) -> Lookup:
        """One (name, type), from the cache, a query in progress, or a new query."""
        key = (name.rstrip(".").lower(), rdtype)
        for _ in range(LEADER_RETRIES):
            cached = self._cached(key)
            if cached is not None:
                return cached
            pending = self._pending.get(key)
            if pending is not None:
                await pending.done.wait()
                if pending.result is not None:
                    return pending.result
                continue  # its owner was cancelled: ask again
            pending = self._pending[key] = _Pending()
            try:
                result = await self._query(key[0], rdtype)
                pending.result = result
                self._store(key, result)
                return result
            finally:
                del self._pending[key]
                pending.done.set()
        return Lookup.tempfail("the lookup was cancelled")

    def _cached(self, key: tuple[str, str]) -> Lookup | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        expires, result = entry
        if self._clock() >= expires:
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return result

    def _store(self, key: tuple[str, str], result: Lookup) -> None:
        ttl = min(result.ttl, MAX_TTL)
        if self.settings.cache_size <= 0 or ttl <= 0:
            return
        self._cache[key] = (self._clock() + ttl, result)
        self._cache.move_to_end(key)
        while len(self._cache) > self.settings.cache_size:
            self._cache.popitem(last=False)

    def _resolver(self) -> dns.asyncresolver.Resolver:
        if self._dns is None:
            s = self.settings
            if s.nameservers:
                r = dns.asyncresolver.Resolver(configure=False)
                r.nameservers = [dns.nameserver.Do53Nameserver(a, p) for a, p in s.nameservers]
            else:
                r = dns.asyncresolver.Resolver()  # /etc/resolv.conf
            r.timeout = s.timeout
            r.lifetime = s.timeout
            r.cache = None  # ours honors TTLs, negative answers and a size bound
            self._dns = r
        return self._dns

    async def _query(self, name: str, rdtype: str) -> Lookup:
        """Ask DNS once and say what the answer means (never raises DNS errors)."""
        self.queries += 1
        try:
            qname = dns.name.from_text(name)
        except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
            return Lookup.invalid(str(exc) or type(exc).__name__)
        try:
            resolver = self._resolver()
        except dns.resolver.NoResolverConfiguration:
            return Lookup.tempfail("no nameservers: set [dns] nameservers", TEMPFAIL_TTL)
        try:
            answer = await resolver.resolve(qname, rdtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN as exc:
            try:
                response = exc.response(qname)
            except (KeyError, IndexError, dns.exception.DNSException):
                response = None
            return Lookup.nxdomain(_negative_ttl(response))
        except dns.resolver.NoNameservers as exc:  # SERVFAIL or REFUSED from every server
            return Lookup.tempfail(_short(exc, "every nameserver failed"), TEMPFAIL_TTL)
        except dns.exception.Timeout:
            return Lookup.tempfail("DNS timeout", TEMPFAIL_TTL)
        except dns.exception.DNSException as exc:
            return Lookup.tempfail(_short(exc, type(exc).__name__), TEMPFAIL_TTL)
        except OSError as exc:
            return Lookup.tempfail(f"network error: {exc}", TEMPFAIL_TTL)
        return lookup_of(answer, rdtype)


def lookup_of(answer: dns.resolver.Answer, rdtype: str) -> Lookup:
    """What a DNS answer (NOERROR, possibly empty) says, as a :class:`Lookup`: the MX
    ``(preference, host)`` pairs or the addresses, with the TTL to cache it for."""
    if answer.rrset is None:
        return Lookup.nodata(_negative_ttl(answer.response))
    ttl = min((rrset.ttl for rrset in answer.response.answer), default=answer.rrset.ttl)
    if rdtype == "MX":
        records = [(r.preference, r.exchange.to_text(omit_final_dot=True)) for r in answer]
    else:
        records = [r.address for r in answer]
    return Lookup.ok(records, float(ttl))


def _negative_ttl(response) -> float:
    """RFC 2308 section 5: the SOA's TTL, at most its MINIMUM; a default without one."""
    if response is not None:
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                return float(min(rrset.ttl, rrset[0].minimum))
    return NEGATIVE_TTL


def _short(exc: Exception, default: str) -> str:
    text = str(exc) or default
    return text if len(text) <= 200 else text[:197] + "..."


def local_addresses() -> set[str]:
    """This machine's interface addresses (Linux: /proc), best effort; loopback, private
    and link-local ones are refused anyway, this catches the public ones."""
    found: set[str] = set()
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                raw = line.split()[0]
                if len(raw) == 32:
                    found.add(str(ipaddress.IPv6Address(int(raw, 16))))
    except OSError:
        pass
    try:
        with open("/proc/net/fib_trie") as f:
            last = ""
            for line in f:
                words = line.split()
                if len(words) >= 2 and words[0] in ("|--", "+--"):
                    last = words[1]
                elif "/32 host LOCAL" in line and last:
                    found.add(last)
    except OSError:
        pass
    return found
