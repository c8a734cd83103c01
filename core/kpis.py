"""KPI bookkeeping: per-minute counter buckets, their keys, merging, and the KPIs.

Pure (docs/architecture.md, "core is sans-IO"): the time is passed in, the spool reads and
writes the buckets (``Spool.add_kpis_in``, ``Spool.kpi_buckets``) inside the transactions
that record the outcomes they count. docs/metrics.md defines every name and rate.

A bucket is one minute of one *dimension*: a combination of tenant, campaign and provider
where each may be "any". Every outcome is counted in the dimensions of every subset of its
labels (8 with a provider, 4 without), so a query for any combination of the three
filters reads one bucket per minute. A delivery result also counts in its source
address's own dimension (:func:`source_dim`; alert rules of scope ``source``). A
bucket's value is a map of counter names to counts; names ``h:K`` are the latency
histogram (``K``: :func:`latency_bucket`).
"""

from __future__ import annotations

import collections
import itertools
import math
import struct
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, NamedTuple

import msgspec

if TYPE_CHECKING:
    from salvo.core.spool import Change

__all__ = [
    "KPI_NAMES",
    "RETENTION",
    "KpiQuery",
    "KpiQueryError",
    "book_changes",
    "book_events",
    "bucket_key",
    "compute",
    "dim_key",
    "expand",
    "latency_bucket",
    "merge",
    "minute_of",
    "names_of",
    "parse_query",
    "percentile",
]

MINUTE = 60
RETENTION = 8 * 86400.0  # buckets older than this are purged by the spool's maintenance
MAX_WINDOW = 7 * 86400.0
ANY = b"\x01"  # a dimension's component that matches every value (names are printable)
_SEP = SEP = b"\x00"
# A source address's own dimension (alert rules of scope source): apart from the
# tenant x campaign x provider ones, which this prefix cannot start (names are printable).
SOURCE = b"\x02source" + _SEP
_MINUTE = struct.Struct(">I")
# Latency histogram: bucket K holds latencies up to BASE * 2 ** (K / STEPS) seconds.
LAT_BASE = 0.01
LAT_STEPS = 4
LAT_MAX = 120  # 0.01 s * 2**30 ~ 124 days: everything above goes to the last bucket

KPI_NAMES = (
    "sent",
    "delivered",
    "delivery_rate",
    "hard_bounce_rate",
    "soft_bounce_rate",
    "complaint_rate",
    "unsubscribe_rate",
    "deferral_rate",
    "throughput_per_s",
    "latency_p50_s",
    "latency_p99_s",
)

_ENC = msgspec.msgpack.Encoder()
_DEC = msgspec.msgpack.Decoder(dict[str, int])

Counts = dict[str, int]
Delta = dict[bytes, Counts]


class Labels(NamedTuple):
    """What an outcome is counted under; ``submitted``: its job's acceptance time."""

    tenant: str
    campaign: str
    provider: str | None  # None: not known (feedback reports)
    submitted: float
    source: str = ""  # the source address it was sent from ("": the system's, or unknown)


# -- keys ------------------------------------------------------------------------------------


def minute_of(now: float) -> int:
    return int(now // MINUTE)


def dim_key(tenant: str | None, campaign: str | None, provider: str | None) -> bytes:
    """The dimension of a filter; None is "any"."""
    return _SEP.join(ANY if v is None else v.encode() for v in (tenant, campaign, provider))


def source_dim(source: str) -> bytes:
    """The dimension of one source address (counted apart from the others)."""
    return SOURCE + source.encode()


def source_of_dim(dim: bytes) -> str | None:
    """The source address of a source dimension, None for any other dimension."""
    if dim.startswith(SOURCE):
        return dim[len(SOURCE) :].decode(errors="replace")
    return None


def bucket_key(minute: int, dim: bytes) -> bytes:
    return _MINUTE.pack(minute) + dim


def minute_of_key(key: bytes) -> int:
    return _MINUTE.unpack_from(key)[0]


def encode_counts(counts: Mapping[str, int]) -> bytes:
    return _ENC.encode(counts)


def decode_counts(raw: bytes) -> Counts:
    return _DEC.decode(raw)


# -- what an outcome counts --------------------------------------------------------------------


def latency_bucket(seconds: float) -> int:
    if seconds <= LAT_BASE:
        return 0
    return min(LAT_MAX, math.ceil(LAT_STEPS * math.log2(seconds / LAT_BASE)))


def bucket_upper(k: int) -> float:
    """The upper bound (seconds) of latency bucket ``k``."""
    return LAT_BASE * 2 ** (k / LAT_STEPS)


def names_of(
    state: str, code: int = 0, attempts: int = 0, *, async_: bool = False, hard: bool = False
) -> tuple[str, ...]:
    """The counters one recipient event adds 1 to (docs/metrics.md, "KPIs")."""
    if state == "delivered":
        return ("sent", "delivered", "attempts")
    if state == "deferred":
        return ("deferred", "attempts")
    if state == "bounced":
        if async_:  # reported later by mail, about a message already counted as sent
            return ("bounced", "hard_bounces" if hard else "soft_bounces")
        return ("sent", "bounced", "hard_bounces", "attempts")
    if state == "expired":
        return ("sent", "expired", "soft_bounces") if attempts else ("expired",)
    if state in ("failed", "suppressed", "complained", "unsubscribed"):
        return (state,)
    return ()


def expand(counted: Mapping[tuple[Labels, tuple[str, ...], int | None], int], now: float) -> Delta:
    """The bucket increments of counted (labels, names, latency bucket) in ``now``'s minute:
    each label set in every dimension of it."""
    minute = minute_of(now)
    out: Delta = {}
    for (labels, names, lat), n in counted.items():
        providers = (None,) if labels.provider is None else (None, labels.provider)
        for t, c, p in itertools.product((None, labels.tenant), (None, labels.campaign), providers):
            counts = out.setdefault(bucket_key(minute, dim_key(t, c, p)), {})
            for name in names:
                counts[name] = counts.get(name, 0) + n
            if lat is not None:
                h = f"h:{lat}"
                counts[h] = counts.get(h, 0) + n
        if labels.source:
            counts = out.setdefault(bucket_key(minute, source_dim(labels.source)), {})
            for name in names:
                counts[name] = counts.get(name, 0) + n
    return out


def book_changes(
    labels: Mapping[tuple[int, int], Labels], now: float, changes: Iterable[Change]
) -> Delta:
    """The bucket increments of recorded outcome changes; ``labels``: each recipient's
    (seq, idx) -> :class:`Labels` (a recipient without is counted for no tenant)."""
    counted: collections.Counter = collections.Counter()
    unknown = Labels("", "", None, now)
    for change in changes:
        rec = change.record
        lab = labels.get((change.seq, change.idx), unknown)
        names = names_of(rec.state, rec.last.code if rec.last else 0, rec.attempts)
        if not names:
            continue
        lat = latency_bucket(now - lab.submitted) if rec.state == "delivered" else None
        counted[(lab, names, lat)] += 1
    return expand(counted, now)


def book_events(events: Iterable, now: float) -> Delta:
    """The bucket increments of feedback events (``salvo.core.events.Event``): complaints,
    unsubscribes and bounces reported later, under the provider and source the reported
    message went out to and from (when the spool's record of it says)."""
    counted: collections.Counter = collections.Counter()
    for e in events:
        names = names_of(e.type, e.code, e.attempt, async_=e.async_, hard=e.hard)
        if names:
            labels = Labels(e.tenant, e.campaign, e.provider or None, 0.0, e.source)
            counted[(labels, names, None)] += 1
    return expand(counted, now)


def merge(*parts: Mapping[str, int]) -> Counts:
    """The sum of counter maps (associative and commutative)."""
    out: Counts = {}
    for part in parts:
        for name, n in part.items():
            out[name] = out.get(name, 0) + n
    return out


def merge_delta(a: Delta, b: Delta) -> Delta:
    out = {k: dict(v) for k, v in a.items()}
    for key, counts in b.items():
        out[key] = merge(out.get(key, {}), counts)
    return out


# -- reading -------------------------------------------------------------------------------------


def percentile(hist: Mapping[int, int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a latency histogram (bucket -> count): the upper bound
    of the bucket holding it; None when the histogram is empty."""
    total = sum(hist.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for k in sorted(hist):
        seen += hist[k]
        if seen >= rank:
            return bucket_upper(k)
    return bucket_upper(max(hist))


def histogram(counts: Mapping[str, int]) -> dict[int, int]:
    return {int(name[2:]): n for name, n in counts.items() if name.startswith("h:") and n > 0}


def _rate(part: int, whole: int) -> float:
    if whole <= 0:
        return 0.0
    return max(0.0, min(1.0, part / whole))


def compute(counts: Mapping[str, int], window_s: float) -> dict:
    """The KPIs of merged counters over a window of ``window_s`` seconds."""
    get = counts.get
    sent, delivered, attempts = get("sent", 0), get("delivered", 0), get("attempts", 0)
    hist = histogram(counts)
    p50, p99 = percentile(hist, 0.5), percentile(hist, 0.99)
    return {
        "sent": sent,
        "delivered": delivered,
        "delivery_rate": _rate(delivered, sent),
        "hard_bounce_rate": _rate(get("hard_bounces", 0), sent),
        "soft_bounce_rate": _rate(get("soft_bounces", 0), sent),
        "complaint_rate": _rate(get("complained", 0), delivered),
        "unsubscribe_rate": _rate(get("unsubscribed", 0), delivered),
        "deferral_rate": _rate(get("deferred", 0), attempts),
        "throughput_per_s": delivered / window_s if window_s > 0 else 0.0,
        "latency_p50_s": p50,
        "latency_p99_s": p99,
        "window_s": window_s,
        "counts": {
            name: get(name, 0)
            for name in (
                "attempts",
                "deferred",
                "bounced",
                "hard_bounces",
                "soft_bounces",
                "expired",
                "failed",
                "suppressed",
                "complained",
                "unsubscribed",
            )
        },
    }


# -- the query -------------------------------------------------------------------------------------


class KpiQueryError(ValueError):
    """A KPI query that cannot be answered: the message says why (HTTP 400)."""


class KpiQuery(NamedTuple):
    tenant: str | None
    campaign: str | None
    provider: str | None
    window_s: float

    @property
    def dim(self) -> bytes:
        return dim_key(self.tenant, self.campaign, self.provider)

    def minutes(self, now: float) -> range:
        """The minutes of the window ending at ``now`` (the current one included)."""
        last = minute_of(now)
        return range(last - max(1, math.ceil(self.window_s / MINUTE)) + 1, last + 1)


_WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
QUERY_KEYS = ("tenant", "campaign", "provider", "window")


def parse_window(value: str) -> float:
    text = value.strip()
    unit = text[-1:] if text[-1:] in _WINDOW_UNITS else "s"
    number = text[:-1] if text[-1:] in _WINDOW_UNITS else text
    # ASCII digits only: "²" is a digit to str.isdigit but not to int().
    if not (number.isascii() and number.isdigit()) or int(number) <= 0:
        raise KpiQueryError(f"window {value!r}: expected a duration like 15m, 1h, 1d")
    seconds = float(int(number) * _WINDOW_UNITS[unit])
    if seconds < MINUTE or seconds > MAX_WINDOW:
        raise KpiQueryError(f"window {value!r}: from 1m to {int(MAX_WINDOW // 86400)}d")
    return seconds


def parse_query(pairs: Iterable[tuple[str, str]]) -> KpiQuery:
    """A query from its (name, value) pairs (``urllib.parse.parse_qsl`` with blank values
    kept); an empty filter is "any"."""
    found: dict[str, str] = {}
    for name, value in pairs:
        if name not in QUERY_KEYS:
            raise KpiQueryError(f"unknown parameter {name!r}; known: {', '.join(QUERY_KEYS)}")
        if name in found:
            raise KpiQueryError(f"parameter {name!r} given twice")
        if len(value) > 200 or not value.isprintable():
            raise KpiQueryError(f"parameter {name!r}: at most 200 printable characters")
        found[name] = value
    window = parse_window(found.get("window") or "1h")
    return KpiQuery(
        found.get("tenant") or None,
        found.get("campaign") or None,
        found.get("provider") or None,
        window,
    )
