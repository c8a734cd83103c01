"""What the checks return, and the DNS lookup interface they are given.

The checks are pure: every DNS answer comes through a :data:`Lookup`, a function of
(name, record type) to an :class:`Answer`. The command line gives them one backed by a
resolver; the unit tests give them a dict.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass


class Status(enum.StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    INFO = "info"


@dataclass(frozen=True)
class Result:
    """One line of the report: which check, about what, its status, why, and the fix."""

    check: str  # e.g. "spf.record", "dkim.key", "ptr.forward"
    subject: str  # the domain, "selector._domainkey.domain" or the source address
    status: Status
    detail: str
    fix: str = ""  # for warn and fail: what to do (often the exact record to publish)

    def to_json(self) -> dict[str, str]:
        return {
            "check": self.check,
            "subject": self.subject,
            "status": str(self.status),
            "detail": self.detail,
            "fix": self.fix,
        }


def passed(check: str, subject: str, detail: str) -> Result:
    return Result(check, subject, Status.PASS, detail)


def warned(check: str, subject: str, detail: str, fix: str) -> Result:
    return Result(check, subject, Status.WARN, detail, fix)


def failed(check: str, subject: str, detail: str, fix: str) -> Result:
    return Result(check, subject, Status.FAIL, detail, fix)


def info(check: str, subject: str, detail: str) -> Result:
    return Result(check, subject, Status.INFO, detail)


class Outcome(enum.StrEnum):
    OK = "ok"  # records follow (maybe none of the asked type: see NODATA)
    NODATA = "nodata"  # the name exists, without records of that type
    NXDOMAIN = "nxdomain"  # the name does not exist
    ERROR = "error"  # timeout, SERVFAIL, REFUSED: nothing is known


@dataclass(frozen=True)
class Answer:
    """The records of one (name, type): TXT strings joined, MX as ``"pref host"``,
    PTR/CNAME as a host name without the trailing dot, A/AAAA as address text."""

    outcome: Outcome
    records: tuple[str, ...] = ()
    error: str = ""  # for ERROR: what went wrong

    @classmethod
    def of(cls, *records: str) -> Answer:
        return cls(Outcome.OK if records else Outcome.NODATA, tuple(records))

    @property
    def missing(self) -> bool:
        """No record: the name or the type does not exist (an error is not missing)."""
        return self.outcome in (Outcome.NXDOMAIN, Outcome.NODATA) or (
            self.outcome is Outcome.OK and not self.records
        )

    def describe(self) -> str:
        if self.outcome is Outcome.ERROR:
            return f"DNS error: {self.error}"
        if self.outcome is Outcome.NXDOMAIN:
            return "the name does not exist (NXDOMAIN)"
        return "no record of this type"


#: (name, record type like "TXT") -> Answer. Names are given without the trailing dot.
Lookup = Callable[[str, str], Answer]


def normal_name(name: str) -> str:
    """Lowercase, without the trailing dot: how names are compared."""
    return name.strip().rstrip(".").lower()
