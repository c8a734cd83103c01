"""Providers: destination domains grouped by who hosts their mail, so they share limits.

Every Google Workspace domain is delivered to Google's MX hosts, and Google counts what
one source address sends to all of them together. So a domain is classified by its
resolved MX host names, not by its name (KumoMTA's "site", PowerMTA's "mx rollup"):

1. the first provider with a pattern (a glob, ``*.google.com``) matching an MX host name,
   host by host in preference order: that provider's name (``google``);
2. else the MX set itself: ``mx:`` and the sorted, lower-cased host names
   (``mx:mx1.example.net,mx2.example.net``), so domains sharing MX hosts share a queue;
3. a static route (``[routes]``) is its own provider: ``route:host:port``.

Providers of kinds 2 and 3 take the ``default`` provider's limits. The built-in table
(:data:`DEFAULT_PROVIDERS`) is data: ``[providers.NAME]`` in the config overrides any key
of a built-in provider or adds a provider. Its limits are conservative starting points,
not measured truths: tune them from your own deferral rates.

Pure: no DNS here; the caller passes the MX host names it resolved.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from .shaping import Limits

__all__ = [
    "DEFAULT_PROVIDERS",
    "Provider",
    "ProviderTable",
    "mx_key",
    "route_key",
]

# A 421 is always a throttle signal (salvo.core.shaping.is_throttle); these add the
# 4xx (and some 5xx-looking) replies by which each provider says "too fast".
DEFAULT_PROVIDERS: dict[str, dict[str, Any]] = {
    "google": {
        "mx": ["*.google.com", "*.googlemail.com"],
        "throttle": [r"\b4\.7\.28\b", r"unusual rate", r"\b4\.7\.0\b.*rate"],
        "max_connections": 10,
        "max_messages_per_connection": 50,
        "max_new_connections_per_minute": 60,
        "max_messages_per_second": 20,
    },
    "microsoft": {
        "mx": ["*.protection.outlook.com", "*.hotmail.com", "*.outlook.com"],
        "throttle": [r"\b4\.7\.500\b", r"server busy", r"\b4\.7\.65\d\b", r"\bS3150\b"],
        "max_connections": 5,
        "max_messages_per_connection": 20,
        "max_new_connections_per_minute": 30,
        "max_messages_per_second": 10,
    },
    "yahoo": {  # Yahoo, AOL, AT&T, Verizon
        "mx": ["*.yahoodns.net", "*.yahoo.com", "*.aol.com"],
        "throttle": [r"\bTSS?0\d\b", r"temporarily deferred"],
        "max_connections": 5,
        "max_messages_per_connection": 20,
        "max_new_connections_per_minute": 30,
        "max_messages_per_second": 10,
    },
    "apple": {  # iCloud, me.com, mac.com
        "mx": ["*.mail.icloud.com", "*.icloud.com"],
        "throttle": [r"\b4\.7\.1\b.*(rate|too many)"],
        "max_connections": 5,
        "max_messages_per_connection": 20,
        "max_new_connections_per_minute": 20,
        "max_messages_per_second": 5,
    },
    "gmx": {  # GMX, Web.de, mail.com (United Internet)
        "mx": ["*.gmx.net", "*.gmx.com", "*.web.de", "*.mail.com"],
        "throttle": [r"too many (connections|messages)", r"\b4\.7\.0\b.*(rate|limit)"],
        "max_connections": 3,
        "max_messages_per_connection": 20,
        "max_new_connections_per_minute": 20,
        "max_messages_per_second": 5,
    },
    "mailru": {
        "mx": ["*.mail.ru"],
        "throttle": [r"ratelimit", r"too many"],
        "max_connections": 5,
        "max_messages_per_connection": 20,
        "max_new_connections_per_minute": 20,
        "max_messages_per_second": 5,
    },
    "yandex": {
        "mx": ["*.yandex.ru", "*.yandex.net"],
        "throttle": [r"try again later", r"too many"],
        "max_connections": 5,
        "max_messages_per_connection": 20,
        "max_new_connections_per_minute": 20,
        "max_messages_per_second": 5,
    },
    "zoho": {
        "mx": ["*.zoho.com", "*.zoho.eu", "*.zoho.in", "*.zohomail.com"],
        "throttle": [r"rate limit"],
        "max_connections": 3,
        "max_messages_per_connection": 20,
        "max_new_connections_per_minute": 10,
        "max_messages_per_second": 3,
    },
    "fastmail": {
        "mx": ["*.messagingengine.com"],
        "throttle": [r"rate limit"],
        "max_connections": 3,
        "max_messages_per_connection": 20,
        "max_new_connections_per_minute": 10,
        "max_messages_per_second": 3,
    },
    "proton": {
        "mx": ["*.protonmail.ch", "*.proton.ch"],
        "throttle": [r"rate limit", r"too many"],
        "max_connections": 3,
        "max_messages_per_connection": 20,
        "max_new_connections_per_minute": 10,
        "max_messages_per_second": 3,
    },
    "comcast": {
        "mx": ["*.comcast.net"],
        "throttle": [r"\bRL\d{6}\b", r"\b4\.2\.0\b.*throttl"],
        "max_connections": 5,
        "max_messages_per_connection": 100,
        "max_new_connections_per_minute": 20,
        "max_messages_per_second": 5,
    },
}

_LIMIT_KEYS = frozenset(f.name for f in fields(Limits))
PROVIDER_KEYS = _LIMIT_KEYS | {"mx", "throttle", "max_ready", "tls"}
TLS_POLICIES = ("opportunistic", "required", "off")


@dataclass(frozen=True)
class Provider:
    """One provider: the MX patterns that recognize it, its limits, its throttle replies.

    ``max_ready``: how many recipients of this provider may be in flight in the node at
    once (0: the scheduler's default share of ``[delivery] max_ready``).
    """

    name: str
    mx: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    throttle: tuple[re.Pattern[str], ...] = ()
    max_ready: int = 0
    tls: str = "opportunistic"  # docs/smtp.md: opportunistic, required or off
    _globs: tuple[re.Pattern[str], ...] = field(default=(), repr=False, compare=False)

    def matches(self, host: str) -> bool:
        """A host name matches one of the provider's MX patterns."""
        return any(g.fullmatch(host) for g in self._globs)


def _host(name: str) -> str:
    return name.rstrip(".").lower()


def mx_key(hosts: Iterable[str]) -> str:
    """The provider key of an MX set that matched no pattern: ``mx:`` and its hosts."""
    return "mx:" + ",".join(sorted({_host(h) for h in hosts}))


def route_key(host: str, port: int) -> str:
    """The provider key of a static route target."""
    return f"route:{_host(host)}:{port}"


def make_provider(name: str, values: Mapping[str, Any], base: Limits) -> Provider:
    """A provider from plain values (the table's or the config's); ``base`` fills the
    limits not given. ValueError names the key that cannot be used."""
    unknown = set(values) - PROVIDER_KEYS
    if unknown:
        raise ValueError(f"{sorted(unknown)[0]}: unknown key")
    patterns = tuple(_host(p) for p in values.get("mx", ()))
    for pattern in patterns:
        if not pattern or any(c.isspace() for c in pattern):
            raise ValueError(f"mx: {pattern!r} is not a host name pattern like '*.example.net'")
    throttle = []
    for text in values.get("throttle", ()):
        try:
            throttle.append(re.compile(text, re.IGNORECASE))
        except re.error as exc:
            raise ValueError(f"throttle: {text!r} is not a regular expression: {exc}") from None
    limits = {k: v for k, v in values.items() if k in _LIMIT_KEYS}
    for key, value in limits.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{key}: {value!r} must be a number, 0 or more")
    for key in ("max_connections", "max_messages_per_connection"):
        if key in limits and limits[key] < 1:
            raise ValueError(f"{key}: must be 1 or more")
    max_ready = values.get("max_ready", 0)
    if isinstance(max_ready, bool) or not isinstance(max_ready, int) or max_ready < 0:
        raise ValueError("max_ready: 0 (the default share) or more")
    tls = values.get("tls", "opportunistic")
    if tls not in TLS_POLICIES:
        raise ValueError(f"tls: {tls!r}; use one of {', '.join(TLS_POLICIES)}")
    merged = Limits(**{**{f.name: getattr(base, f.name) for f in fields(Limits)}, **limits})
    return Provider(
        name=name,
        mx=patterns,
        limits=merged,
        throttle=tuple(throttle),
        max_ready=max_ready,
        tls=tls,
        _globs=tuple(re.compile(fnmatch.translate(p)) for p in patterns),
    )


class ProviderTable:
    """Classifies destinations into providers and knows each provider's settings."""

    def __init__(self, providers: Sequence[Provider], default: Provider) -> None:
        self.providers = {p.name: p for p in providers}
        self.default = default
        self._ordered = tuple(p for p in providers if p.mx)
        self._others: dict[str, Provider] = {}

    @classmethod
    def build(
        cls,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        base: Limits | None = None,
        builtin: Mapping[str, Mapping[str, Any]] = DEFAULT_PROVIDERS,
    ) -> ProviderTable:
        """The built-in table with ``overrides`` applied (a key replaces the built-in
        value; a new name adds a provider, matched before the built-in ones).
        ``overrides["default"]`` sets the limits of providers without their own; ``base``
        is what it starts from (``[delivery]``'s values). ValueError names the provider."""
        overrides = dict(overrides or {})
        base = base or Limits()
        try:
            default = make_provider("default", overrides.pop("default", {}), base)
        except ValueError as exc:
            raise ValueError(f"[providers.default] {exc}") from None
        if default.mx:
            raise ValueError("[providers.default] mx: the default provider has no patterns")
        providers = []
        names = [n for n in overrides if n not in builtin] + list(builtin)
        for name in names:
            if name.startswith(("mx:", "route:")) or not name:
                raise ValueError(
                    f"[providers.{name}]: a provider name cannot start with mx: or route:"
                )
            values = {**builtin.get(name, {}), **overrides.get(name, {})}
            try:
                providers.append(make_provider(name, values, default.limits))
            except ValueError as exc:
                raise ValueError(f"[providers.{name}] {exc}") from None
        return cls(providers, default)

    def match(self, mx_hosts: Sequence[str]) -> Provider | None:
        """The first provider whose pattern matches an MX host, hosts in order."""
        for host in mx_hosts:
            name = _host(host)
            for provider in self._ordered:
                if provider.matches(name):
                    return provider
        return None

    def classify(self, mx_hosts: Sequence[str]) -> str:
        """The provider key of a domain whose MX hosts (in preference order) are given."""
        provider = self.match(mx_hosts)
        return provider.name if provider is not None else mx_key(mx_hosts)

    def get(self, key: str) -> Provider:
        """The provider for a key from :meth:`classify` or :func:`route_key`: a named one,
        or the default provider's settings under that key's name."""
        provider = self.providers.get(key) or self._others.get(key)
        if provider is None:
            d = self.default
            provider = self._others[key] = Provider(
                key, (), d.limits, d.throttle, d.max_ready, d.tls
            )
        return provider
