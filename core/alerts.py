"""Alert rules and their verdicts: when a KPI of a campaign, tenant, provider, source or the
node crosses a threshold (docs/alerts.md).

Pure: the values come in (KPIs from the durable per-minute buckets of
:mod:`salvo.core.kpis`, node gauges read by the actor), the time is passed in, and what
comes out is a list of transitions: an alert *fired* or *cleared*. The actor
(:mod:`salvo.actors.alerts`) reads the buckets, acts (pause or notify) and publishes.

A rule fires for one scope value (campaign ``spring``) when the value is above its
threshold with at least ``min_volume`` sent in the window, once, and stays active until
the value falls to :data:`CLEAR_RATIO` of the threshold (or the volume to that share of
``min_volume``): a value hovering at the line does not flap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from salvo.core import kpis
from salvo.core.events import Event

__all__ = [
    "ACTIONS",
    "CLEAR_RATIO",
    "DEFAULT_RULES",
    "KPIS",
    "NODE_KPIS",
    "SCOPES",
    "Alert",
    "Alerting",
    "Rule",
    "RuleError",
    "describe",
    "dim_of",
    "event_of",
    "make_rule",
    "measure",
    "scope_of_dim",
    "scopes_of_delta",
    "verdict",
]

NODE_KPIS = ("queue_oldest_seconds", "spool_used_fraction")
KPIS = (*kpis.KPI_NAMES, *NODE_KPIS)
SCOPES = ("campaign", "tenant", "provider", "source", "node")
ACTIONS = ("notify", "pause")
CLEAR_RATIO = 0.8  # an active alert clears at this share of its threshold (hysteresis)
NODE_NAME = "node"  # the scope value of node rules
DEFAULT_WINDOW = "1h"
MAX_NAME = 100


class RuleError(ValueError):
    """A rule that cannot be used; the message names the key (config: ConfigError)."""


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    """One validated rule; ``window_s``: the window in seconds (0 for node gauges)."""

    name: str
    kpi: str
    scope: str
    above: float
    window: str
    window_s: float
    min_volume: int
    action: str

    def as_json(self) -> dict:
        return {
            "rule": self.name,
            "kpi": self.kpi,
            "scope": self.scope,
            "above": self.above,
            "window": self.window,
            "min_volume": self.min_volume,
            "action": self.action,
        }


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """A transition of one rule for one scope value: ``state`` fired or cleared; ``since``:
    when it fired."""

    rule: str
    kpi: str
    scope: str
    name: str
    value: float
    threshold: float
    action: str
    window: str
    since: float
    state: str = "fired"

    def as_json(self) -> dict:
        return {
            "rule": self.rule,
            "kpi": self.kpi,
            "scope": self.scope,
            "name": self.name,
            "value": self.value,
            "threshold": self.threshold,
            "action": self.action,
            "window": self.window,
            "since": self.since,
        }


def event_of(alert: Alert, now: float) -> Event:
    """The ``alert`` event of a transition; a campaign's or tenant's carries its name in
    ``campaign`` or ``tenant`` too, like the recipient events (subscribers filter on it)."""
    return Event(
        type="alert",
        ts=now,
        job="",
        tenant=alert.name if alert.scope == "tenant" else "",
        campaign=alert.name if alert.scope == "campaign" else "",
        source=alert.name if alert.scope == "source" else "",
        text=describe(alert),
        state=alert.state,
        rule=alert.rule,
        kpi=alert.kpi,
        scope=alert.scope,
        name=alert.name,
        value=alert.value,
        threshold=alert.threshold,
        window=alert.window,
        action=alert.action,
    )


def describe(alert: Alert) -> str:
    """One line for logs, events and the pause's reason."""
    where = alert.window if alert.window == "now" else f"over {alert.window}"
    if alert.state == "cleared":
        return (
            f"alert {alert.rule} cleared: {alert.scope} {alert.name} {alert.kpi} {alert.value:.6g}"
        )
    return (
        f"alert {alert.rule}: {alert.scope} {alert.name} {alert.kpi} {alert.value:.6g} "
        f"above {alert.threshold:.6g} {where}"
    )


def make_rule(
    *,
    kpi: str,
    scope: str,
    above: float,
    window: str = "",
    min_volume: int | None = None,
    action: str = "notify",
    name: str = "",
) -> Rule:
    """A validated rule; :class:`RuleError` names the key that is wrong."""
    if kpi not in KPIS:
        raise RuleError(f"kpi: {kpi!r} is not one of {', '.join(KPIS)}")
    if scope not in SCOPES:
        raise RuleError(f"scope: {scope!r} is not one of {', '.join(SCOPES)}")
    if action not in ACTIONS:
        raise RuleError(f"action: {action!r} is not one of {', '.join(ACTIONS)}")
    if isinstance(above, bool) or not isinstance(above, int | float) or not math.isfinite(above):
        raise RuleError("above: a finite number is required")
    if above < 0:
        raise RuleError("above: must be 0 or more")
    node = scope == "node"
    if node != (kpi in NODE_KPIS):
        if node:
            raise RuleError(f"kpi: a node rule reads {' or '.join(NODE_KPIS)}, not {kpi!r}")
        raise RuleError(f"scope: {kpi!r} is a node gauge: its scope is node")
    if node and action == "pause":
        raise RuleError(
            "action: a node rule cannot pause (it would stop every campaign); use notify"
        )
    if node:
        if window:
            raise RuleError("window: a node rule reads a gauge now; leave window out")
        if min_volume:
            raise RuleError("min_volume: a node rule has no volume; leave min_volume out")
        window_s, window, min_volume = 0.0, "now", 0
    else:
        window = window or DEFAULT_WINDOW
        try:
            window_s = kpis.parse_window(window)
        except kpis.KpiQueryError as exc:
            raise RuleError(f"window: {exc}") from None
        if min_volume is None:
            min_volume = 1000
        if isinstance(min_volume, bool) or min_volume < 0:
            raise RuleError("min_volume: 0 or more")
    if not name:
        name = f"{kpi}_{scope}_{action}"
    if len(name) > MAX_NAME or not name.isprintable():
        raise RuleError(f"name: at most {MAX_NAME} printable characters")
    return Rule(
        name=name,
        kpi=kpi,
        scope=scope,
        above=float(above),
        window=window,
        window_s=window_s,
        min_volume=int(min_volume),
        action=action,
    )


# The rules of a node whose config has no [[alerts]] (docs/alerts.md gives the reasons).
DEFAULT_RULES = (
    make_rule(kpi="complaint_rate", scope="campaign", above=0.001, min_volume=1000),
    make_rule(kpi="complaint_rate", scope="campaign", above=0.003, min_volume=2000, action="pause"),
    make_rule(kpi="hard_bounce_rate", scope="campaign", above=0.02, min_volume=1000),
    make_rule(
        kpi="hard_bounce_rate", scope="campaign", above=0.05, min_volume=1000, action="pause"
    ),
    make_rule(kpi="queue_oldest_seconds", scope="node", above=6 * 3600.0),
    make_rule(kpi="spool_used_fraction", scope="node", above=0.8),
)


def check_names(rules: Iterable[Rule]) -> None:
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise RuleError(f"name: {rule.name!r} is used by two rules (give each a name)")
        seen.add(rule.name)


# -- dimensions ----------------------------------------------------------------------------


def dim_of(scope: str, name: str) -> bytes:
    """The KPI dimension a rule of ``scope`` reads for ``name``."""
    if scope == "campaign":
        return kpis.dim_key(None, name, None)
    if scope == "tenant":
        return kpis.dim_key(name, None, None)
    if scope == "provider":
        return kpis.dim_key(None, None, name)
    if scope == "source":
        return kpis.source_dim(name)
    raise ValueError(f"scope {scope!r} has no KPI dimension")


def scope_of_dim(dim: bytes) -> tuple[str, str] | None:
    """The (scope, name) of a one-value dimension (campaign C alone, ...), else None."""
    source = kpis.source_of_dim(dim)
    if source is not None:
        return ("source", source)
    parts = dim.split(kpis.SEP)
    if len(parts) != 3:
        return None
    labels = zip(("tenant", "campaign", "provider"), parts, strict=True)
    named = [(s, p) for s, p in labels if p != kpis.ANY]
    if len(named) == 1 and named[0][1]:
        scope, value = named[0]
        return (scope, value.decode(errors="replace"))
    return None


def scopes_of_delta(keys: Iterable[bytes]) -> set[tuple[str, str]]:
    """The (scope, name) pairs whose one-value dimensions a bucket delta touches (its keys:
    minute, then the dimension). One step per key, not per outcome."""
    out: set[tuple[str, str]] = set()
    for key in keys:
        found = scope_of_dim(key[4:])
        if found is not None:
            out.add(found)
    return out


def measure(rule: Rule, counts: Mapping[str, int]) -> tuple[float | None, int]:
    """(value of the rule's KPI, volume: ``sent``) of the merged counters of its window."""
    out = kpis.compute(counts, rule.window_s)
    return out[rule.kpi], out["sent"]


# -- verdicts ---------------------------------------------------------------------------------


def verdict(rule: Rule, value: float | None, volume: int, active: bool) -> bool:
    """Whether the alert is active after this reading. It fires above the threshold with
    enough volume; once active it holds until the value or the volume falls to
    :data:`CLEAR_RATIO` of the threshold or ``min_volume`` (no flapping at the line)."""
    gauge = rule.scope == "node"
    if value is None:
        return False
    if not active:
        return (gauge or volume >= rule.min_volume) and value > rule.above
    if not gauge and volume < rule.min_volume * CLEAR_RATIO:
        return False
    return value > rule.above * CLEAR_RATIO


class Alerting:
    """The rules and the alerts active now: :meth:`judge` gives the transitions."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)
        self.active: dict[tuple[str, str, str], Alert] = {}

    def rules_of(self, scope: str) -> list[Rule]:
        return [r for r in self.rules if r.scope == scope]

    def judge(
        self, rule: Rule, name: str, value: float | None, volume: int, now: float
    ) -> Alert | None:
        """The transition of ``rule`` for ``name`` after a reading, or None."""
        key = (rule.name, rule.scope, name)
        current = self.active.get(key)
        after = verdict(rule, value, volume, current is not None)
        if current is None and after:
            alert = self.active[key] = _fired(rule, name, value, now)
            return alert
        if current is not None and not after:
            del self.active[key]
            return msgspec.structs.replace(current, value=float(value or 0.0), state="cleared")
        if current is not None and value is not None:  # still active: the latest value
            self.active[key] = msgspec.structs.replace(current, value=float(value))
        return None

    def restore(self, rule: Rule, name: str, value: float | None, volume: int, now: float) -> bool:
        """At start: mark the alert active, without a transition, when the reading fires it
        (its actions were taken before the restart: pauses are durable)."""
        if verdict(rule, value, volume, False):
            self.active[(rule.name, rule.scope, name)] = _fired(rule, name, value, now)
            return True
        return False

    def names_active(self, scope: str) -> set[str]:
        return {name for (_, s, name) in self.active if s == scope}

    def listing(self) -> dict[str, Any]:
        """The ``GET /api/alerts`` object."""
        active = sorted(self.active.values(), key=lambda a: (a.since, a.rule, a.name))
        return {
            "active": [a.as_json() for a in active],
            "rules": [r.as_json() for r in self.rules],
        }

    def firing(self) -> dict[tuple[str, str], int]:
        """Active alerts per (rule, scope), every rule listed (the gauge)."""
        out = {(r.name, r.scope): 0 for r in self.rules}
        for rule, scope, _ in self.active:
            out[(rule, scope)] = out.get((rule, scope), 0) + 1
        return out


def _fired(rule: Rule, name: str, value: float | None, now: float) -> Alert:
    return Alert(
        rule=rule.name,
        kpi=rule.kpi,
        scope=rule.scope,
        name=name,
        value=float(value or 0.0),
        threshold=rule.above,
        action=rule.action,
        window=rule.window,
        since=now,
    )
