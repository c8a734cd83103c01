"""``GET /api/status`` and the dashboard's files (docs/dashboard.md).

The status is everything an operator's screen shows, in one call: the node, the queue by
state and provider, throughput, providers, pauses, alerts and the KPIs of the busiest
tenants and campaigns. The spool parts are read in a worker thread and kept for
``cache_s`` seconds, so screens polling every 2 s cost one read per period, not one per
screen; each read is capped (the KPI buckets of the last hour and the per-domain index),
so a large spool costs a bounded read. The shaping is :mod:`salvo.core.status` (pure).

The dashboard (``/``, ``/dashboard.js``, ``/dashboard.css``) is static package data and
holds no data: it needs no token to load; the page asks the API with the operator's token.
"""

from __future__ import annotations

import importlib.resources
import os
import time
from collections.abc import Callable
from typing import Any

import trio

from salvo import __version__
from salvo.actors.admin import Admin, json_response
from salvo.actors.http import Request, Response, Route
from salvo.core import kpis
from salvo.core import status as st

CACHE_S = 2.0
# Every page and file of the dashboard: same-origin scripts and styles only, no framing.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
NO_ALERTS = {"active": [], "rules": []}


def dashboard_file(name: str) -> bytes:
    return (importlib.resources.files("salvo") / "dashboard" / name).read_bytes()


class Status:
    """The status route and the dashboard; ``alerts``: () -> the ``/api/alerts`` object
    (``{"active": [...], "rules": [...]}``), None while the node runs no alert rules."""

    def __init__(
        self,
        admin: Admin,
        config,
        scheduler=None,  # salvo.actors.scheduler.Scheduler
        *,
        clock: Callable[[], float] = time.time,
        cache_s: float = CACHE_S,
        alerts: Callable[[], dict] | None = None,
    ) -> None:
        self.admin = admin
        self.config = config
        self.scheduler = scheduler
        self.alerts = alerts
        self._clock = clock
        self.cache_s = cache_s
        self.started = clock()
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock = trio.Lock()
        self._files = {path: (dashboard_file(name), ctype) for path, (name, ctype) in FILES.items()}

    def routes(self) -> list[Route]:
        return [
            Route.of("GET", r"/api/status", self.admin.guard("read", self.get_status)),
            *(Route.of("GET", path, self.get_file) for path in FILES),
        ]

    async def get_file(self, request: Request) -> Response:
        body, ctype = self._files[request.path]
        headers = [
            ("Content-Security-Policy", CSP),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
        ]
        return Response(200, body, ctype, headers)

    async def get_status(self, request: Request) -> Response:
        if request.query:
            return json_response(400, {"error": "/api/status takes no parameters"})
        return json_response(200, await self.snapshot())

    # -- the parts ------------------------------------------------------------------------

    async def _spool_parts(self, now: float) -> dict[str, Any]:
        async with self._lock:
            cached = self._cached
            if cached is not None and 0 <= now - cached[0] < self.cache_s:
                return cached[1]
            parts = await trio.to_thread.run_sync(self._read_spool, now)
            self._cached = (now, parts)
            return parts

    def _read_spool(self, now: float) -> dict[str, Any]:
        spool = self.admin.spool
        last = kpis.minute_of(now)
        hour = range(last - int(st.HOUR // 60) + 1, last + 1)
        series = range(last - st.SERIES_MINUTES, last + 1)
        dims, dims_partial = spool.kpi_dimensions(hour)
        pending, pending_partial = spool.pending_by_domain()
        per_minute = spool.kpi_series(kpis.dim_key(None, None, None), series)
        return {
            "gauges": spool.queue_gauges(now),
            "split": st.split_dims(dims),
            "dims_partial": dims_partial,
            "pending": pending,
            "pending_partial": pending_partial,
            "delivered": {m: c.get("delivered", 0) for m, c in per_minute.items()},
        }

    def _alerts(self) -> dict:
        if self.alerts is None:
            return NO_ALERTS
        got = self.alerts() or {}
        return {"active": list(got.get("active", [])), "rules": list(got.get("rules", []))}

    def _lanes(self) -> tuple[dict[str, int], dict[str, float], dict[str, tuple[int, float]]]:
        """Open connections, connection backoff, and the connections and message rate
        allowed now (adaptive shaping) per provider, from delivery's lanes."""
        delivery = getattr(self.scheduler, "delivery", None)
        connections: dict[str, int] = {}
        backoff: dict[str, float] = {}
        shaping: dict[str, tuple[int, float]] = {}
        if delivery is None:
            return connections, backoff, shaping
        for (_source, provider), lane in list(delivery._lanes.items()):
            shaper = lane.shaper
            connections[provider] = connections.get(provider, 0) + shaper.active
            allowed, rate = shaping.get(provider, (0, 0.0))
            shaping[provider] = (allowed + shaper.max_connections, rate + shaper.message_rate)
        for provider in list(delivery._provider_lanes):
            left = delivery.paused_for(provider)
            if left > 0:
                backoff[provider] = left
        return connections, backoff, shaping

    def _counters(self) -> tuple[dict[str, dict[str, int]], int]:
        """Replies by provider and class, and recipients delivered, since the start."""
        replies: dict[str, dict[str, int]] = {}
        delivered = 0
        metrics = self.admin.metrics
        for family in metrics.replies.collect():
            for s in family.samples:
                if s.name.endswith("_total"):
                    by = replies.setdefault(s.labels["provider"], {})
                    by[s.labels["class"]] = by.get(s.labels["class"], 0) + int(s.value)
        for family in metrics.recipients.collect():
            for s in family.samples:
                if s.name.endswith("_total") and s.labels.get("outcome") == "delivered":
                    delivered += int(s.value)
        return replies, delivered

    def _node(self, now: float) -> dict[str, Any]:
        c = self.config
        return {
            "version": __version__,
            "pid": os.getpid(),
            "hostname": c.hostname,
            "started": self.started,
            "uptime_s": st.uptime(self.started, now),
            "data_dir": str(c.data_dir),
            "listen": {
                "producers": c.ingress.listen,
                "events": c.events.publish,
                "http": c.http.listen,
                "feedback": c.feedback.listen,
                "unsubscribe": c.unsubscribe.listen,
            },
        }

    async def snapshot(self) -> dict[str, Any]:
        """The ``/api/status`` object (docs/dashboard.md)."""
        now = self._clock()
        parts = await self._spool_parts(now)
        sched = self.scheduler
        control = getattr(sched, "control", None)
        pauses = control.listing() if control is not None else []
        alerts = self._alerts()
        waiting, in_flight, oldest = parts["gauges"]
        provider_of = sched.router.known_provider if sched is not None else (lambda d: None)
        flying = dict(sched.provider_inflight) if sched is not None else {}
        queue = st.queue_view(
            waiting,
            in_flight,
            oldest,
            parts["pending"],
            provider_of,
            flying,
            partial=parts["pending_partial"],
        )
        connections, backoff, shaping = self._lanes()
        replies, delivered_total = self._counters()
        operator = [p["name"] for p in pauses if p["scope"] == "provider"]
        split = parts["split"]
        throughput = st.throughput(parts["delivered"], now)
        throughput["delivered_since_start"] = delivered_total
        return {
            "now": now,
            "node": self._node(now),
            "queue": queue,
            "throughput": throughput,
            "providers": st.providers_view(
                split,
                connections,
                backoff,
                operator,
                replies,
                queue["by_provider"],
                shaping=shaping,
            ),
            "pauses": pauses,
            "alerts": alerts,
            "kpis": {
                "window_s": st.HOUR,
                "partial": parts["dims_partial"],
                "tenants": st.kpi_rows(split, "tenant", alerts["rules"]),
                "campaigns": st.kpi_rows(split, "campaign", alerts["rules"]),
            },
        }
