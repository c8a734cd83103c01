"""The text of ``salvo status`` and ``salvo top``: a pure function from the ``/api/status``
object (docs/dashboard.md) to lines, so both commands show the same tables and the tests
need no node. Names come from producers: anything not printable is shown as ``?``."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

__all__ = ["render", "spark", "table"]

BLOCKS = "▁▂▃▄▅▆▇█"
ASCII_BLOCKS = "_.-=+*#@"
MARK = "!"  # after a KPI above a rule's threshold
RATES = (
    ("delivery_rate", "DELIVERY"),
    ("hard_bounce_rate", "HARD BNC"),
    ("soft_bounce_rate", "SOFT BNC"),
    ("complaint_rate", "COMPLAINT"),
    ("unsubscribe_rate", "UNSUB"),
    ("deferral_rate", "DEFERRAL"),
)


def clean(value: object, limit: int = 40) -> str:
    text = "" if value is None else str(value)
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def count(n: object) -> str:
    return f"{n:,}" if isinstance(n, int | float) and not isinstance(n, bool) else "-"


def rate(x: object, lanes: object) -> str:
    """An allowed message rate: None means no limit (once the provider has lanes)."""
    if isinstance(x, int | float) and not isinstance(x, bool):
        return f"{x:,.1f}"
    return "no limit" if lanes else "-"


def pct(x: object) -> str:
    return f"{x * 100:.2f}%" if isinstance(x, int | float) else "-"


def duration(s: object) -> str:
    if not isinstance(s, int | float):
        return "-"
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def when(ts: object) -> str:
    if not isinstance(ts, int | float) or not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def spark(series: Sequence[int], *, ascii_only: bool = False) -> str:
    """One character per value, scaled to the largest (a graph in a line)."""
    blocks = ASCII_BLOCKS if ascii_only else BLOCKS
    top = max(series, default=0)
    if top <= 0:
        return blocks[0] * len(series)
    return "".join(blocks[min(len(blocks) - 1, v * (len(blocks) - 1) // top)] for v in series)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """Columns as wide as their widest cell; columns in ``right`` aligned right."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def _kpi_lines(title: str, block: Mapping | None, campaigns: bool) -> list[str]:
    rows = (block or {}).get("rows", [])
    total = (block or {}).get("total", len(rows))
    shown = f" (top {len(rows)} of {total})" if total > len(rows) else ""
    head = [f"{title} last hour{shown}"]
    if not rows:
        return [*head, "  nothing sent in the last hour"]
    headers = ["TENANT", *(["CAMPAIGN"] if campaigns else []), "SENT", "DELIVERED"]
    headers += [label for _, label in RATES]
    first = 2 if campaigns else 1
    out_rows = []
    for r in rows:
        above = set(r.get("above", []))
        limits = {t.get("kpi") for t in r.get("thresholds", [])}
        cells = [clean(r.get("tenant"))]
        if campaigns:
            cells.append(clean(r.get("campaign")))
        cells += [count(r.get("sent")), count(r.get("delivered"))]
        for kpi, _ in RATES:
            mark = MARK if kpi in above else ("" if kpi not in limits else " ")
            cells.append(pct(r.get(kpi)) + mark)
        out_rows.append(cells)
    right = set(range(first, len(headers)))
    return head + ["  " + line for line in table(headers, out_rows, right)]


def render(s: Mapping, *, ascii_only: bool = False) -> list[str]:
    """The lines of one status screen."""
    node = s.get("node", {})
    listen = node.get("listen", {})
    tp = s.get("throughput", {})
    q = s.get("queue", {})
    states = q.get("states", {})
    lines = [
        f"salvo {clean(node.get('version'))} on {clean(node.get('hostname'))}  "
        f"pid {node.get('pid', '-')}  up {duration(node.get('uptime_s'))}  "
        f"producers {clean(listen.get('producers'))}  data {clean(node.get('data_dir'), 60)}",
        f"throughput  {tp.get('per_s_1m', 0):.2f}/s last minute  "
        f"{tp.get('per_s_5m', 0):.2f}/s last 5 min  "
        f"{count(tp.get('delivered_since_start'))} delivered since start",
        f"  per minute, 30 min  {spark(tp.get('series', []), ascii_only=ascii_only)}",
        f"queue       {count(states.get('waiting'))} waiting  "
        f"{count(states.get('in-flight'))} in flight  "
        f"oldest {duration(q.get('oldest_s')) if q.get('total') else '-'}",
        "",
    ]
    providers = s.get("providers", [])
    if providers:
        rows = []
        for p in providers:
            replies, hour = p.get("replies", {}), p.get("last_hour", {})
            state = "sending"
            if p.get("paused"):
                state = "paused" if p.get("paused_by") == "operator" else "backoff"
            rows.append(
                [
                    clean(p.get("name")),
                    state,
                    count(p.get("connections")),
                    count(p.get("allowed_connections")),
                    rate(p.get("allowed_rate_per_s"), p.get("allowed_connections")),
                    count(p.get("waiting")),
                    count(p.get("in_flight")),
                    count(replies.get("2xx", 0)),
                    count(replies.get("4xx", 0)),
                    count(replies.get("5xx", 0)),
                    count(hour.get("sent")),
                    pct(hour.get("delivery_rate")),
                    pct(hour.get("deferral_rate")),
                ]
            )
        headers = ["PROVIDER", "STATE", "CONN", "MAX CONN", "MAX MSG/S", "WAITING", "IN FLIGHT"]
        headers += ["2XX", "4XX", "5XX"]
        headers += ["SENT 1H", "DELIVERY", "DEFERRAL"]
        lines += table(headers, rows, set(range(2, len(headers))))
    else:
        lines.append("PROVIDERS  none used yet")
    lines.append("")
    kpis = s.get("kpis", {})
    lines += _kpi_lines("TENANTS", kpis.get("tenants"), False)
    lines += _kpi_lines("CAMPAIGNS", kpis.get("campaigns"), True)
    lines.append("")
    alerts = s.get("alerts", {})
    active, rules = alerts.get("active", []), alerts.get("rules", [])
    if active:
        lines.append(f"ALERTS {len(active)} active")
        rows = [
            [
                clean(a.get("rule")),
                clean(a.get("scope")),
                clean(a.get("name")),
                _value(a.get("kpi"), a.get("value")),
                _value(a.get("kpi"), a.get("threshold")),
                clean(a.get("action")),
                when(a.get("since")),
            ]
            for a in active
        ]
        headers = ["RULE", "SCOPE", "NAME", "VALUE", "THRESHOLD", "ACTION", "SINCE"]
        lines += ["  " + line for line in table(headers, rows, {3, 4})]
    else:
        lines.append("ALERTS none active")
    if rules:
        lines.append(f"  rules: {len(rules)}")
        rows = [
            [
                clean(r.get("rule")),
                clean(r.get("kpi")),
                clean(r.get("scope")),
                _value(r.get("kpi"), r.get("above")),
                clean(r.get("window")),
                count(r.get("min_volume")),
                clean(r.get("action")),
            ]
            for r in rules
        ]
        headers = ["RULE", "KPI", "SCOPE", "ABOVE", "WINDOW", "MIN VOL", "ACTION"]
        lines += ["  " + line for line in table(headers, rows, {3, 5})]
    lines.append("")
    pauses = s.get("pauses", [])
    if pauses:
        lines.append(f"PAUSED {len(pauses)}")
        rows = [
            [
                clean(p.get("scope")),
                clean(p.get("name")),
                when(p.get("until")) if p.get("until") else "until resumed",
                clean(p.get("reason")),
            ]
            for p in pauses
        ]
        lines += ["  " + line for line in table(["SCOPE", "NAME", "UNTIL", "REASON"], rows, set())]
    else:
        lines.append("PAUSED nothing")
    return lines


def _value(kpi: object, value: object) -> str:
    return pct(value) if str(kpi).endswith("_rate") else count(value)
