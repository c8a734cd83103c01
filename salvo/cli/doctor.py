"""``salvo doctor``: check a sending setup's DNS (SPF, DKIM, DMARC, MX, reverse DNS,
MTA-STS, TLS-RPT) against the node's config.

The checks are pure (``salvo.core.doctor``); this module gives them DNS: a dnspython
resolver on ``[dns] nameservers`` (with their ports) or the system's resolv.conf, with
``[dns] timeout`` per lookup, each (name, type) asked once per run.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from salvo.core import doctor
from salvo.core.config import Config, load_config, parse_duration
from salvo.core.doctor import Answer, Outcome

_DOMAIN = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{1,63}\.?$"
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "doctor",
        help="check SPF, DKIM, DMARC, MX and reverse DNS of a sending setup",
        description="Check the DNS of a sending setup against the node's config: SPF, DKIM, "
        "DMARC and alignment, the bounce domain's MX, reverse DNS of each source address, "
        "MTA-STS and TLS-RPT. Exit 0 when nothing fails, 1 when something fails, 2 on "
        "usage or config errors.",
    )
    parser.add_argument("--config", required=True, type=Path, help="the node's config file")
    parser.add_argument(
        "--domain",
        action="append",
        default=[],
        help="a From domain to check beside those with DKIM keys (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="a JSON list of results")
    parser.set_defaults(func=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    for domain in args.domain:
        if not _DOMAIN.match(domain):
            print(f"salvo doctor: --domain {domain!r} is not a domain name", file=sys.stderr)
            return 2
    setup = doctor.setup_from_config(
        config, hostname=config.hostname, domains=args.domain, read_key=_read_key
    )
    if not setup.from_domains:
        print(
            'salvo doctor: no From domain to check: configure [dkim."DOMAIN"] keys or give '
            "--domain DOMAIN",
            file=sys.stderr,
        )
        return 2
    results = doctor.run(setup, dns_lookup(config))
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    else:
        columns = shutil.get_terminal_size((120, 24)).columns
        print(doctor.table(results, width=max(100, columns)))
    return doctor.exit_status(results)


def _read_key(path: str) -> bytes:
    return Path(path).read_bytes()


def bulk_check(config: Config) -> tuple[list[str], list[doctor.Result]]:
    """At a node's start: the bulk traffic classes, and what ``salvo doctor`` fails for
    the node's From domains (nothing is asked of DNS without a bulk class)."""
    bulk = sorted(name for name, t in config.traffic.items() if t.bulk)
    if not bulk:
        return [], []
    setup = doctor.setup_from_config(
        config, hostname=config.hostname, domains=[], read_key=_read_key
    )
    results = doctor.run(setup, dns_lookup(config))
    return bulk, [r for r in results if r.status is doctor.Status.FAIL]


def dns_lookup(config: Config) -> doctor.Lookup:
    """A Lookup on the config's nameservers; each (name, type) is asked once."""
    addresses = config.dns.nameserver_addresses()
    timeout = parse_duration(config.dns.timeout)
    resolver: dns.resolver.Resolver | None = None
    setup_error = ""
    try:
        if addresses:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(a, p) for a, p in addresses]
        else:
            resolver = dns.resolver.Resolver()  # /etc/resolv.conf
        resolver.timeout = resolver.lifetime = timeout
        resolver.use_edns(0, 0, 1232)
    except dns.resolver.NoResolverConfiguration:
        setup_error = "no nameservers: set [dns] nameservers"
    cache: dict[tuple[str, str], Answer] = {}

    def lookup(name: str, rdtype: str) -> Answer:
        key = (name.lower().rstrip("."), rdtype)
        if key not in cache:
            if resolver is None:
                cache[key] = Answer(Outcome.ERROR, error=setup_error)
            else:
                cache[key] = _query(resolver, *key)
        return cache[key]

    return lookup


def _query(resolver: dns.resolver.Resolver, name: str, rdtype: str) -> Answer:
    try:
        qname = dns.name.from_text(name)
        answer = resolver.resolve(qname, rdtype, raise_on_no_answer=False, search=False)
    except dns.resolver.NXDOMAIN:
        return Answer(Outcome.NXDOMAIN)
    except dns.resolver.NoNameservers:
        return Answer(Outcome.ERROR, error="every nameserver failed (SERVFAIL or REFUSED)")
    except dns.exception.Timeout:
        return Answer(Outcome.ERROR, error="timed out")
    except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
        return Answer(Outcome.ERROR, error=str(exc) or type(exc).__name__)
    except OSError as exc:
        return Answer(Outcome.ERROR, error=f"network error: {exc}")
    if answer.rrset is None:
        return Answer(Outcome.NODATA)
    return Answer.of(*(_text(r) for r in answer.rrset))


def _text(rdata) -> str:
    kind = rdata.rdtype
    if kind == dns.rdatatype.TXT:  # the strings of one record are joined (RFC 7208 3.3)
        return b"".join(rdata.strings).decode("utf-8", "replace")
    if kind == dns.rdatatype.MX:
        return f"{rdata.preference} {rdata.exchange.to_text(omit_final_dot=True)}"  # null: "0 ."
    if kind in (dns.rdatatype.PTR, dns.rdatatype.CNAME):
        return rdata.target.to_text(omit_final_dot=True)
    return rdata.to_text()
