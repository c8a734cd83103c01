"""``salvo queue summary``: counts over the spool in one read transaction.

It reads the small records only (job heads and recipient states, never bodies or
variables), so it is safe to run against a live node: LMDB readers never block the writer.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from salvo.core import spool_records as r

__all__ = ["AGE_BUCKETS", "Summary", "summarize"]

# Age of recipients not yet final, since their job was submitted: (label, upper bound s).
AGE_BUCKETS = (("<1m", 60), ("<10m", 600), ("<1h", 3600), ("<1d", 86400), (">=1d", None))


class Summary(msgspec.Struct, frozen=True):
    """Recipient counts by state, and per tenant / campaign / domain, by state."""

    jobs: int
    recipients: int
    states: dict[str, int]
    tenants: dict[str, dict[str, int]]
    campaigns: dict[str, dict[str, int]]
    domains: dict[str, dict[str, int]]
    pending_age: dict[str, int]
    suppressions: int
    used_bytes: int
    map_size: int
    file_size: int


def _bucket(age: float) -> str:
    for label, bound in AGE_BUCKETS:
        if bound is None or age < bound:
            return label
    return AGE_BUCKETS[-1][0]


def summarize(store: Any, txn: Any, now: float) -> Summary:
    """Build a :class:`Summary` from ``txn`` (a read transaction of ``store``)."""
    heads: dict[bytes, r.JobHead] = {}
    for key, raw in txn.cursor(db=store.dbs["jobs"]):
        heads[key] = r.DEC_HEAD.decode(raw)
    states: Counter[str] = Counter()
    tenants: dict[str, Counter[str]] = {}
    campaigns: dict[str, Counter[str]] = {}
    domains: dict[str, Counter[str]] = {}
    ages: Counter[str] = Counter({label: 0 for label, _ in AGE_BUCKETS})
    for key, raw in txn.cursor(db=store.dbs["rcpts"]):
        rec = r.DEC_RCPT.decode(raw)
        head = heads.get(key[:8])
        state = rec.state
        states[state] += 1
        domain = rec.key[rec.key.rindex("@") + 1 :]
        domains.setdefault(domain, Counter())[state] += 1
        if head is not None:
            tenants.setdefault(head.tenant, Counter())[state] += 1
            campaigns.setdefault(f"{head.tenant}/{head.campaign}", Counter())[state] += 1
            if state not in r.FINAL_STATES:
                ages[_bucket(now - head.submitted)] += 1
    info = store.env.info()
    return Summary(
        jobs=len(heads),
        recipients=sum(states.values()),
        states={s: states[s] for s in r.STATES},
        tenants={k: dict(v) for k, v in sorted(tenants.items())},
        campaigns={k: dict(v) for k, v in sorted(campaigns.items())},
        domains={k: dict(v) for k, v in sorted(domains.items(), key=lambda kv: -kv[1].total())},
        pending_age=dict(ages),
        suppressions=txn.stat(store.dbs["supp"])["entries"],
        used_bytes=store.used_bytes(txn),
        map_size=info["map_size"],
        file_size=store.file_size(),
    )
