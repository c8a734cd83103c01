"""Run every check of a setup, and show the results as a table or JSON."""

from __future__ import annotations

from collections.abc import Iterable

from .authentication import check_dkim, check_dmarc, check_spf
from .hosts import (
    check_bounce_mx,
    check_mta_sts,
    check_no_sources,
    check_source,
    check_unsubscribe_host,
)
from .model import Lookup, Result, Status
from .setup import Setup


def run(setup: Setup, lookup: Lookup) -> list[Result]:
    """Every check, in order: each From domain (SPF, DKIM, DMARC, MTA-STS, TLS-RPT), each
    bounce domain (SPF, MX, MTA-STS, TLS-RPT), each source address (reverse DNS)."""
    results: list[Result] = []
    sources = setup.sources
    for domain in setup.from_domains:
        results += check_spf(domain, sources, lookup)
        results += check_dkim(domain, setup.dkim_for(domain), lookup)
        results += check_dmarc(domain, setup, lookup)
        results += check_mta_sts(domain, lookup)
    for domain in setup.bounce_domains:
        if domain not in setup.from_domains:  # the return path's domain: SPF is checked on it
            results += check_spf(domain, sources, lookup)
        results += check_bounce_mx(domain, setup.hostname, lookup)
        if domain not in setup.from_domains:
            results += check_mta_sts(domain, lookup)
    for pool in setup.pools:
        if not pool.sources:
            results.append(check_no_sources(pool))
        for source in pool.sources:
            results += check_source(pool, source, lookup)
    if setup.unsubscribe_host:
        results.append(check_unsubscribe_host(setup.unsubscribe_host, lookup))
    return results


def exit_status(results: Iterable[Result]) -> int:
    """0 when nothing failed, else 1."""
    return 1 if any(r.status is Status.FAIL for r in results) else 0


def summary(results: list[Result]) -> str:
    counts = {s: sum(1 for r in results if r.status is s) for s in Status}
    return ", ".join(
        f"{counts[s]} {s}" for s in (Status.PASS, Status.WARN, Status.FAIL, Status.INFO)
    )


def table(results: list[Result], *, width: int = 100) -> str:
    """A plain-text table: status, check, subject, detail; each warn/fail's fix below it."""
    header = ("STATUS", "CHECK", "SUBJECT", "DETAIL")
    rows = [(str(r.status).upper(), r.check, r.subject, r.detail, r.fix) for r in results]
    w_status = max(len(r[0]) for r in [header, *rows])
    w_check = max(len(r[1]) for r in [header, *rows])
    w_subject = min(max(len(r[2]) for r in [header, *rows]), 32)
    indent = w_status + w_check + w_subject + 6
    lines = []
    for status, check, subject, detail, fix in [(*header, ""), *rows]:
        head = f"{status:<{w_status}}  {check:<{w_check}}  "
        if len(subject) > w_subject:  # a long subject gets a line of its own
            lines.append(head + subject)
            head = " " * indent
        else:
            head += f"{subject:<{w_subject}}  "
        lines.extend(_wrap(head, detail, indent, width))
        if fix and status in ("WARN", "FAIL"):
            lines.extend(_wrap(" " * indent + "fix: ", fix, indent + 5, width))
    lines.append("")
    lines.append(summary(results))
    return "\n".join(lines)


def _wrap(head: str, text: str, indent: int, width: int) -> list[str]:
    room = max(width - indent, 30)
    words = text.split(" ")
    lines, current = [], ""
    for word in words:
        if current and len(current) + 1 + len(word) > room:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return [head + lines[0], *(" " * indent + line for line in lines[1:])]
