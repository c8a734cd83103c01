"""The alerts actor: evaluates the alert rules and acts on them (docs/alerts.md).

The spool tells it the KPI buckets of every increment it writes (outcome batches, applied
feedback reports, unsubscribes: :attr:`salvo.core.spool.Spool.on_kpis`, on the writer's
thread, one list per transaction); every :data:`TICK` seconds the campaigns, tenants,
providers and sources those touched are evaluated again from the durable per-minute
buckets, so a complaint report that crosses a threshold is acted on within about a
second of being applied. Every ``[alerting] every`` the node gauges are read, and the
alerts still active are evaluated again so that they clear as their window slides.

A fired ``pause`` rule pauses its scope through :class:`salvo.actors.control.Control`
(durable, with the rule in the reason); every transition is an ``alert`` event. At start
the active alerts are rebuilt from the buckets without acting again: the pauses they made
are in the spool already, and a resumed one stays resumed.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Callable, Iterable

import trio

from salvo.core import alerts as al
from salvo.core import kpis
from salvo.core.events import Event
from salvo.core.spool import Spool

log = logging.getLogger("salvo.alerts")

TICK = 0.5  # seconds between evaluations of what changed


def minutes_of(rule: al.Rule, now: float) -> range:
    last = kpis.minute_of(now)
    return range(last - max(1, math.ceil(rule.window_s / kpis.MINUTE)) + 1, last + 1)


class Alerts:
    """The node's alerting; run :meth:`run` in a nursery (it restores the state first)."""

    def __init__(
        self,
        rules: Iterable[al.Rule],
        spool: Spool,
        events: trio.MemorySendChannel[list[Event]],
        *,
        control=None,  # salvo.actors.control.Control: the pause action
        every: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.alerting = al.Alerting(rules)
        self.spool = spool
        self.control = control
        self.every = every
        self._events = events
        self._clock = clock
        self.metrics = None  # salvo.actors.metrics.Metrics, set by the node
        self.fired = 0  # transitions to fired so far
        self._touched: collections.deque[list[bytes]] = collections.deque()
        self._scoped = {r.scope for r in self.alerting.rules if r.scope != "node"}
        if self._scoped:
            spool.on_kpis = self._touched.append  # deque.append: safe from another thread

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        restored = await trio.to_thread.run_sync(self._restore, self._clock())
        if restored:
            log.info("%d alerts active at start (no action taken again)", restored)
        task_status.started()
        next_full = self._clock() + self.every
        while True:
            await trio.sleep(TICK)
            now = self._clock()
            keys: list[bytes] = []
            while self._touched:
                keys += self._touched.popleft()
            scopes = {s for s in al.scopes_of_delta(keys) if s[0] in self._scoped}
            full = now >= next_full
            if full:
                next_full = now + self.every
                scopes |= {(scope, name) for (_, scope, name) in self.alerting.active}
            if scopes or full:
                await self.evaluate(scopes, now, gauges=full)

    async def evaluate(self, scopes: set[tuple[str, str]], now: float, *, gauges: bool) -> list:
        """Read, judge and act; returns the transitions."""
        readings = await trio.to_thread.run_sync(self._read, scopes, now, gauges)
        changes = []
        for rule, name, value, volume in readings:
            alert = self.alerting.judge(rule, name, value, volume, now)
            if alert is not None:
                changes.append(alert)
        if not changes:
            return changes
        events = [al.event_of(a, now) for a in changes]
        # The webhooks' copy first, durably: an alert must reach them even if the node
        # dies right after its pause.
        await trio.to_thread.run_sync(self.spool.add_webhook_events, events)
        for alert in changes:
            await self._act(alert, now)
        await self._events.send(events)
        return changes

    # -- reading (on a worker thread: LMDB read transactions) -----------------------------------

    def _read(
        self, scopes: set[tuple[str, str]], now: float, gauges: bool
    ) -> list[tuple[al.Rule, str, float | None, int]]:
        out = []
        for scope, name in sorted(scopes):
            if scope == "node":
                continue
            dim = al.dim_of(scope, name)
            by_window: dict[float, dict[str, int]] = {}
            for rule in self.alerting.rules_of(scope):
                counts = by_window.get(rule.window_s)
                if counts is None:
                    counts = by_window[rule.window_s] = self.spool.kpi_counts(
                        dim, minutes_of(rule, now)
                    )
                value, volume = al.measure(rule, counts)
                out.append((rule, name, value, volume))
        if gauges:
            node_rules = self.alerting.rules_of("node")
            if node_rules:
                values = self.node_gauges(now)
                out += [(r, al.NODE_NAME, values.get(r.kpi), 0) for r in node_rules]
        return out

    def node_gauges(self, now: float) -> dict[str, float]:
        """The node gauges that rules read: queue age (s) and the spool's used fraction."""
        store = self.spool.store
        _, _, oldest = self.spool.queue_gauges(now)
        used = store.read(store.used_bytes) / store.max_map_size if store.max_map_size else 0.0
        return {"queue_oldest_seconds": oldest, "spool_used_fraction": used}

    def _restore(self, now: float) -> int:
        rules = self.alerting.rules
        widest = max((r.window_s for r in rules if r.scope != "node"), default=0.0)
        scopes: set[tuple[str, str]] = set()
        if widest:
            probe = al.make_rule(
                kpi="sent", scope="campaign", above=0, window=f"{int(widest)}s", min_volume=0
            )
            dims, _ = self.spool.kpi_dimensions(minutes_of(probe, now))
            for dim in dims:
                found = al.scope_of_dim(dim)
                if found is not None and found[0] in self._scoped:
                    scopes.add(found)
        n = 0
        for rule, name, value, volume in self._read(scopes, now, gauges=True):
            n += self.alerting.restore(rule, name, value, volume, now)
        return n

    # -- acting ------------------------------------------------------------------------------------

    async def _act(self, alert: al.Alert, now: float) -> None:
        text = al.describe(alert)
        if alert.state == "cleared":
            log.info("%s", text)
            return
        self.fired += 1
        if self.metrics is not None:
            self.metrics.alert_fired(alert.rule, alert.action)
        log.warning("%s (%s)", text, alert.action)
        control = self.control
        if alert.action != "pause" or control is None:
            return
        if (alert.scope, alert.name) in control.pauses.pauses:
            return  # paused already (by the operator or another rule): theirs stands
        try:
            await control.pause(alert.scope, alert.name, None, text[:200])
        except Exception as exc:  # the alert is still reported
            log.error("%s: could not pause %s %s: %s", alert.rule, alert.scope, alert.name, exc)

    def listing(self) -> dict:
        return self.alerting.listing()
