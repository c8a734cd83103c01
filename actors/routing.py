"""Routing: where each signed message goes, and which provider that is (docs/routing.md).

A destination domain has a static route (``[routes]``: one host, its own provider) or is
delivered to its MX hosts, resolved by :class:`~salvo.actors.resolver.Resolver` with one
lookup task per domain at a time while the messages for it wait; the MX set names the
provider (salvo.core.providers). A failed lookup ends its messages as DNS said: bounced
when permanent (null MX, NXDOMAIN, only refused hosts), else deferred. The provider of
each domain is remembered so that the scheduler can hold back a provider's recipients
before they are signed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from salvo.actors.delivery import Delivery, Message, Result, RouteSettings
from salvo.actors.resolver import Resolver
from salvo.core.config import Config, PoolSection
from salvo.core.mx import FailureReason, MXPlan, RouteFailure
from salvo.core.providers import ProviderTable, route_key
from salvo.core.smtp import Outcome, Scope, Status

__all__ = ["DOMAIN_CACHE", "Router"]

log = logging.getLogger("salvo.scheduler")

DOMAIN_CACHE = 100_000  # domains whose route and provider are remembered (cleared when full)


class Router:
    """Sends messages to delivery by static route or MX; see the module docstring.

    ``on_routed(message, provider)`` is called when a message is queued for a provider;
    ``report(result)`` when routing itself ended a message (DNS said no).
    """

    def __init__(
        self,
        config: Config,
        delivery: Delivery,
        providers: ProviderTable,
        settings: dict[str, RouteSettings],
        resolver: Resolver,
        on_routed: Callable[[Message, str], None],
        report: Callable[[Result], None],
    ) -> None:
        self.config = config
        self.delivery = delivery
        self.settings = settings
        self.resolver = resolver
        self.providers = providers
        self._on_routed = on_routed
        self._report = report
        self._resolving: dict[str, list[tuple[Message, str]]] = {}
        self._domain_provider: dict[str, str] = {}
        self._static: dict[tuple[str, tuple[str, int]], tuple] = {}
        self._routes: dict[str, tuple[str, int] | None] = {}

    def known_provider(self, domain: str) -> str | None:
        """The provider of a domain, if known before its message is made: its static route,
        or the provider its last MX lookup gave."""
        route = self._route(domain)
        if route is not None:
            return route_key(*route)
        return self._domain_provider.get(domain.rstrip(".").lower())

    def send(self, message: Message, domain: str, pool: str) -> None:
        """Queue a signed message for its destination."""
        route = self._route(domain)
        if route is None:
            self._route_by_mx(message, domain, pool)
            return
        host, port = route
        message.hosts = [(host, host, port)]
        provider, spec, settings = self._static_target(pool, route)
        self._on_routed(message, provider)
        self.delivery.send(
            message, host, port, spec.sources, settings, provider=provider, weights=spec.weights
        )

    def _route(self, domain: str) -> tuple[str, int] | None:
        """``config.route(domain)``, remembered: it is asked for every message."""
        try:
            return self._routes[domain]
        except KeyError:
            if len(self._routes) >= DOMAIN_CACHE:
                self._routes.clear()
            route = self._routes[domain] = self.config.route(domain)
            return route

    def _static_target(
        self, pool: str, route: tuple[str, int]
    ) -> tuple[str, PoolSection, RouteSettings]:
        """The provider, pool and route settings (with the SMTP AUTH of the route target, if
        any) of a static route, made once per (pool, route)."""
        key = (pool, route)
        target = self._static.get(key)
        if target is None:
            settings = self.settings[pool]
            credentials = self.config.route_credentials(*route)
            if credentials is not None:
                settings = replace(settings, auth=credentials)
            target = self._static[key] = (route_key(*route), self.config.pools[pool], settings)
        return target

    def _route_by_mx(self, message: Message, domain: str, pool: str) -> None:
        """Queue a message for its domain's MX lookup; one lookup task per domain at a
        time (the resolver's cache and coalescing spare DNS the rest)."""
        domain = domain.rstrip(".").lower()
        waiting = self._resolving.get(domain)
        if waiting is None:
            waiting = self._resolving[domain] = []
            self.delivery.nursery.start_soon(self._resolve, domain)
        waiting.append((message, pool))

    async def _resolve(self, domain: str) -> None:
        try:
            try:
                result = await self.resolver.route(domain)
            except Exception as exc:  # never leave the waiting messages without an outcome
                log.exception("MX routing of %s failed", domain)
                result = RouteFailure(
                    domain, FailureReason.TEMPORARY, False, f"{domain}: routing: {exc}", (4, 4, 3)
                )
        finally:  # cancelled (the node stops): the messages stay in flight, drain hands back
            waiting = self._resolving.pop(domain, [])
        for message, pool in waiting:
            self._send_routed(message, pool, result)

    def _send_routed(self, message: Message, pool: str, result: MXPlan | RouteFailure) -> None:
        """Deliver on the plan's first destination, or end the recipient as DNS said."""
        if isinstance(result, RouteFailure):
            status = Status.BOUNCED if result.permanent else Status.DEFERRED
            outcome = Outcome(message.rcpt, status, Scope.SITE, None, result.esc, result.text)
            self._report(Result(message, outcome, "", ""))
            return
        message.hosts = result.destinations()
        _name, address, port = message.hosts[0]
        provider = self.providers.classify([name for name, _address, _port in message.hosts])
        if len(self._domain_provider) >= DOMAIN_CACHE:
            self._domain_provider.clear()
        self._domain_provider[result.domain.rstrip(".").lower()] = provider
        self._on_routed(message, provider)
        spec = self.config.pools[pool]
        self.delivery.send(
            message,
            address,
            port,
            spec.sources,
            self.settings[pool],
            provider=provider,
            weights=spec.weights,
        )
