"""Helpers for the salvo doctor tests: DNS answers from a dict."""

from __future__ import annotations

from salvo.core.doctor.model import Answer, Outcome


def zone(records: dict[tuple[str, str], list[str] | str]):
    """A Lookup over ``{(name, type): records}``; other names are NXDOMAIN, a value of
    "ERROR" is a DNS error."""
    names = {name for name, _ in records}

    def lookup(name: str, rdtype: str) -> Answer:
        value = records.get((name, rdtype))
        if value == "ERROR":
            return Answer(Outcome.ERROR, error="timed out")
        if value is None:
            return Answer(Outcome.NODATA if name in names else Outcome.NXDOMAIN)
        return Answer.of(*value)

    return lookup
