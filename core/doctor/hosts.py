"""Checks of hosts and inbound records: the bounce domain's MX, each source address's
reverse DNS, MTA-STS and TLS-RPT records, the unsubscribe endpoint's name."""

from __future__ import annotations

import ipaddress

from .authentication import _dns_error, txt_line
from .model import Lookup, Outcome, Result, failed, info, normal_name, passed, warned
from .records import RecordSyntaxError, parse_mta_sts, parse_tls_rpt
from .setup import PoolSetup


def _addresses(name: str, lookup: Lookup) -> tuple[list[str], str]:
    """(A and AAAA addresses of ``name``, a DNS error or "")."""
    found, errors = [], []
    for rdtype in ("A", "AAAA"):
        answer = lookup(name, rdtype)
        if answer.outcome is Outcome.ERROR:
            errors.append(answer.error)
        found.extend(answer.records)
    return found, "; ".join(errors)


def check_bounce_mx(domain: str, hostname: str, lookup: Lookup) -> list[Result]:
    """The bounce (VERP / feedback) domain receives mail: an MX whose hosts resolve."""
    fix = (
        f"publish {domain}. IN MX 10 {hostname}. (a host that reaches the node's "
        "[feedback] listen port on 25)"
    )
    answer = lookup(domain, "MX")
    if answer.outcome is Outcome.ERROR:
        return [_dns_error("bounce.mx", domain, answer, "the MX record")]
    if answer.missing:
        return [
            failed(
                "bounce.mx",
                domain,
                "no MX record: bounces and complaints sent to addresses at this domain "
                "never come back",
                fix,
            )
        ]
    hosts = sorted(_mx(r) for r in answer.records)
    if all(h == "" for _, h in hosts):
        return [failed("bounce.mx", domain, "a null MX ('0 .'): the domain refuses all mail", fix)]
    results = []
    for preference, mx_host in hosts:
        addresses, error = _addresses(mx_host, lookup)
        if addresses:
            results.append(
                passed(
                    "bounce.mx",
                    domain,
                    f"MX {preference} {mx_host} -> {', '.join(addresses)}",
                )
            )
        else:
            results.append(
                failed(
                    "bounce.mx",
                    domain,
                    f"MX {preference} {mx_host} has no address"
                    + (f" (DNS error: {error})" if error else " (no A or AAAA record)"),
                    f"publish {mx_host}. IN A <the address of the node's feedback listener>",
                )
            )
    return results


def _mx(record: str) -> tuple[int, str]:
    """``"10 mx.example"`` -> (10, "mx.example"); the null MX ``"0 ."`` -> (0, "")."""
    preference, _, host = record.partition(" ")
    return (int(preference) if preference.isdigit() else 0), normal_name(host)


def check_source(pool: PoolSetup, source: str, lookup: Lookup) -> list[Result]:
    """Reverse DNS of a source address: a PTR, whose name resolves back to the address
    and is the pool's EHLO name."""
    reverse = ipaddress.ip_address(source).reverse_pointer
    rdtype = "A" if ipaddress.ip_address(source).version == 4 else "AAAA"
    answer = lookup(reverse, "PTR")
    if answer.outcome is Outcome.ERROR:
        return [_dns_error("ptr.exists", source, answer, "the PTR record")]
    if answer.missing:
        return [
            failed(
                "ptr.exists",
                source,
                "no reverse DNS (PTR): Gmail, Yahoo and Microsoft reject or junk mail from "
                "addresses without one",
                f"have the owner of the address (the hosting provider) publish {reverse}. IN "
                f"PTR {pool.ehlo}. and publish {pool.ehlo}. IN {rdtype} {source}",
            )
        ]
    name = normal_name(answer.records[0])
    results = [passed("ptr.exists", source, f"PTR {name}")]
    if len(answer.records) > 1:
        results.append(
            warned(
                "ptr.exists",
                source,
                f"{len(answer.records)} PTR names: receivers use whichever comes first",
                f"keep one: {reverse}. IN PTR {pool.ehlo}.",
            )
        )
    forward = lookup(name, rdtype)
    if forward.outcome is Outcome.ERROR:
        results.append(_dns_error("ptr.forward", source, forward, f"{rdtype} of {name}"))
    elif source in {str(ipaddress.ip_address(a)) for a in forward.records if _ip(a)}:
        results.append(passed("ptr.forward", source, f"{name} -> {source}"))
    elif forward.missing:
        results.append(
            failed(
                "ptr.forward",
                source,
                f"the PTR name {name} does not resolve ({forward.describe()}): forward-"
                "confirmed reverse DNS fails",
                f"publish {name}. IN {rdtype} {source}",
            )
        )
    else:
        results.append(
            failed(
                "ptr.forward",
                source,
                f"the PTR name {name} resolves to {', '.join(forward.records)}, not to "
                f"{source}: forward-confirmed reverse DNS fails",
                f"publish {name}. IN {rdtype} {source} (beside the others), or point the PTR "
                f"at a name that resolves to {source}",
            )
        )
    ehlo = normal_name(pool.ehlo)
    if name == ehlo:
        results.append(passed("ptr.ehlo", source, f"the PTR name is [pools.{pool.name}]'s EHLO"))
    else:
        results.append(
            failed(
                "ptr.ehlo",
                source,
                f"the PTR name {name} is not [pools.{pool.name}]'s EHLO name {ehlo!r}",
                f'set [pools.{pool.name}] ehlo = "{name}" (or change the PTR to {ehlo})',
            )
        )
    return results


def _ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_no_sources(pool: PoolSetup) -> Result:
    return info(
        "ptr.exists",
        f"[pools.{pool.name}]",
        "no source addresses: the system picks them, so reverse DNS is not checked",
    )


def check_mta_sts(domain: str, lookup: Lookup) -> list[Result]:
    """``_mta-sts.DOMAIN`` and ``_smtp._tls.DOMAIN``: their syntax where published."""
    return [
        _tag_record(
            "mta_sts",
            domain,
            f"_mta-sts.{domain}",
            "v=STSv1",
            parse_mta_sts,
            "v=STSv1; id=1",
            lookup,
            "the policy at https://mta-sts.{d}/.well-known/mta-sts.txt is not fetched",
        ),
        _tag_record(
            "tls_rpt",
            domain,
            f"_smtp._tls.{domain}",
            "v=TLSRPTv1",
            parse_tls_rpt,
            f"v=TLSRPTv1; rua=mailto:tls-reports@{domain}",
            lookup,
            "",
        ),
    ]


def _tag_record(check, domain, name, prefix, parse, example, lookup, note) -> Result:
    answer = lookup(name, "TXT")
    if answer.outcome is Outcome.ERROR:
        return _dns_error(check, domain, answer, name)
    records = [r for r in answer.records if r.lstrip().lower().startswith(prefix.lower())]
    if not records:
        return info(check, domain, f"not published at {name} (optional)")
    if len(records) > 1:
        return failed(
            check,
            domain,
            f"{len(records)} records at {name}: receivers ignore them all",
            f"keep one, e.g. {txt_line(name, example)}",
        )
    try:
        parse(records[0])
    except RecordSyntaxError as exc:
        return failed(
            check,
            domain,
            f"the record at {name} is malformed: {exc}",
            f"publish e.g. {txt_line(name, example)}",
        )
    detail = f"{name}: {records[0]}" + (f"; {note.format(d=domain)}" if note else "")
    return passed(check, domain, detail)


def check_unsubscribe_host(host: str, lookup: Lookup) -> Result:
    addresses, error = _addresses(host, lookup)
    if addresses:
        return passed("unsubscribe.host", host, f"[unsubscribe] base_url's host -> {addresses[0]}")
    return failed(
        "unsubscribe.host",
        host,
        "[unsubscribe] base_url's host does not resolve"
        + (f" (DNS error: {error})" if error else "")
        + ": one-click unsubscribes cannot reach the node",
        f"publish {host}. IN A <the address of the proxy in front of [unsubscribe] listen>",
    )
