"""The node's status for an operator's screen (``GET /api/status``, docs/dashboard.md).

Pure: the actors read the parts (queue gauges, KPI buckets of the last hour, pending
recipients per domain, lanes, pauses, alerts) and pass them in with the time; this module
shapes them into one JSON object. The dashboard, ``salvo status`` and ``salvo top`` show
that object and compute nothing of their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

from salvo.core import kpis

__all__ = [
    "HOUR",
    "TOP",
    "kpi_rows",
    "providers_view",
    "queue_view",
    "split_dims",
    "throughput",
    "volume",
]

HOUR = 3600.0
TOP = 20  # tenants and campaigns listed, by volume
SERIES_MINUTES = 30  # the throughput graph's minutes
UNRESOLVED = "(unresolved)"  # recipients whose domain's provider the node does not know yet

# The volume a rule's min_volume is compared with: a rate's denominator.
_VOLUME_OF = {
    "complaint_rate": "delivered",
    "unsubscribe_rate": "delivered",
    "deferral_rate": "attempts",
}

Dim = tuple[str | None, str | None, str | None]


def split_dims(dims: Mapping[bytes, Mapping[str, int]]) -> dict[Dim, Mapping[str, int]]:
    """Bucket dimensions (``kpis.dim_key``) as (tenant, campaign, provider), None for any."""
    out: dict[Dim, Mapping[str, int]] = {}
    for key, counts in dims.items():
        parts = key.split(b"\x00")
        if len(parts) != 3:
            continue
        t, c, p = (None if v == kpis.ANY else v.decode("utf-8", "replace") for v in parts)
        out[(t, c, p)] = counts
    return out


def volume(kpi: str, row: Mapping) -> int:
    """The volume behind a KPI value: its rate's denominator (for ``min_volume``)."""
    name = _VOLUME_OF.get(kpi, "sent")
    if name == "attempts":
        return int(row.get("counts", {}).get("attempts", 0))
    return int(row.get(name, 0))


def throughput(delivered_by_minute: Mapping[int, int], now: float) -> dict:
    """Delivered per second over the last 60 and 300 seconds, from per-minute counts: the
    current minute's count plus the share of the oldest minute still inside the window.
    ``series``: delivered per minute over the last ``SERIES_MINUTES`` (oldest first; the
    last one is the current, partial minute)."""
    current = kpis.minute_of(now)
    into = (now - current * 60) / 60  # the part of the current minute gone by
    out = {}
    for label, minutes in (("per_s_1m", 1), ("per_s_5m", 5)):
        total = sum(delivered_by_minute.get(current - i, 0) for i in range(minutes))
        total += delivered_by_minute.get(current - minutes, 0) * (1 - into)
        out[label] = round(total / (minutes * 60), 3)
    out["series"] = [
        delivered_by_minute.get(m, 0) for m in range(current - SERIES_MINUTES + 1, current + 1)
    ]
    out["series_minute"] = current
    return out


def _applies(rule: Mapping, scope: str) -> bool:
    return rule.get("scope") == scope and rule.get("kpi") in kpis.KPI_NAMES


def kpi_rows(
    split: Mapping[Dim, Mapping[str, int]],
    scope: str,
    rules: Iterable[Mapping],
    *,
    window_s: float = HOUR,
    top: int = TOP,
) -> dict:
    """The KPIs of every tenant (``scope`` "tenant") or campaign ("campaign") over the
    window, the ``top`` largest by volume, each with the thresholds of the rules of its
    scope and the KPIs above them (with enough volume)."""
    if scope == "tenant":
        found = {(t, None): c for (t, cm, p), c in split.items() if t and cm is None and p is None}
    else:
        found = {(t, cm): c for (t, cm, p), c in split.items() if t and cm and p is None}
    applicable = [r for r in rules if _applies(r, scope)]
    rows = []
    for (tenant, campaign), counts in found.items():
        row = kpis.compute(counts, window_s)
        row["tenant"] = tenant
        if campaign is not None:
            row["campaign"] = campaign
        name = tenant if scope == "tenant" else campaign
        row["thresholds"] = [
            {k: r.get(k) for k in ("rule", "kpi", "above", "min_volume", "action", "window")}
            for r in applicable
        ]
        row["above"] = sorted(
            {
                r["kpi"]
                for r in applicable
                if isinstance(row.get(r["kpi"]), int | float)
                and row[r["kpi"]] > float(r.get("above") or 0)
                and volume(r["kpi"], row) >= int(r.get("min_volume") or 0)
            }
        )
        row["name"] = name
        rows.append(row)
    rows.sort(key=lambda r: (-r["sent"], -r["counts"]["attempts"], r["tenant"], r["name"]))
    return {"rows": rows[:top], "total": len(rows), "window_s": window_s}


def queue_view(
    waiting: int,
    in_flight: int,
    oldest_s: float,
    pending_by_domain: Mapping[str, int],
    provider_of: Callable[[str], str | None],
    in_flight_by_provider: Mapping[str, int],
    *,
    partial: bool = False,
) -> dict:
    """Recipients by state, and per provider: not yet final (from the per-domain index),
    in flight (the scheduler's count) and waiting (their difference)."""
    pending: dict[str, int] = {}
    for domain, n in pending_by_domain.items():
        name = provider_of(domain) or UNRESOLVED
        pending[name] = pending.get(name, 0) + n
    by_provider = {}
    for name in sorted(set(pending) | set(in_flight_by_provider)):
        flying = int(in_flight_by_provider.get(name, 0))
        by_provider[name] = {
            "waiting": max(0, pending.get(name, 0) - flying),
            "in-flight": flying,
        }
    return {
        "states": {"waiting": waiting, "in-flight": in_flight},
        "total": waiting + in_flight,
        "oldest_s": round(oldest_s, 1),
        "by_provider": by_provider,
        "by_provider_partial": partial,
    }


def providers_view(
    split: Mapping[Dim, Mapping[str, int]],
    connections: Mapping[str, int],
    backoff_s: Mapping[str, float],
    operator_paused: Iterable[str],
    replies: Mapping[str, Mapping[str, int]],
    queue_by_provider: Mapping[str, Mapping[str, int]],
    *,
    window_s: float = HOUR,
    shaping: Mapping[str, tuple[int, float]] | None = None,
) -> list[dict]:
    """One row per provider the node has seen: open connections, whether it is paused (by
    the operator, or after failed connections: ``backoff_s``), replies by class since the
    node started, its queue, and its KPIs over the window. ``shaping``: the connections
    and messages per second its lanes allow now (adaptive shaping; ``math.inf``: no
    limit), shown as ``allowed_connections`` and ``allowed_rate_per_s`` (None: no limit)."""
    shaping = shaping or {}
    paused = set(operator_paused)
    by_dim = {p: c for (t, cm, p), c in split.items() if p and t is None and cm is None}
    names = (set(connections) | set(backoff_s) | paused | set(replies) | set(by_dim)) | set(
        queue_by_provider
    )
    rows = []
    for name in sorted(names):
        counts = by_dim.get(name, {})
        k = kpis.compute(counts, window_s)
        backoff = float(backoff_s.get(name, 0.0))
        queue = queue_by_provider.get(name, {})
        allowed, rate = shaping.get(name, (None, math.inf))
        rows.append(
            {
                "name": name,
                "connections": int(connections.get(name, 0)),
                "allowed_connections": allowed,
                "allowed_rate_per_s": None if math.isinf(rate) else round(rate, 1),
                "paused": name in paused or backoff > 0,
                "paused_by": "operator" if name in paused else ("backoff" if backoff > 0 else None),
                "backoff_s": round(backoff, 1),
                "replies": dict(replies.get(name, {})),
                "waiting": int(queue.get("waiting", 0)),
                "in_flight": int(queue.get("in-flight", 0)),
                "last_hour": {
                    key: k[key]
                    for key in (
                        "sent",
                        "delivered",
                        "delivery_rate",
                        "deferral_rate",
                        "hard_bounce_rate",
                    )
                },
            }
        )
    return rows


def uptime(started: float, now: float) -> float:
    return max(0.0, math.floor((now - started) * 10) / 10)
