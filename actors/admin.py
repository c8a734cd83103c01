"""The admin routes of the node's HTTP server: ``/metrics`` and ``/api/kpis`` (docs/metrics.md),
``/api/pause``, ``/api/resume``, ``/api/cancel`` and ``/api/pauses`` (docs/control.md),
``/api/alerts`` (docs/alerts.md), ``/api/webhooks`` (docs/webhooks.md), ``/api/erase``
(docs/privacy.md).

Every ``/api/`` call needs ``Authorization: Bearer TOKEN`` (the token in ``[http]
token_file``), compared in constant time; a wrong or missing one gets 401 with a JSON
error and changes nothing. ``/metrics`` is open without the token when ``[http]
metrics_open`` is set and the server listens on a loopback address only.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import trio
from prometheus_client import CONTENT_TYPE_LATEST

from salvo.actors.http import Request, Response, Route
from salvo.actors.metrics import Metrics
from salvo.core import kpis
from salvo.core import pauses as pz
from salvo.core.errors import InvalidAddressError, StartupError
from salvo.core.spool import Spool

JSON = "application/json"
MAX_CONTROL_BODY = 4096  # bytes: a control request is a scope and a name


def json_response(status: int, obj: object, headers: list[tuple[str, str]] | None = None):
    body = (json.dumps(obj, separators=(",", ":"), sort_keys=True) + "\n").encode()
    return Response(status, body, JSON, headers or [])


def read_token(path: Path) -> str:
    """The admin token (made by ``salvo node`` before the actors start)."""
    try:
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupError(f"[http] token_file {path}: cannot read it: {exc}") from exc
    if len(token) < 16:
        raise StartupError(f"[http] token_file {path}: holds no token of 16 characters or more")
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Admin:
    """The routes, the token check and the KPI reads."""

    def __init__(
        self,
        token: str,
        metrics: Metrics,
        spool: Spool,
        *,
        metrics_open: bool,
        clock: Callable[[], float] = time.time,
        control=None,  # salvo.actors.control.Control
        alerts=None,  # salvo.actors.alerts.Alerts
        webhooks=None,  # salvo.actors.webhooks.Webhooks
    ) -> None:
        self.control = control
        self.erasure = None  # salvo.actors.erasure.ErasureService
        self.alerts = alerts
        self.webhooks = webhooks
        self._token = token.encode()
        self.metrics = metrics
        self.spool = spool
        self.metrics_open = metrics_open
        self._clock = clock

    def authorized(self, request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode("latin-1"), self._token)

    def routes(self) -> list[Route]:
        return [
            Route.of("GET", r"/metrics", self.get_metrics),
            Route.of("GET", r"/api/kpis", self.get_kpis),
            Route.of("GET", r"/api/pauses", self.get_pauses),
            Route.of("GET", r"/api/alerts", self.get_alerts),
            Route.of("GET", r"/api/webhooks", self.get_webhooks),
            Route.of("POST", r"/api/pause", self.post_pause, MAX_CONTROL_BODY),
            Route.of("POST", r"/api/resume", self.post_resume, MAX_CONTROL_BODY),
            Route.of("POST", r"/api/cancel", self.post_cancel, MAX_CONTROL_BODY),
            # Needs the admin role once tokens carry roles (docs/privacy.md).
            Route.of("POST", r"/api/erase", self.post_erase, MAX_CONTROL_BODY),
            Route.of("GET POST PUT PATCH DELETE", r"/api/.*", self.unknown),
        ]

    def _denied(self) -> Response:
        return json_response(
            401,
            {"error": "missing or wrong bearer token (Authorization: Bearer TOKEN)"},
            [("WWW-Authenticate", 'Bearer realm="salvo"')],
        )

    async def get_metrics(self, request: Request) -> Response:
        if not self.metrics_open and not self.authorized(request):
            return self._denied()
        return Response(200, self.metrics.text(), CONTENT_TYPE_LATEST)

    async def get_kpis(self, request: Request) -> Response:
        if not self.authorized(request):
            return self._denied()
        try:
            pairs = urllib.parse.parse_qsl(
                request.query, keep_blank_values=True, strict_parsing=bool(request.query)
            )
            query = kpis.parse_query(pairs)
        except (kpis.KpiQueryError, ValueError) as exc:
            return json_response(400, {"error": str(exc)})
        now = self._clock()
        counts = await trio.to_thread.run_sync(self.spool.kpi_counts, query.dim, query.minutes(now))
        out = kpis.compute(counts, query.window_s)
        out["filter"] = {
            "tenant": query.tenant,
            "campaign": query.campaign,
            "provider": query.provider,
        }
        out["until"] = now
        return json_response(200, out)

    async def get_alerts(self, request: Request) -> Response:
        """The active alerts and the rules (docs/alerts.md)."""
        if not self.authorized(request):
            return self._denied()
        if self.alerts is None:
            return json_response(200, {"active": [], "rules": []})
        return json_response(200, self.alerts.listing())

    async def unknown(self, request: Request) -> Response:
        if not self.authorized(request):
            return self._denied()
        return json_response(404, {"error": f"no such API: {request.method} {request.path}"})

    async def get_webhooks(self, request: Request) -> Response:
        if not self.authorized(request):
            return self._denied()
        if self.webhooks is None:
            return json_response(200, {"webhooks": [], "now": self._clock()})
        listing = await trio.to_thread.run_sync(self.webhooks.status)
        return json_response(200, {"webhooks": listing, "now": self._clock()})

    async def post_erase(self, request: Request) -> Response:
        """Erase an address from the node's data (docs/privacy.md)."""
        if not self.authorized(request):
            return self._denied()
        if self.erasure is None:
            return json_response(503, {"error": "erasure is not available on this node"})
        try:
            body = json.loads(request.body or b"null")
        except (ValueError, UnicodeDecodeError):
            return json_response(400, {"error": "the body is not JSON"})
        if not isinstance(body, dict):
            return json_response(400, {"error": 'the body must be {"address": ..., "tenant": ...}'})
        address, tenant = body.get("address"), body.get("tenant", "") or ""
        if not isinstance(address, str) or not address.strip():
            return json_response(400, {"error": "address: a non-empty string is required"})
        if not isinstance(tenant, str) or len(tenant) > 200 or not tenant.isprintable():
            return json_response(400, {"error": "tenant: at most 200 printable characters"})
        try:
            out = await self.erasure.erase(address, tenant)
        except InvalidAddressError as exc:
            return json_response(400, {"error": f"address: {exc}"})
        return json_response(200, {"erased": {"tenant": tenant, **out}})

    # -- pause, resume, cancel (docs/control.md) --------------------------------------------

    def _control_request(self, request: Request) -> tuple[dict, Response | None]:
        """The JSON object of a control call, or the response that refuses it."""
        if not self.authorized(request):
            return {}, self._denied()
        if self.control is None:
            return {}, json_response(503, {"error": "pauses are not available on this node"})
        try:
            return pz.control_body(request.body), None
        except pz.PauseError as exc:
            return {}, json_response(400, {"error": str(exc)})

    async def get_pauses(self, request: Request) -> Response:
        if not self.authorized(request):
            return self._denied()
        if self.control is None:
            return json_response(200, {"pauses": []})
        return json_response(200, {"pauses": self.control.listing()})

    async def post_pause(self, request: Request) -> Response:
        body, refused = self._control_request(request)
        if refused is not None:
            return refused
        try:
            seconds = pz.parse_for(body.get("for"))
            pz.check(body["scope"], body["name"])
            reason = str(body.get("reason") or "admin API")[:200]
            entry = await self.control.pause(body["scope"], body["name"], seconds, reason)
        except pz.PauseError as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(200, {"paused": entry.as_json()})

    async def post_resume(self, request: Request) -> Response:
        body, refused = self._control_request(request)
        if refused is not None:
            return refused
        try:
            pz.check(body["scope"], body["name"])
            was, due = await self.control.resume(body["scope"], body["name"])
        except pz.PauseError as exc:
            return json_response(400, {"error": str(exc)})
        out = {"scope": body["scope"], "name": body["name"], "was_paused": was, "due_again": due}
        return json_response(200, {"resumed": out})

    async def post_cancel(self, request: Request) -> Response:
        body, refused = self._control_request(request)
        if refused is not None:
            return refused
        try:
            pz.check(body["scope"], body["name"], pz.CANCEL_SCOPES)
            reason = str(body.get("reason") or "admin API")[:200]
            n = await self.control.cancel(body["scope"], body["name"], reason)
        except pz.PauseError as exc:
            return json_response(400, {"error": str(exc)})
        out = {"scope": body["scope"], "name": body["name"], "recipients": n}
        return json_response(200, {"cancelled": out})
