"""The MX resolver (salvo.actors.resolver) against a real DNS server: dnsmasq on 127.0.0.1.

One dnsmasq per test session, on a free high port, serving only the records given on its
command line (``--no-resolv --no-hosts --conf-file=/dev/null``): MX, several MX, A only,
null MX (an MX record "0 ." as raw RDATA), NXDOMAIN (``--local=/test/``), a private
address, REFUSED (a domain forwarded to no server) and a timeout (a domain forwarded to
a port where nothing answers). dnsmasq logs every query it gets (``--log-queries``): the
tests count them to see what the cache and the coalescing saved.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import dns.message
import dns.query
import pytest
import trio

from salvo.actors.resolver import Resolver, ResolverSettings
from salvo.core.config import parse_config
from salvo.core.mx import FailureReason, MXPlan, RouteFailure

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
START_TIMEOUT = 20.0

pytestmark = pytest.mark.skipif(
    not Path(DNSMASQ).exists(), reason="dnsmasq is not installed (apt: dnsmasq)"
)


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP (dnsmasq listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


class Dnsmasq:
    """A dnsmasq serving ``records`` (dnsmasq options) on 127.0.0.1:<free port>."""

    def __init__(self, records: list[str], log_path: Path, *, ttl: int = 300) -> None:
        self.host = "127.0.0.1"
        self.port = free_udp_port()
        self.dead_port = free_udp_port()  # nothing listens here: queries sent there time out
        self.log_path = log_path
        self.args = [
            DNSMASQ,
            "--keep-in-foreground",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--pid-file=",
            "--bind-interfaces",
            f"--listen-address={self.host}",
            f"--port={self.port}",
            "--log-queries",
            "--log-facility=-",
            f"--local-ttl={ttl}",
            "--cache-size=0",
            "--local=/test/",
            *(r.replace("DEAD_PORT", str(self.dead_port)) for r in records),
        ]
        self.proc: subprocess.Popen | None = None
        self._log = None
        self._lines: list[str] = []
        self._lock = threading.Lock()

    @property
    def nameserver(self) -> str:
        return f"{self.host}:{self.port}"

    def __enter__(self) -> Dnsmasq:
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        query = dns.message.make_query("ready.probe.test", "A")
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dnsmasq exited: {self.log_path.read_text()[-2000:]}")
            try:
                dns.query.udp(query, self.host, port=self.port, timeout=0.2)
                return self
            except (OSError, dns.exception.Timeout):
                if time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError("dnsmasq did not answer") from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()

    def queries(self, name: str, rdtype: str = "MX") -> int:
        """How many queries for (name, type) dnsmasq has logged so far."""
        text = self.log_path.read_text(errors="replace")
        return text.count(f"query[{rdtype}] {name} from")


RECORDS = [
    # one MX
    "--mx-host=one.test,mx.one.test,10",
    "--host-record=mx.one.test,127.0.0.2",
    # several MX: a and b share preference 10, c is the backup; c also has an IPv6 address
    "--mx-host=multi.test,a.multi.test,10",
    "--mx-host=multi.test,b.multi.test,10",
    "--mx-host=multi.test,c.multi.test,20",
    "--host-record=a.multi.test,127.0.0.11",
    "--host-record=b.multi.test,127.0.0.12",
    "--host-record=c.multi.test,127.0.0.13,::1",
    # no MX: the A record is the implicit MX
    "--host-record=aonly.test,127.0.0.3",
    # null MX (RFC 7505): MX RDATA = preference 0 (2 octets) + the root name (1 octet)
    "--dns-rr=nullmx.test,15,000000",
    # an MX host with a private address
    "--mx-host=private.test,mx.private.test,10",
    "--host-record=mx.private.test,10.1.2.3",
    # an MX host that does not exist
    "--mx-host=dangling.test,nohost.dangling.test,10",
    # REFUSED: forwarded to no server; timeout: forwarded to a port where nothing answers
    "--server=/refused.test/#",
    "--server=/dead.test/127.0.0.1#DEAD_PORT",
    # names for the cache and coalescing tests (each test its own, so counts are exact)
    "--mx-host=cached.test,mx.cached.test,10",
    "--host-record=mx.cached.test,127.0.0.4",
    "--mx-host=herd.test,mx.herd.test,10",
    "--host-record=mx.herd.test,127.0.0.5",
]


@pytest.fixture(scope="module")
def dnsmasq(tmp_path_factory):
    with Dnsmasq(RECORDS, tmp_path_factory.mktemp("dnsmasq") / "queries.log") as server:
        yield server


def make_resolver(server: Dnsmasq, *, clock=None, **settings) -> Resolver:
    text = f'[dns]\nnameservers = ["{server.nameserver}"]\ntimeout = "2s"\n'
    for key, value in settings.items():
        text += f"{key} = {str(value).lower() if isinstance(value, bool) else value}\n"
    config = parse_config(text)
    return Resolver(ResolverSettings.from_config(config.dns), clock=clock, rng=random.Random(3))


def route(resolver: Resolver, domain: str):
    async def main():
        with trio.fail_after(30):
            return await resolver.route(domain)

    return trio.run(main)


def test_one_mx(dnsmasq):
    result = route(make_resolver(dnsmasq, allow_private_destinations=True), "One.Test")
    assert isinstance(result, MXPlan), result
    assert [(c.host, c.addresses, c.port) for c in result.candidates] == [
        ("mx.one.test", ("127.0.0.2",), 25)
    ]
    assert not result.implicit


def test_several_mx_in_preference_order_with_equal_ones_shuffled(dnsmasq):
    firsts = set()
    for seed in range(20):
        resolver = make_resolver(dnsmasq, allow_private_destinations=True)
        resolver._rng = random.Random(seed)
        result = route(resolver, "multi.test")
        assert isinstance(result, MXPlan), result
        hosts = [c.host for c in result.candidates]
        assert sorted(hosts[:2]) == ["a.multi.test", "b.multi.test"]
        assert hosts[2] == "c.multi.test"
        assert result.candidates[2].addresses == ("127.0.0.13", "::1")
        firsts.add(hosts[0])
    assert firsts == {"a.multi.test", "b.multi.test"}


def test_max_mx_hosts(dnsmasq):
    resolver = make_resolver(dnsmasq, allow_private_destinations=True, max_mx_hosts=2)
    result = route(resolver, "multi.test")
    assert isinstance(result, MXPlan)
    assert len(result.candidates) == 2
    assert "c.multi.test" not in [c.host for c in result.candidates]


def test_no_mx_uses_the_a_record(dnsmasq):
    result = route(make_resolver(dnsmasq, allow_private_destinations=True), "aonly.test")
    assert isinstance(result, MXPlan), result
    assert result.implicit
    assert [(c.host, c.addresses) for c in result.candidates] == [("aonly.test", ("127.0.0.3",))]


def test_smtp_port_override(dnsmasq):
    resolver = make_resolver(dnsmasq, allow_private_destinations=True, smtp_port=2525)
    result = route(resolver, "one.test")
    assert isinstance(result, MXPlan)
    assert result.destinations() == [("mx.one.test", "127.0.0.2", 2525)]


@pytest.mark.parametrize(
    ("domain", "reason", "esc", "words"),
    [
        ("nullmx.test", FailureReason.NULL_MX, (5, 1, 10), "null MX"),
        ("nope.test", FailureReason.NXDOMAIN, (5, 1, 2), "does not exist"),
        ("private.test", FailureReason.REFUSED_DESTINATION, (5, 4, 4), "10.1.2.3 is a private"),
        ("one.test", FailureReason.REFUSED_DESTINATION, (5, 4, 4), "loopback"),
        ("dangling.test", FailureReason.NO_ADDRESS, (5, 4, 4), "nohost.dangling.test"),
    ],
)
def test_permanent_failures(dnsmasq, domain, reason, esc, words):
    result = route(make_resolver(dnsmasq), domain)
    assert isinstance(result, RouteFailure), result
    assert result.permanent
    assert (result.reason, result.esc) == (reason, esc)
    assert words in result.text


def test_null_mx_looks_up_no_addresses(dnsmasq):
    before = dnsmasq.queries("nullmx.test", "A") + dnsmasq.queries("nullmx.test", "AAAA")
    route(make_resolver(dnsmasq, allow_private_destinations=True), "nullmx.test")
    after = dnsmasq.queries("nullmx.test", "A") + dnsmasq.queries("nullmx.test", "AAAA")
    assert after == before


def test_a_private_destination_is_allowed_with_the_flag(dnsmasq):
    result = route(make_resolver(dnsmasq, allow_private_destinations=True), "private.test")
    assert isinstance(result, MXPlan), result
    assert result.destinations() == [("mx.private.test", "10.1.2.3", 25)]


@pytest.mark.parametrize("domain", ["refused.test", "dead.test"])
def test_server_failure_or_timeout_is_temporary(dnsmasq, domain):
    resolver = make_resolver(dnsmasq, allow_private_destinations=True)
    resolver.settings = ResolverSettings(
        nameservers=resolver.settings.nameservers, timeout=0.5, allow_private_destinations=True
    )
    result = route(resolver, domain)
    assert isinstance(result, RouteFailure), result
    assert not result.permanent
    assert (result.reason, result.esc) == (FailureReason.TEMPORARY, (4, 4, 3))
    assert domain in result.text


def test_answers_are_cached_for_their_ttl(dnsmasq):
    now = [1000.0]
    resolver = make_resolver(dnsmasq, clock=lambda: now[0], allow_private_destinations=True)
    first = route(resolver, "cached.test")
    assert dnsmasq.queries("cached.test") == 1
    assert dnsmasq.queries("mx.cached.test", "A") == 1
    now[0] += 299  # dnsmasq's --local-ttl is 300
    assert route(resolver, "cached.test") == first
    assert dnsmasq.queries("cached.test") == 1, "the second lookup was not served from the cache"
    assert dnsmasq.queries("mx.cached.test", "A") == 1
    now[0] += 2  # past the TTL: asked again
    assert route(resolver, "cached.test") == first
    assert dnsmasq.queries("cached.test") == 2
    assert dnsmasq.queries("mx.cached.test", "A") == 2


def test_negative_answers_are_cached(dnsmasq):
    now = [0.0]
    resolver = make_resolver(dnsmasq, clock=lambda: now[0])
    before = dnsmasq.queries("nope-cached.test")
    for _ in range(3):
        result = route(resolver, "nope-cached.test")
        assert isinstance(result, RouteFailure) and result.reason is FailureReason.NXDOMAIN
    assert dnsmasq.queries("nope-cached.test") == before + 1
    now[0] += 3600
    route(resolver, "nope-cached.test")
    assert dnsmasq.queries("nope-cached.test") == before + 2


def test_the_cache_is_bounded(dnsmasq):
    resolver = make_resolver(dnsmasq, allow_private_destinations=True, cache_size=2)

    async def main():
        with trio.fail_after(30):
            for name in ("one.test", "multi.test", "aonly.test", "cached.test"):
                await resolver.lookup(name, "MX")

    trio.run(main)
    assert len(resolver._cache) == 2


def test_concurrent_lookups_of_one_domain_share_one_query(dnsmasq):
    resolver = make_resolver(dnsmasq, allow_private_destinations=True)
    results = []

    async def main():
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for _ in range(50):
                    nursery.start_soon(lambda: _append(results, resolver.route("herd.test")))

    async def _append(into, coro):
        into.append(await coro)

    trio.run(main)
    assert len(results) == 50
    assert all(r == results[0] for r in results)
    assert isinstance(results[0], MXPlan)
    assert dnsmasq.queries("herd.test") == 1
    assert dnsmasq.queries("mx.herd.test", "A") == 1
    assert resolver.queries == 3  # MX, A, AAAA
