"""The admin routes of the node's HTTP server: ``/metrics`` and ``/api/kpis`` (docs/metrics.md),
``/api/pause``, ``/api/resume``, ``/api/cancel`` and ``/api/pauses`` (docs/control.md),
``/api/alerts`` (docs/alerts.md), ``/api/webhooks`` (docs/webhooks.md), ``/api/erase``
(docs/privacy.md).

Every ``/api/`` call needs ``Authorization: Bearer TOKEN``: the token in ``[http]
token_file`` (role ``admin``) or one of ``[http.tokens]``, each with its role (``read``,
``operate``, ``admin``: docs/security.md), compared in constant time. A wrong or missing
token gets 401 and changes nothing; a token whose role is too low gets 403. After
:data:`FAILURES_PER_MINUTE` failures from one address within a minute, its requests get
429 with ``Retry-After`` before any token is compared. ``/metrics`` is open without a
token when ``[http] metrics_open`` is set and the server listens on a loopback address.

Each route states the role it needs where it is listed (:meth:`Admin.routes`): wrap the
handler in ``self.guard(ROLE, handler)``; the handler then runs only for a token that
may. A handler that still calls :meth:`Admin.authorized` itself asks for ``admin``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import trio
from prometheus_client import CONTENT_TYPE_LATEST

from salvo.actors.http import Request, Response, Route
from salvo.actors.metrics import Metrics
from salvo.core import access, kpis
from salvo.core import pauses as pz
from salvo.core.authlimit import FailureLimiter, LogBudget
from salvo.core.config import Config
from salvo.core.errors import InvalidAddressError, StartupError
from salvo.core.spool import Spool

log = logging.getLogger("salvo.admin")

JSON = "application/json"
MAX_CONTROL_BODY = 4096  # bytes: a control request is a scope and a name
FAILURES_PER_MINUTE = 10  # failed authentications per client address, then 429

Tokens = list[tuple[str, bytes, str]]  # (name, token, role)


def json_response(status: int, obj: object, headers: list[tuple[str, str]] | None = None):
    body = (json.dumps(obj, separators=(",", ":"), sort_keys=True) + "\n").encode()
    return Response(status, body, JSON, headers or [])


def read_token(path: Path, where: str = "[http] token_file") -> str:
    """A token from its file (made by ``salvo node`` before the actors start)."""
    try:
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupError(f"{where} {path}: cannot read it: {exc}") from exc
    if len(token) < 16:
        raise StartupError(f"{where} {path}: holds no token of 16 characters or more")
    return token


def load_tokens(config: Config) -> Tokens:
    """Every token of the config, read from its file, with its name and role."""
    tokens = []
    for name, (path, role) in config.http_tokens().items():
        where = "[http] token_file" if name == "admin" else f"[http.tokens.{name}] file"
        tokens.append((name, read_token(path, where).encode(), role))
    return tokens


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
        tokens: str | Tokens,  # a str: the one admin token
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
        self.set_tokens(
            tokens if not isinstance(tokens, str) else [("admin", tokens.encode(), "admin")]
        )
        self.metrics = metrics
        self.spool = spool
        self.metrics_open = metrics_open
        self._clock = clock
        self.limiter = FailureLimiter(burst=FAILURES_PER_MINUTE, period=60.0)
        self._log_budget = LogBudget(lines=20, period=60.0)

    load_tokens = staticmethod(load_tokens)

    def set_tokens(self, tokens: Tokens) -> None:
        """Use these tokens from now on (at start, and on SIGHUP)."""
        self._tokens = list(tokens)

    def routes(self) -> list[Route]:
        guard = self.guard
        return [
            Route.of("GET", r"/metrics", guard("read", self.get_metrics, open=self.metrics_open)),
            Route.of("GET", r"/api/kpis", guard("read", self.get_kpis)),
            Route.of("GET", r"/api/pauses", guard("read", self.get_pauses)),
            Route.of("GET", r"/api/alerts", guard("read", self.get_alerts)),
            Route.of("GET", r"/api/webhooks", guard("read", self.get_webhooks)),
            Route.of("POST", r"/api/pause", guard("operate", self.post_pause), MAX_CONTROL_BODY),
            Route.of("POST", r"/api/resume", guard("operate", self.post_resume), MAX_CONTROL_BODY),
            Route.of("POST", r"/api/cancel", guard("operate", self.post_cancel), MAX_CONTROL_BODY),
            Route.of("POST", r"/api/erase", guard("admin", self.post_erase), MAX_CONTROL_BODY),
            Route.of("GET POST PUT PATCH DELETE", r"/api/.*", guard("read", self.unknown)),
        ]

    # -- authentication and roles -------------------------------------------------------

    def guard(self, role: str, handler, *, open: bool = False):
        """``handler`` behind the token check: it runs for a token of ``role`` or above
        (or for anyone when ``open``); others get 401, 403 or 429."""
        if role not in access.ROLES:
            raise ValueError(f"unknown role {role!r}")

        async def guarded(request: Request) -> Response:
            if not open:
                refused = self.check(request, role)
                if refused is not None:
                    return refused
            return await handler(request)

        guarded.role = role  # type: ignore[attr-defined]
        guarded.__name__ = getattr(handler, "__name__", "guarded")
        return guarded

    def check(self, request: Request, role: str) -> Response | None:
        """None when the request's token may call a route of ``role``; else the refusal."""
        address = request.peer.rpartition(":")[0] or request.peer
        now = self._clock()
        wait = self.limiter.retry_after(address, now)
        if wait:
            self._log_refusal(now, "too many failed authentications", address, request)
            return json_response(
                429,
                {"error": f"too many failed authentications from {address}; try in {wait} s"},
                [("Retry-After", str(wait))],
            )
        found = self._match(request)
        if found is None:
            self.limiter.failed(address, now)
            self._log_refusal(now, "missing or wrong token", address, request)
            return self._denied()
        name, have = found
        if not access.role_allows(have, role):
            return json_response(
                403,
                {
                    "error": f"token {name!r} has the role {have}; "
                    f"{request.method} {request.path} needs {role}"
                },
            )
        return None

    def authorized(self, request: Request) -> bool:
        """Whether the request carries an ``admin`` token (for handlers that check for
        themselves; a route states its role with :meth:`guard` instead)."""
        return self.check(request, "admin") is None

    def _match(self, request: Request) -> tuple[str, str] | None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        given_bytes = given.strip().encode("latin-1", "replace")
        found = None
        for name, token, role in self._tokens:  # every one compared: no early exit
            if hmac.compare_digest(given_bytes, token) and found is None:
                found = (name, role)
        return found

    def _log_refusal(self, now: float, what: str, address: str, request: Request) -> None:
        show, held = self._log_budget.take(now)
        if show:
            more = f" ({held} more not logged)" if held else ""
            log.warning(
                "admin API: %s from %s (%s %s)%s", what, address, request.method, request.path, more
            )

    def _denied(self) -> Response:
        return json_response(
            401,
            {"error": "missing or wrong bearer token (Authorization: Bearer TOKEN)"},
            [("WWW-Authenticate", 'Bearer realm="salvo"')],
        )

    async def get_metrics(self, request: Request) -> Response:
        return Response(200, self.metrics.text(), CONTENT_TYPE_LATEST)

    async def get_kpis(self, request: Request) -> Response:
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
        if self.alerts is None:
            return json_response(200, {"active": [], "rules": []})
        return json_response(200, self.alerts.listing())

    async def unknown(self, request: Request) -> Response:
        return json_response(404, {"error": f"no such API: {request.method} {request.path}"})

    async def get_webhooks(self, request: Request) -> Response:
        if self.webhooks is None:
            return json_response(200, {"webhooks": [], "now": self._clock()})
        listing = await trio.to_thread.run_sync(self.webhooks.status)
        return json_response(200, {"webhooks": listing, "now": self._clock()})

    async def post_erase(self, request: Request) -> Response:
        """Erase an address from the node's data (docs/privacy.md)."""
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
        if self.control is None:
            return {}, json_response(503, {"error": "pauses are not available on this node"})
        try:
            return pz.control_body(request.body), None
        except pz.PauseError as exc:
            return {}, json_response(400, {"error": str(exc)})

    async def get_pauses(self, request: Request) -> Response:
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
