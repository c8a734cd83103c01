"""The node's configuration: TOML, validated into typed structs, with an embedded default.

``load_config(None)`` is the embedded default: ``salvo node`` starts with no file. A file
overrides any part of it; a wrong key or value is a :class:`ConfigError` that names it
(``config: [ingress] listn: unknown key``). ``salvo.example.toml`` at the repository root is
the annotated example; every key is described there and in ``docs/config.md``.

Relative paths (``data_dir``, DKIM key files) are relative to the config file's folder, or
to the working directory for the embedded default.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

import msgspec

from salvo.core import access, host
from salvo.core import alerts as alerts_mod
from salvo.core import quotas as quotas_mod
from salvo.core.providers import ProviderTable
from salvo.core.shaping import Limits
from salvo.core.smtp import SMTPTimeouts
from salvo.ext.errors import SalvoError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


class ConfigError(SalvoError, ValueError):
    """The configuration cannot be used; the message names the key and what is wrong."""


def parse_duration(value: int | float | str, *, key: str = "duration") -> float:
    """Seconds from ``300``, ``"300s"``, ``"5m"``, ``"1h"``, ``"5d"``, ``"250ms"``."""
    if isinstance(value, bool):
        raise ConfigError(f"config: {key}: expected a duration like 300, '5m' or '5d'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if not match:
            raise ConfigError(f"config: {key}: {value!r} is not a duration like '90s', '5m', '5d'")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 0:
        raise ConfigError(f"config: {key}: a duration cannot be negative")
    return seconds


def parse_size(value: int | str, *, key: str = "size") -> int:
    """Bytes from ``1048576``, ``"64KiB"``, ``"32MB"``, ``"1GiB"``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = re.match(r"^\s*(\d+)\s*([KMGT]i?B|B)?\s*$", str(value), re.IGNORECASE)
    if not match:
        raise ConfigError(f"config: {key}: {value!r} is not a size like 32MiB")
    unit = (match.group(2) or "B").upper()
    base = 1024 if "I" in unit else 1000
    power = "BKMGT".index(unit[0])
    return int(match.group(1)) * base**power


Duration = int | float | str
Size = int | str


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


class NodeSection(_Section):
    data_dir: str = "salvo-data"
    signers: int = 0  # 0: one per core
    hostname: str = ""  # "": this machine's fully qualified name


class IngressSection(_Section):
    listen: str = "tcp://127.0.0.1:5557"
    max_job_size: Size = "32MiB"
    max_recipients: int = 10_000
    curve: bool = False  # producers need a key of [producers] (docs/security.md)
    curve_secret_key: str = "keys/node.key_secret"  # the node's CURVE key; made on first start


class EventsSection(_Section):
    publish: str = "tcp://127.0.0.1:5558"
    log: bool = True  # rotating JSONL files in <data_dir>/events/
    log_max_size: Size = "64MiB"
    log_keep: int = 10
    curve: bool = False  # subscribers need a key of [subscribers]; the node key of [ingress]


class SpoolSection(_Section):
    max_size: Size = "64GiB"  # the map may grow up to this; then jobs get "retry"
    # The old name of [retention] finished (docs/privacy.md); give one of the two.
    retention: Duration | None = None
    idempotency_window: Duration = "7d"
    # Encryption at rest (docs/spool.md). None: as the data dir records it (a new one
    # encrypts); true turns it on for a data dir in clear; false is refused once on.
    encrypt: bool | None = None
    master_key_file: str = "keys/spool.master"  # made on first start if missing
    master_key_env: str = ""  # a variable holding the key (base64) instead of the file


class RetentionSection(_Section):
    """``[retention]``: how long personal data is kept (docs/privacy.md)."""

    events: Duration = "30d"  # event log files; "" or 0: by count only ([events] log_keep)
    finished: Duration | None = None  # a finished job's small record (default 7d)


class ClusterSection(_Section):
    redis: str = ""  # "": this node runs alone (no Redis needed)
    node_name: str = ""  # "": the machine's host name; unique in the cluster
    prefix: str = "salvo"  # of every Redis key: several clusters may share one Redis
    connect_timeout: Duration = "1s"
    command_timeout: Duration = "2s"
    claim_ttl: Duration = "1h"  # how long a job id stays claimed cluster-wide
    when_down: str = "retry"  # jobs while Redis is unreachable: "retry" or "accept"
    stream_max: int = 100_000  # suppression stream entries kept (each one a batch)
    lease_ttl: Duration = "15s"  # a dead node's connection leases expire after this
    expected_nodes: int = 1  # share of the limits while Redis is down, before any contact


class DkimKey(_Section):
    selector: str
    private_key: str
    algorithm: str = "rsa-sha256"
    canonicalization: str = "relaxed/relaxed"


class PoolSection(_Section):
    sources: list[str] = []  # [] = the system's choice of source address
    weights: list[int] = []  # parallel to sources; [] = equal weights
    ehlo: str = ""  # "": the node's hostname
    warmup: dict[str, str] = {}  # source address -> [warmup.NAME] plan it follows

    def weighted_sources(self) -> list[tuple[str, int]]:
        """(address, weight) for each source; equal weights when none are given."""
        weights = self.weights or [1] * len(self.sources)
        return list(zip(self.sources, weights, strict=True))


class WarmupPlan(_Section):
    """``[warmup.NAME]``: a warm-up plan (docs/warmup.md)."""

    daily: list[int]  # messages per day per provider, one entry per step
    max_deferral_rate: float = 0.05
    max_bounce_rate: float = 0.02
    max_complaint_rate: float = 0.001
    severe_factor: float = 2.0  # a rate above limit x this steps back one step
    min_volume: int = 100  # a day decides with at least min(this, the step's cap) messages
    timezone: str = "UTC"  # where a day begins and ends


class RouteAuth(_Section):
    """``[route_auth."host:port"]``: SMTP AUTH (PLAIN/LOGIN, over TLS only) for a
    ``[routes]`` target, e.g. a smarthost. The password is given, or read from a file."""

    username: str
    password: str = ""
    password_file: str = ""


class ProviderSection(_Section):
    """``[providers.NAME]``: any key left out keeps the built-in (or default) value."""

    tls: str | None = None  # "opportunistic" (default), "required" or "off"
    mx: list[str] | None = None  # MX host patterns: ["*.google.com"]; replaces the built-in
    throttle: list[str] | None = None  # regexes on 4xx reply text; replaces the built-in
    max_connections: int | None = None
    max_messages_per_connection: int | None = None
    max_new_connections_per_minute: float | None = None
    max_messages_per_second: float | None = None
    max_messages_per_hour: float | None = None
    total_max_messages_per_second: float | None = None  # all sources and nodes together
    total_max_connections: int | None = None  # all sources and nodes together
    max_ready: int | None = None
    idle_timeout: Duration | None = None
    backoff_time: Duration | None = None
    recovery_interval: Duration | None = None
    connect_backoff: Duration | None = None
    max_connect_backoff: Duration | None = None

    def values(self, name: str) -> dict:
        """The keys given, durations in seconds."""
        out = {}
        for key in self.__struct_fields__:
            value = getattr(self, key)
            if value is None:
                continue
            if key in _PROVIDER_DURATIONS:
                value = parse_duration(value, key=f"[providers.{name}] {key}")
            out[key] = value
        return out


_PROVIDER_DURATIONS = frozenset(
    ("idle_timeout", "backoff_time", "recovery_interval", "connect_backoff", "max_connect_backoff")
)


class TrafficSection(_Section):
    pool: str = "default"
    first_retry: Duration = "5m"
    max_retry: Duration = "1h"
    expire_after: Duration = "5d"
    verp: bool = False  # per-recipient return paths b-TOKEN@ a [feedback] domain
    list_unsubscribe: bool = False  # List-Unsubscribe (URL and mailto) + one-click Post
    verp_domain: str = ""  # "": the first of [feedback] domains
    # The bulk-sender rules (docs/doctor.md): jobs need a DKIM key for their From domain
    # and one-click unsubscribe; salvo doctor runs at start (strict: must pass).
    bulk: bool = False
    strict: bool = False


class DeliverySection(_Section):
    max_connections: int = 32  # per (source, provider) without limits of its own
    max_messages_per_connection: int = 1000
    connect_timeout: Duration = "30s"
    command_timeout: Duration = "5m"
    data_timeout: Duration = "10m"
    idle_timeout: Duration = "5s"
    max_ready: int = 4096  # messages claimed from the spool and not yet finished, at most
    max_connections_total: int = 2000  # across every provider and source; 0 = no cap


class DnsSection(_Section):
    """MX routing: where DNS questions go and which answers may be used."""

    nameservers: list[str] = []  # "host" or "host:port", IPv6 as "[::1]:5353"; [] = resolv.conf
    timeout: Duration = "10s"  # one lookup (one name and type), over every try
    max_mx_hosts: int = 5  # hosts tried per attempt, in preference order
    allow_private_destinations: bool = False  # tests and labs only
    cache_size: int = 10_000  # answers kept (positive and negative, for their TTL)
    smtp_port: int = 25  # the port of MX hosts; tests and labs only

    def nameserver_addresses(self) -> list[tuple[str, int]]:
        """The nameservers as (address, port); [] = the system's /etc/resolv.conf."""
        return [_nameserver(value) for value in self.nameservers]


def _nameserver(value: str) -> tuple[str, int]:
    """``"127.0.0.1"``, ``"127.0.0.1:5353"``, ``"::1"``, ``"[::1]:5353"`` -> (address, port)."""
    text = value.strip()
    port = 53
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(value)
        if rest:
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    else:
        host = text
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(value)
    return host, port


def _validate_dns(dns: DnsSection) -> None:
    for value in dns.nameservers:
        try:
            _nameserver(value)
        except ValueError:
            raise ConfigError(
                f"config: [dns] nameservers: {value!r} is not an IP address with an optional "
                "port, like '127.0.0.1', '127.0.0.1:5353' or '[::1]:5353'"
            ) from None
    if parse_duration(dns.timeout, key="[dns] timeout") <= 0:
        raise ConfigError("config: [dns] timeout: must be more than 0")
    if dns.max_mx_hosts < 1:
        raise ConfigError("config: [dns] max_mx_hosts: 1 or more")
    if dns.cache_size < 0:
        raise ConfigError("config: [dns] cache_size: 0 (no cache) or more")
    if not 0 < dns.smtp_port < 65536:
        raise ConfigError("config: [dns] smtp_port: a port from 1 to 65535")


class FeedbackSection(_Section):
    """``[feedback]``: the inbound listener for bounces, complaints and mailto unsubscribes,
    and the policy that applies them (docs/feedback.md). The listener runs only when
    ``listen`` and ``domains`` are both set."""

    listen: str = ""  # "host:port"; "" = no listener
    domains: list[str] = []  # the feedback (bounce) domains: RCPT for anything else is 550
    # local parts taken in those domains, beside b-TOKEN and u-TOKEN
    mailboxes: list[str] = msgspec.field(default_factory=lambda: ["postmaster", "abuse", "fbl"])
    secret_file: str = "keys/feedback.secret"  # created on first start if missing
    max_message_size: Size = "10MiB"
    max_connections: int = 100
    max_messages_per_connection: int = 100
    command_timeout: Duration = "5m"  # a whole command line, from its first byte
    data_timeout: Duration = "10m"  # a whole message, from the 354
    max_pending_reports: int = 10_000  # received, not yet processed; past it: 452
    max_pending_size: Size = "256MiB"
    soft_bounce_limit: int = 5  # soft bounces of one address within the window: suppressed
    soft_bounce_window: Duration = "14d"


class UnsubscribeSection(_Section):
    """``[unsubscribe]``: the one-click unsubscribe endpoint (HTTP; TLS at a proxy)."""

    listen: str = ""  # "host:port"; "" = no endpoint
    base_url: str = ""  # the public https://... the List-Unsubscribe URLs start with
    max_connections: int = 200
    request_timeout: Duration = "10s"  # a whole request, from its first byte


class HttpSection(_Section):
    """``[http]``: the node's admin API, ``/metrics`` and KPIs (docs/metrics.md); off
    unless ``listen`` is set. TLS is the operator's proxy's."""

    listen: str = ""  # "host:port"; "" = no server
    token_file: str = "keys/http.token"  # the admin bearer token; made on first start
    metrics_open: bool = True  # /metrics without the token when listening on loopback
    tokens: dict[str, HttpToken] = {}  # more tokens, each with a role; token_file is admin
    max_connections: int = 100
    request_timeout: Duration = "10s"  # a whole request, from its first byte


class HttpToken(_Section):
    """``[http.tokens.NAME]``: one more bearer token of the admin API, with its role."""

    file: str  # made on first start if missing, like [http] token_file
    role: str = "read"  # read, operate or admin (docs/security.md)


class ProducerSection(_Section):
    """``[producers.NAME]``: a producer allowed on a CURVE ingress (docs/security.md)."""

    public_key: str  # a key file of `salvo keys generate` (NAME.key)
    tenants: list[str]  # the tenants it may send for; "*": any
    # Quotas of this producer's jobs, whatever their tenant (core/quotas.py); None: none.
    max_recipients_per_hour: int | None = None
    max_recipients_per_day: int | None = None
    max_jobs_in_flight: int | None = None


class TenantSection(_Section):
    """``[tenants.NAME]`` (``[tenants.default]``: every other tenant): ingress quotas
    (core/quotas.py, docs/security.md); None: unlimited."""

    max_recipients_per_hour: int | None = None
    max_recipients_per_day: int | None = None
    max_jobs_in_flight: int | None = None


class SubscriberSection(_Section):
    """``[subscribers.NAME]``: an events subscriber allowed on a CURVE events socket."""

    public_key: str


class AlertSection(_Section):
    """One ``[[alerts]]`` rule (docs/alerts.md): ``kpi`` of ``scope`` above ``above`` over
    ``window`` with at least ``min_volume`` sent; ``action`` pause or notify."""

    kpi: str
    scope: str
    above: float
    window: str = ""  # "": 1h; node rules read a gauge now and take none
    min_volume: int | None = None  # None: 1000 (0 for node rules)
    action: str = "notify"
    name: str = ""  # "": kpi_scope_action


class AlertingSection(_Section):
    """``[alerting]``: whether the default rules apply, and how often node gauges are read."""

    # None: the defaults apply when the config has no [[alerts]]; true: beside them too;
    # false: never (``alerts = []`` turns them off as well).
    defaults: bool | None = None
    every: Duration = "10s"  # node gauges (queue age, spool space) are read this often


def _validate_alerts(config: Config) -> None:
    parse_duration(config.alerting.every, key="[alerting] every")
    if parse_duration(config.alerting.every) <= 0:
        raise ConfigError("config: [alerting] every: must be more than 0")
    try:
        config.alert_rules()
    except alerts_mod.RuleError as exc:
        raise ConfigError(f"config: {exc}") from None


class TemplatesSection(_Section):
    """``[templates]``: bounds on the work one recipient's render may do (docs/templates.md);
    past either, the recipient is refused at intake (``template-error``) or fails at send."""

    max_loop_items: int = 1000  # items of any one {% for %} loop
    max_output: int = 1_000_000  # characters of each rendered field (subject, text, html...)


class ContentSection(_Section):
    """``[content]``: content scoring at intake by SpamAssassin's spamd (docs/content.md);
    off unless ``spamassassin`` is set."""

    spamassassin: str = ""  # spamd's "host:port" (port 783 when left out); "" = off
    reject_at: float = 5.0  # a template scoring this or more: the job gets "error"
    warn_at: float = 3.0  # this or more (below reject_at): accepted, a content_warning event
    timeout: Duration = "10s"  # one spamd exchange, connect to last byte
    when_down: str = "accept"  # spamd down, slow or answering garbage: "accept" or "refuse"
    max_size: Size = "500KiB"  # of the sample sent to spamd; the rest is cut off
    max_connections: int = 4  # spamd exchanges at once
    cache_size: int = 10_000  # template scores kept in memory

    def address(self) -> tuple[str, int]:
        """spamd's (host, port)."""
        value = self.spamassassin
        if value.count(":") == 1 or value.startswith("["):
            return listen_address(value, key="[content] spamassassin")
        return value, 783


def _validate_content(content: ContentSection) -> None:
    if content.spamassassin:
        content.address()
    if not content.warn_at <= content.reject_at:
        raise ConfigError("config: [content] warn_at: must not be above reject_at")
    if content.when_down not in ("accept", "refuse"):
        raise ConfigError("config: [content] when_down: 'accept' or 'refuse'")
    if parse_duration(content.timeout, key="[content] timeout") <= 0:
        raise ConfigError("config: [content] timeout: must be more than 0")
    if parse_size(content.max_size, key="[content] max_size") < 1024:
        raise ConfigError("config: [content] max_size: at least 1KiB")
    if content.max_connections < 1:
        raise ConfigError("config: [content] max_connections: 1 or more")
    if content.cache_size < 0:
        raise ConfigError("config: [content] cache_size: 0 (no cache) or more")


def _validate_spool_keys(config: Config) -> None:
    spool = config.spool
    if not spool.master_key_file and not spool.master_key_env:
        raise ConfigError("config: [spool] master_key_file: a file name is needed")
    if spool.master_key_env and not spool.master_key_env.replace("_", "a").isalnum():
        raise ConfigError(
            f"config: [spool] master_key_env: {spool.master_key_env!r} is not a variable name"
        )


def _validate_http(config: Config) -> None:
    http = config.http
    if http.listen:
        listen_address(http.listen, key="[http] listen")
    if not http.token_file:
        raise ConfigError("config: [http] token_file: a file name is needed")
    if http.max_connections < 1:
        raise ConfigError("config: [http] max_connections: 1 or more")
    files = {config.path(http.token_file)}
    for name, token in http.tokens.items():
        where = f"config: [http.tokens.{name}]"
        if not access.NAME.match(name) or name == "admin":
            raise ConfigError(
                f"{where}: a name of letters, digits, '_', '.' and '-', not 'admin' "
                "(the name of [http] token_file)"
            )
        if token.role not in access.ROLES:
            raise ConfigError(f"{where} role: {token.role!r}; use read, operate or admin")
        if not token.file or config.path(token.file) in files:
            raise ConfigError(f"{where} file: a file of its own is needed")
        files.add(config.path(token.file))
    if parse_duration(http.request_timeout, key="[http] request_timeout") <= 0:
        raise ConfigError("config: [http] request_timeout: must be more than 0")


def listen_address(value: str, *, key: str) -> tuple[str, int]:
    """``"127.0.0.1:2525"`` or ``"[::1]:2525"`` -> (host, port); ConfigError names the key."""
    host_part, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host_part:
        raise ConfigError(f"config: {key}: {value!r} is not 'host:port'")
    return host_part.strip("[]"), int(port)


class WebhookSection(_Section):
    """``[[webhooks]]``: one receiver of batched, signed JSON POSTs of events
    (docs/webhooks.md)."""

    url: str  # http:// or https://
    events: list[str]  # event types (salvo.core.events.EVENT_TYPES)
    name: str = ""  # the outbox's key and the metrics' label; "": from the URL's host
    secret_file: str = ""  # the HMAC key; "": keys/webhook-NAME.secret; made on first start
    tenants: list[str] = []  # only these tenants' events (events without one pass); []: all
    batch_max: int = 100  # events per POST
    batch_wait: Duration = "1s"  # how long a batch may wait to fill before it is posted
    timeout: Duration = "10s"  # one POST, connection included
    expire_after: Duration = "3d"  # an event still not accepted this long after it happened
    retry_first: Duration = "5s"  # the first retry after a failure; doubled per failure ...
    retry_max: Duration = "5m"  # ... up to this (with jitter)


_WEBHOOK_URL = re.compile(r"^https?://[^/\s?#@]+(?:[/?]\S*)?$")
_WEBHOOK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _webhooks(hooks: list[WebhookSection]) -> list[WebhookSection]:
    """Default names (the URL's host and port) and secret files filled in."""
    out = []
    for hook in hooks:
        name = hook.name
        if not name:
            netloc = hook.url.partition("//")[2].split("/")[0].split("?")[0]
            name = re.sub(r"[^A-Za-z0-9._-]", "_", netloc)[:64] or "webhook"
        secret = hook.secret_file or f"keys/webhook-{name}.secret"
        out.append(msgspec.structs.replace(hook, name=name, secret_file=secret))
    return out


def _validate_webhooks(config: Config) -> None:
    from salvo.core.events import EVENT_TYPES

    allowed = EVENT_TYPES
    seen: set[str] = set()
    for i, hook in enumerate(config.webhooks):
        where = f"config: [[webhooks]] #{i + 1}"
        if not _WEBHOOK_NAME.match(hook.name):
            raise ConfigError(
                f"{where} name: {hook.name!r}: 1 to 64 letters, digits, '.', '_' or '-'"
            )
        where = f"config: [[webhooks]] {hook.name!r}"
        if hook.name in seen:
            raise ConfigError(f"{where}: two webhooks have this name; give each its own name")
        seen.add(hook.name)
        if not _WEBHOOK_URL.match(hook.url):
            raise ConfigError(f"{where} url: {hook.url!r} is not an http:// or https:// URL")
        if not hook.events:
            raise ConfigError(f"{where} events: name at least one event type")
        for event in hook.events:
            if event not in allowed:
                raise ConfigError(
                    f"{where} events: {event!r} is not an event type (one of {', '.join(allowed)})"
                )
        if any(not t or not t.isprintable() for t in hook.tenants):
            raise ConfigError(f"{where} tenants: empty or unprintable tenant name")
        if not 1 <= hook.batch_max <= 10_000:
            raise ConfigError(f"{where} batch_max: from 1 to 10000")
        seconds = {}
        for key in ("batch_wait", "timeout", "expire_after", "retry_first", "retry_max"):
            seconds[key] = parse_duration(getattr(hook, key), key=f"[[webhooks]] {key}")
            if key != "batch_wait" and seconds[key] <= 0:
                raise ConfigError(f"{where} {key}: must be more than 0")
        if seconds["batch_wait"] > 3600:
            raise ConfigError(f"{where} batch_wait: at most 1h")
        if seconds["retry_max"] < seconds["retry_first"]:
            raise ConfigError(f"{where} retry_max: must not be less than retry_first")


def _validate_feedback_limits(config: Config) -> None:
    fb, un = config.feedback, config.unsubscribe
    for key in ("command_timeout", "data_timeout", "soft_bounce_window"):
        if parse_duration(getattr(fb, key), key=f"[feedback] {key}") <= 0:
            raise ConfigError(f"config: [feedback] {key}: must be more than 0")
    if parse_duration(un.request_timeout, key="[unsubscribe] request_timeout") <= 0:
        raise ConfigError("config: [unsubscribe] request_timeout: must be more than 0")
    for key in ("max_message_size", "max_pending_size"):
        if parse_size(getattr(fb, key), key=f"[feedback] {key}") < 1024:
            raise ConfigError(f"config: [feedback] {key}: at least 1KiB")
    for key in (
        "max_connections",
        "max_messages_per_connection",
        "max_pending_reports",
        "soft_bounce_limit",
    ):
        if getattr(fb, key) < 1:
            raise ConfigError(f"config: [feedback] {key}: 1 or more")
    if un.max_connections < 1:
        raise ConfigError("config: [unsubscribe] max_connections: 1 or more")


class Config(_Section):
    """The whole configuration; every section has defaults."""

    node: NodeSection = NodeSection()
    ingress: IngressSection = IngressSection()
    events: EventsSection = EventsSection()
    spool: SpoolSection = SpoolSection()
    retention: RetentionSection = RetentionSection()
    routes: dict[str, str] = {}
    route_auth: dict[str, RouteAuth] = {}
    dkim: dict[str, DkimKey | list[DkimKey]] = {}
    pools: dict[str, PoolSection] = msgspec.field(
        default_factory=lambda: {"default": PoolSection()}
    )
    traffic: dict[str, TrafficSection] = msgspec.field(
        default_factory=lambda: {"default": TrafficSection()}
    )
    delivery: DeliverySection = DeliverySection()
    dns: DnsSection = DnsSection()
    providers: dict[str, ProviderSection] = {}
    feedback: FeedbackSection = FeedbackSection()
    unsubscribe: UnsubscribeSection = UnsubscribeSection()
    producers: dict[str, ProducerSection] = {}
    tenants: dict[str, TenantSection] = {}
    subscribers: dict[str, SubscriberSection] = {}
    http: HttpSection = HttpSection()
    alerts: list[AlertSection] | None = None  # None: not in the file (the defaults apply)
    alerting: AlertingSection = AlertingSection()
    webhooks: list[WebhookSection] = []
    warmup: dict[str, WarmupPlan] = {}
    content: ContentSection = ContentSection()
    cluster: ClusterSection = ClusterSection()
    templates: TemplatesSection = TemplatesSection()
    # Where relative paths start: the config file's folder.
    base_dir: str = ""

    # -- derived, validated views -------------------------------------------------------

    def path(self, value: str) -> Path:
        """A path from the config, made absolute against the config file's folder."""
        return host.absolute_path(value, self.base_dir)

    @property
    def data_dir(self) -> Path:
        return self.path(self.node.data_dir)

    @property
    def hostname(self) -> str:
        return self.node.hostname or host.fqdn()

    @property
    def node_name(self) -> str:
        """This node's name in the cluster (``[cluster] node_name``, else the host name)."""
        return self.cluster.node_name or host.fqdn()

    def signer_count(self) -> int:
        return self.node.signers or host.cpu_count()

    def quotas(self) -> quotas_mod.Quotas:
        """The ingress quotas of ``[tenants]`` and ``[producers]`` (core/quotas.py)."""

        def limits(t: TenantSection | ProducerSection) -> quotas_mod.Limits:
            return quotas_mod.Limits(
                per_hour=t.max_recipients_per_hour,
                per_day=t.max_recipients_per_day,
                in_flight=t.max_jobs_in_flight,
            )

        return quotas_mod.Quotas(
            {name: limits(t) for name, t in self.tenants.items()},
            {name: limits(p) for name, p in self.producers.items()},
        )

    def dkim_keys(self, domain: str) -> list[DkimKey]:
        """The signing keys for a From domain (several tables: several signatures)."""
        keys = self.dkim.get(_domain_key(domain), [])
        return keys if isinstance(keys, list) else [keys]

    def route(self, domain: str) -> tuple[str, int] | None:
        """The static route (host, port) for a destination domain, or the ``*`` smarthost."""
        target = self.routes.get(_domain_key(domain)) or self.routes.get("*")
        return _host_port(target) if target else None

    def route_credentials(self, target: str, port: int) -> tuple[str, str] | None:
        """The SMTP AUTH (username, password) for a static route target, if configured."""
        auth = self.route_auth.get(f"{target}:{port}") or (
            self.route_auth.get(target) if port == 25 else None
        )
        if auth is None:
            return None
        if auth.password_file:
            return auth.username, host.read_text(self.path(auth.password_file)).strip()
        return auth.username, auth.password

    def smtp_timeouts(self) -> SMTPTimeouts:
        """The SMTP client's timeouts from ``[delivery]``: every command's reply within
        ``command_timeout`` (QUIT's at most 30 s), the final dot's within ``data_timeout``."""
        d = self.delivery
        command = parse_duration(d.command_timeout)
        return SMTPTimeouts(
            connect=parse_duration(d.connect_timeout),
            greeting=command,
            ehlo=command,
            starttls=command,
            auth=command,
            mail=command,
            rcpt=command,
            rset=command,
            data_init=command,
            data_block=command,
            data_end=parse_duration(d.data_timeout),
            quit=min(command, 30.0),
        )

    def finished_retention(self) -> float:
        """Seconds a finished job keeps its small record: ``[retention] finished``, or its
        old name ``[spool] retention``, or 7 days."""
        if self.retention.finished is not None:
            return parse_duration(self.retention.finished, key="[retention] finished")
        if self.spool.retention is not None:
            return parse_duration(self.spool.retention, key="[spool] retention")
        return 7 * 86400.0

    def events_retention(self) -> float | None:
        """Seconds the event log files are kept (None: by count only)."""
        value = self.retention.events
        if value in ("", 0):
            return None
        return parse_duration(value, key="[retention] events") or None

    def traffic_class(self, name: str) -> TrafficSection:
        return self.traffic.get(name) or self.traffic["default"]

    def feedback_domain(self, name: str) -> str:
        """The bounce domain of a traffic class's VERP return paths and unsubscribe mailto:
        its ``verp_domain``, else the first of ``[feedback] domains`` ("" when none)."""
        traffic = self.traffic_class(name)
        return traffic.verp_domain or next(iter(self.feedback.domains), "")

    @property
    def feedback_secret_path(self) -> Path:
        return self.path(self.feedback.secret_file)

    @property
    def http_token_path(self) -> Path:
        return self.path(self.http.token_file)

    def webhook_secret_path(self, hook: WebhookSection) -> Path:
        return self.path(hook.secret_file)

    @property
    def master_key_path(self) -> Path:
        return self.path(self.spool.master_key_file)

    @property
    def curve_secret_path(self) -> Path:
        """The node's CURVE secret key file; its public half is beside it (``.key``)."""
        return self.path(self.ingress.curve_secret_key)

    def http_tokens(self) -> dict[str, tuple[Path, str]]:
        """Every admin API token file by name, with its role: ``[http] token_file`` is the
        ``admin`` token named ``admin``."""
        tokens = {"admin": (self.http_token_path, "admin")}
        for name, token in self.http.tokens.items():
            tokens[name] = (self.path(token.file), token.role)
        return tokens

    @property
    def uses_curve(self) -> bool:
        return self.ingress.curve or self.events.curve

    @property
    def uses_feedback(self) -> bool:
        """Whether the feedback loop is configured (a bounce domain, or the unsubscribe
        endpoint): the node then makes the secret file on start if it is missing."""
        return bool(self.feedback.domains or self.unsubscribe.listen)

    def alert_rules(self) -> tuple[alerts_mod.Rule, ...]:
        """The alert rules in effect: ``[[alerts]]``, with the defaults as ``[alerting]
        defaults`` says (docs/alerts.md). :class:`~salvo.core.alerts.RuleError` names the
        rule (``[[alerts]] #2 window: ...``, counting from 1) and the key."""
        rules = []
        for i, section in enumerate(self.alerts or (), 1):
            try:
                rules.append(
                    alerts_mod.make_rule(
                        kpi=section.kpi,
                        scope=section.scope,
                        above=section.above,
                        window=section.window,
                        min_volume=section.min_volume,
                        action=section.action,
                        name=section.name,
                    )
                )
            except alerts_mod.RuleError as exc:
                raise alerts_mod.RuleError(f"[[alerts]] #{i} {exc}") from None
        defaults = self.alerting.defaults
        if defaults is None:
            defaults = self.alerts is None
        if defaults:
            given = {r.name for r in rules}
            rules = [r for r in alerts_mod.DEFAULT_RULES if r.name not in given] + rules
        try:
            alerts_mod.check_names(rules)
        except alerts_mod.RuleError as exc:
            raise alerts_mod.RuleError(f"[[alerts]] {exc}") from None
        return tuple(rules)

    def warming_sources(self) -> dict[str, str]:
        """Source address -> the name of the warm-up plan it follows (every pool)."""
        return {s: plan for pool in self.pools.values() for s, plan in pool.warmup.items()}

    def provider_table(self) -> ProviderTable:
        """The built-in provider table with ``[providers]`` applied (docs/delivery.md);
        providers without their own limits take ``[delivery]``'s."""
        d = self.delivery
        base = Limits(
            max_connections=d.max_connections,
            max_messages_per_connection=d.max_messages_per_connection,
            idle_timeout=parse_duration(d.idle_timeout),
        )
        overrides = {name: section.values(name) for name, section in self.providers.items()}
        return ProviderTable.build(overrides, base)


def _domain_key(domain: str) -> str:
    return domain if domain == "*" else domain.lower().rstrip(".")


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        return value.strip("[]"), 25
    return host.strip("[]"), int(port)


def _validate_keys(config: Config) -> None:
    if not config.ingress.curve_secret_key.endswith(".key_secret"):
        raise ConfigError(
            "config: [ingress] curve_secret_key: a file name ending in .key_secret "
            "(its public half is NAME.key beside it)"
        )
    for section, table in (("producers", config.producers), ("subscribers", config.subscribers)):
        for name, entry in table.items():
            where = f"config: [{section}.{name}]"
            if not access.NAME.match(name):
                raise ConfigError(f"{where}: a name of letters, digits, '_', '.' and '-'")
            if not entry.public_key:
                raise ConfigError(f"{where} public_key: a key file is needed")
    for name, producer in config.producers.items():
        if not producer.tenants or not all(producer.tenants):
            raise ConfigError(
                f'config: [producers.{name}] tenants: one tenant or more ("*": any tenant)'
            )


def _validate_quotas(config: Config) -> None:
    tables = [(f"tenants.{n}", t) for n, t in config.tenants.items()]
    tables += [(f"producers.{n}", p) for n, p in config.producers.items()]
    for where, table in tables:
        for key in ("max_recipients_per_hour", "max_recipients_per_day", "max_jobs_in_flight"):
            value = getattr(table, key)
            if value is not None and value < 1:
                raise ConfigError(f"config: [{where}] {key}: 1 or more (leave it out: no limit)")


def _validate(config: Config) -> None:
    _validate_quotas(config)
    _validate_http(config)
    if config.templates.max_loop_items < 1:
        raise ConfigError("config: [templates] max_loop_items: 1 or more")
    if config.templates.max_output < 1024:
        raise ConfigError("config: [templates] max_output: at least 1024")
    _validate_webhooks(config)
    _validate_spool_keys(config)
    _validate_keys(config)
    for domain, target in config.routes.items():
        _host, sep, port = target.rpartition(":")
        if not target or (sep and not port.isdigit()) or (sep and not 0 < int(port) < 65536):
            raise ConfigError(f"config: [routes] {domain!r}: {target!r} is not 'host:port'")
    targets = set(config.routes.values())
    for target, auth in config.route_auth.items():
        where = f"config: [route_auth.{target!r}]"
        if target not in targets:
            raise ConfigError(f"{where}: no [routes] entry has this target ('host:port')")
        if bool(auth.password) == bool(auth.password_file):
            raise ConfigError(f"{where}: give password or password_file (one of them)")
        if auth.password_file and not host.is_file(config.path(auth.password_file)):
            raise ConfigError(f"{where} password_file: {auth.password_file!r} is not a file")
    for name, pool in config.pools.items():
        for source in pool.sources:
            try:
                ipaddress.ip_address(source)
            except ValueError:
                raise ConfigError(
                    f"config: [pools.{name}] sources: {source!r} is not an IP address"
                ) from None
        if pool.weights and len(pool.weights) != len(pool.sources):
            raise ConfigError(
                f"config: [pools.{name}] weights: {len(pool.weights)} weights for "
                f"{len(pool.sources)} sources; give one per source, in the same order"
            )
        if any(w < 1 for w in pool.weights):
            raise ConfigError(f"config: [pools.{name}] weights: each weight is 1 or more")
    for name, traffic in config.traffic.items():
        if traffic.pool not in config.pools:
            raise ConfigError(
                f"config: [traffic.{name}] pool: no [pools.{traffic.pool}] is configured"
            )
        for key in ("first_retry", "max_retry", "expire_after"):
            parse_duration(getattr(traffic, key), key=f"[traffic.{name}] {key}")
    for domain in config.dkim:
        for key in config.dkim_keys(domain):
            if key.algorithm not in ("rsa-sha256", "ed25519-sha256"):
                raise ConfigError(
                    f"config: [dkim.{domain!r}] algorithm: {key.algorithm!r}; "
                    "use rsa-sha256 or ed25519-sha256"
                )
    if config.spool.retention is not None and config.retention.finished is not None:
        raise ConfigError(
            "config: [spool] retention is the old name of [retention] finished: give one"
        )
    config.finished_retention()
    config.events_retention()
    for section, keys in (
        ("spool", ("idempotency_window",)),
        ("delivery", ("connect_timeout", "command_timeout", "data_timeout", "idle_timeout")),
    ):
        for key in keys:
            parse_duration(getattr(getattr(config, section), key), key=f"[{section}] {key}")
    for section, key in (
        ("ingress", "max_job_size"),
        ("events", "log_max_size"),
        ("spool", "max_size"),
    ):
        parse_size(getattr(getattr(config, section), key), key=f"[{section}] {key}")
    if config.node.signers < 0:
        raise ConfigError("config: [node] signers: 0 (one per core) or more")
    if config.delivery.max_connections_total < 0:
        raise ConfigError("config: [delivery] max_connections_total: 0 (no cap) or more")
    try:
        config.provider_table()
    except ValueError as exc:  # ConfigError (a duration) included: it names the key
        raise ConfigError(f"config: {str(exc).removeprefix('config: ')}") from None
    _validate_dns(config.dns)
    _validate_feedback(config)
    _validate_alerts(config)
    _validate_warmup(config)


def _validate_warmup(config: Config) -> None:
    for name, plan in config.warmup.items():
        where = f"config: [warmup.{name}]"
        if not plan.daily or any(n < 1 for n in plan.daily):
            raise ConfigError(f"{where} daily: one cap (1 or more) per step, at least one step")
        for key in ("max_deferral_rate", "max_bounce_rate", "max_complaint_rate"):
            if not 0.0 <= getattr(plan, key) <= 1.0:
                raise ConfigError(f"{where} {key}: a fraction between 0 and 1")
        if plan.severe_factor < 1.0:
            raise ConfigError(f"{where} severe_factor: 1 or more")
        if plan.min_volume < 0:
            raise ConfigError(f"{where} min_volume: 0 or more")
        try:
            host.time_zone(plan.timezone)
        except ValueError as exc:
            raise ConfigError(f"{where} timezone: {exc}") from None
    plans: dict[str, str] = {}
    for name, pool in config.pools.items():
        for source, plan in pool.warmup.items():
            where = f"config: [pools.{name}] warmup: {source!r}"
            if source not in pool.sources:
                raise ConfigError(f"{where} is not one of the pool's sources")
            if plan not in config.warmup:
                raise ConfigError(f"{where}: no [warmup.{plan}] plan is configured")
            if plans.setdefault(source, plan) != plan:
                raise ConfigError(
                    f"{where}: follows [warmup.{plans[source]}] in another pool; "
                    "a source follows one plan"
                )
    _validate_content(config.content)
    _validate_cluster(config.cluster)


_REDIS_URL = re.compile(r"^(redis|rediss)://[^\s]*$|^unix://\S+$")


def _validate_cluster(cluster: ClusterSection) -> None:
    where = "config: [cluster]"
    if cluster.redis and not _REDIS_URL.match(cluster.redis):
        raise ConfigError(
            f"{where} redis: {cluster.redis!r} is not a Redis URL "
            "(redis://HOST:PORT/DB, rediss://... or unix:///PATH); empty runs alone"
        )
    name = cluster.node_name
    if name and (len(name) > 64 or not name.isprintable() or " " in name):
        raise ConfigError(f"{where} node_name: 1-64 printable characters without spaces")
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,32}", cluster.prefix):
        raise ConfigError(f"{where} prefix: 1-32 of A-Z a-z 0-9 _ . : -")
    for key in ("connect_timeout", "command_timeout", "claim_ttl"):
        if parse_duration(getattr(cluster, key), key=f"[cluster] {key}") <= 0:
            raise ConfigError(f"{where} {key}: must be more than 0")
    if parse_duration(cluster.claim_ttl) < 60:
        raise ConfigError(f"{where} claim_ttl: at least 1m (longer than producers retry)")
    if cluster.when_down not in ("retry", "accept"):
        raise ConfigError(f"{where} when_down: 'retry' or 'accept', not {cluster.when_down!r}")
    if parse_duration(cluster.lease_ttl, key="[cluster] lease_ttl") < 3:
        raise ConfigError(f"{where} lease_ttl: at least 3s (leases are renewed every third)")
    if cluster.expected_nodes < 1:
        raise ConfigError(f"{where} expected_nodes: 1 or more")
    if cluster.stream_max < 1000:
        raise ConfigError(f"{where} stream_max: 1000 or more")


# https://host[:port][/path], no query or fragment; no character that ends a URL in a
# List-Unsubscribe header (RFC 2369: <>, whitespace; and the comma between URLs).
_BASE_URL = re.compile(r"^https://[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9._~!$&'()*+;=:@%/-]*)?$")


def _validate_feedback(config: Config) -> None:
    if config.feedback.listen:
        listen_address(config.feedback.listen, key="[feedback] listen")
    if config.unsubscribe.listen:
        listen_address(config.unsubscribe.listen, key="[unsubscribe] listen")
    _validate_feedback_limits(config)
    if not config.feedback.secret_file:
        raise ConfigError("config: [feedback] secret_file: a file name is needed")
    for domain in config.feedback.domains:
        if not _DOMAIN.match(domain):
            raise ConfigError(
                f"config: [feedback] domains: {domain!r} is not a domain name (ASCII, "
                "IDNs as A-labels: 'xn--...')"
            )
    base_url = config.unsubscribe.base_url
    if base_url and not _BASE_URL.match(base_url):
        raise ConfigError(
            f"config: [unsubscribe] base_url: {base_url!r} is not an https:// URL without "
            "query or fragment, like 'https://u.acme.example'"
        )
    domains = config.feedback.domains
    for name, traffic in config.traffic.items():
        where = f"config: [traffic.{name}]"
        if traffic.verp_domain and traffic.verp_domain not in domains:
            raise ConfigError(
                f"{where} verp_domain: {traffic.verp_domain!r} is not one of [feedback] domains"
            )
        if traffic.verp and not domains:
            raise ConfigError(f"{where} verp: needs a bounce domain in [feedback] domains")
        if traffic.strict and not traffic.bulk:
            raise ConfigError(f"{where} strict: applies to bulk classes only (bulk = true)")
        if traffic.list_unsubscribe and not base_url:
            raise ConfigError(
                f"{where} list_unsubscribe: needs [unsubscribe] base_url "
                "(https://..., the public URL of the unsubscribe endpoint)"
            )
        if traffic.list_unsubscribe and not domains:
            raise ConfigError(
                f"{where} list_unsubscribe: needs a domain in [feedback] domains "
                "(for the mailto: address)"
            )


_DOMAIN = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
)


def _named_table(text: str | bytes, where: str, key: str) -> str:
    """``$.providers[...]`` (msgspec does not name dict keys) as ``$.providers.google``:
    the first table of that section that has the unknown key."""
    match = re.fullmatch(r"\$\.(\w+)\[\.\.\.\]", where)
    if not match:
        return where
    try:
        tables = msgspec.toml.decode(text).get(match.group(1), {})
    except (msgspec.DecodeError, AttributeError):
        return where
    for name, table in tables.items():
        if isinstance(table, dict) and key in table:
            return f"$.{match.group(1)}.{name}"
    return where


def _readable_path(path: str) -> str:
    """msgspec's ``$.traffic.bulk.pool`` as ``[traffic.bulk] pool``; ``$.alerts[1].kpi``
    as ``[[alerts]] #2 kpi`` (rules count from 1)."""
    rule = re.fullmatch(r"\$\.alerts\[(\d+)\](?:\.(\w+))?", path)
    if rule:
        return f"[[alerts]] #{int(rule.group(1)) + 1}" + (
            f" {rule.group(2)}" if rule.group(2) else ""
        )
    parts = [p for p in re.split(r"\.|\[\.\.\.\]", path.removeprefix("$")) if p]
    if not parts:
        return "top level"
    if len(parts) == 1:
        return parts[0]
    return f"[{'.'.join(parts[:-1])}] {parts[-1]}"


def parse_config(text: str | bytes, *, base_dir: str = "", source: str = "config") -> Config:
    """Validate TOML text into a :class:`Config`."""
    try:
        config = msgspec.toml.decode(text, type=Config)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `")
        where = where.rstrip("`")
        unknown = re.match(r"Object contains unknown field `(.+)`", message)
        if unknown:
            where = _named_table(text, where, unknown.group(1))
            raise ConfigError(
                f"{source}: {_readable_path(where + '.' + unknown.group(1))}: unknown key"
            ) from None
        raise ConfigError(f"{source}: {_readable_path(where)}: {message}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    # A file that adds pools or traffic classes keeps the default ones; domains are
    # matched case-insensitively, without a trailing dot.
    config = msgspec.structs.replace(
        config,
        base_dir=base_dir,
        routes={_domain_key(d): target for d, target in config.routes.items()},
        dkim={_domain_key(d): keys for d, keys in config.dkim.items()},
        pools={"default": PoolSection(), **config.pools},
        traffic={
            name: msgspec.structs.replace(t, verp_domain=_domain_key(t.verp_domain))
            for name, t in {"default": TrafficSection(), **config.traffic}.items()
        },
        feedback=msgspec.structs.replace(
            config.feedback, domains=[_domain_key(d) for d in config.feedback.domains]
        ),
        unsubscribe=msgspec.structs.replace(
            config.unsubscribe, base_url=config.unsubscribe.base_url.rstrip("/")
        ),
        webhooks=_webhooks(config.webhooks),
    )
    try:
        _validate(config)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("config:", f"{source}:", 1)) from None
    return config


def load_config(path: str | os.PathLike | None = None) -> Config:
    """The configuration in ``path``, or the embedded default when ``path`` is None."""
    if path is None:
        return parse_config(b"", base_dir=str(host.working_dir()), source="default config")
    path = Path(path)
    try:
        text = host.read_bytes(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    return parse_config(text, base_dir=str(host.resolved(path).parent), source=str(path))
