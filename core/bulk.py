"""The bulk-sender rules of Gmail and Yahoo (2024), for traffic classes with ``bulk = true``.

A job of such a class is refused at intake (``rejected``, with the rule in ``error``)
unless:

- **DKIM aligns with From**: the node holds a DKIM key for the From domain itself
  (``[dkim."DOMAIN"]``; salvo signs with ``d=`` the From domain, so a key for it is
  strict alignment);
- **one-click unsubscribe is present**: the class adds ``List-Unsubscribe`` and
  ``List-Unsubscribe-Post`` (``list_unsubscribe = true``), or the job carries both
  itself, the Post one being ``List-Unsubscribe=One-Click`` (RFC 8058).

The DNS side (SPF, DKIM records, DMARC) is ``salvo doctor``'s, run by ``salvo node`` at
start when a class is bulk (docs/doctor.md). Pure: the config's view is passed in.
"""

from __future__ import annotations

from email.parser import HeaderParser
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from salvo.core.config import Config
    from salvo.core.protocol import Job

__all__ = ["BulkRules", "job_problem"]

ONE_CLICK = "list-unsubscribe=one-click"


class BulkRules(msgspec.Struct, frozen=True):
    """``classes``: each traffic class's (bulk, the node adds List-Unsubscribe);
    ``signed``: the From domains the node has a DKIM key for (lower case)."""

    classes: dict[str, tuple[bool, bool]]
    signed: frozenset[str]

    @classmethod
    def from_config(cls, config: Config) -> BulkRules | None:
        """None when no traffic class is bulk (intake then checks nothing)."""
        if not any(t.bulk for t in config.traffic.values()):
            return None
        return cls(
            {name: (t.bulk, t.list_unsubscribe) for name, t in config.traffic.items()},
            frozenset(d.lower() for d in config.dkim),
        )

    def of(self, traffic: str) -> tuple[bool, bool]:
        """A class name no class has is the default class (as the node does)."""
        return self.classes.get(traffic) or self.classes.get("default", (False, False))


def job_problem(rules: BulkRules, job: Job, from_domain: str) -> str | None:
    """Why a job breaks the bulk-sender rules of its traffic class (None: it does not)."""
    bulk, adds_unsubscribe = rules.of(job.traffic or "default")
    if not bulk:
        return None
    where = f"traffic class {job.traffic or 'default'!r} is bulk"
    headers = _raw_headers(job.raw) if job.raw is not None else job.headers
    if job.raw is not None:
        from_domain = _domain(headers.get("from", ""))
    if from_domain.lower() not in rules.signed:
        return (
            f"{where}: no DKIM key for the From domain {from_domain!r} (bulk senders must "
            f'sign with d= their From domain: add [dkim."{from_domain}"] to the config)'
        )
    if adds_unsubscribe and job.raw is None:
        return None
    names = {name.lower(): value for name, value in headers.items()}
    post = names.get("list-unsubscribe-post", "")
    if not names.get("list-unsubscribe") or post.strip().lower() != ONE_CLICK:
        how = (
            "set list_unsubscribe = true on the class"
            if job.raw is None
            else "a raw message must carry both headers itself"
        )
        return (
            f"{where}: no one-click unsubscribe (List-Unsubscribe and List-Unsubscribe-Post: "
            f"List-Unsubscribe=One-Click, RFC 8058): {how}"
        )
    return None


def _raw_headers(raw: str) -> dict[str, str]:
    head = raw.replace("\r\n", "\n").split("\n\n", 1)[0]
    parsed = HeaderParser().parsestr(head, headersonly=True)
    return {name.lower(): str(value) for name, value in parsed.items()}


def _domain(from_header: str) -> str:
    address = from_header.rsplit("<", 1)[-1].split(">", 1)[0].strip()
    return address.rpartition("@")[2].strip().lower()
