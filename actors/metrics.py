"""The node's Prometheus metrics (docs/metrics.md), with ``prometheus-client``.

Counting happens once per batch of events or results, where the scheduler and the
feedback loop already hold them (a ``collections.Counter`` over the batch, then one
``inc`` per distinct label set); nothing is counted in the signers. Gauges (queue,
connections, pauses) are read when ``/metrics`` is scraped, from sources that cost no
scan: the spool's entry counts and the delivery engine's lanes.

Label values that are not bounded by the config are capped: the first ``max_labels``
tenants (and providers) seen keep their name, later ones are counted as ``other``.
"""

from __future__ import annotations

import bisect
import collections
import functools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from salvo.core import kpis
from salvo.core.events import Event
from salvo.core.quotas import Refusal

log = logging.getLogger("salvo.metrics")

OTHER = "other"
MAX_LABELS = 100
# salvo_delivery_seconds: acceptance to the destination's 250 (deferrals included).
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400)
OUTCOMES = (
    "accepted",
    "delivered",
    "deferred",
    "bounced",
    "expired",
    "suppressed",
    "complained",
    "unsubscribed",
    "failed",
)


class LabelCap:
    """The first ``limit`` values seen keep their name; later ones are ``other``."""

    def __init__(self, limit: int = MAX_LABELS) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(self.seen) < self.limit:
            self.seen.add(value)
            return value
        return OTHER


def reply_class(code: int) -> str | None:
    if 200 <= code < 600:
        return f"{code // 100}xx"
    return None


class Metrics:
    """The node's registry and counters; gauges come from the sources set on it."""

    def __init__(self, *, max_labels: int = MAX_LABELS, clock: Callable[[], float] = time.time):
        self.registry = CollectorRegistry(auto_describe=False)
        self.tenant = LabelCap(max_labels)
        self.provider = LabelCap(max_labels)
        self._clock = clock
        self.recipients = Counter(
            "salvo_recipients",
            "Recipient events by tenant and outcome.",
            ["tenant", "outcome"],
            registry=self.registry,
        )
        self.replies = Counter(
            "salvo_smtp_replies",
            "SMTP replies to recipients by provider and class.",
            ["provider", "class"],
            registry=self.registry,
        )
        self.alerts_fired = Counter(
            "salvo_alerts_fired",
            "Alerts fired, by rule and action (docs/alerts.md).",
            ["rule", "action"],
            registry=self.registry,
        )
        self.webhook_posts = Counter(
            "salvo_webhook_posts",
            "Webhook POSTs by webhook and result (2xx, 4xx, 5xx, other, error: no answer).",
            ["webhook", "result"],
            registry=self.registry,
        )
        # [content] (docs/content.md): jobs screened, and the spamd exchanges they took.
        self.content_checks = Counter(
            "salvo_content_checks",
            "Jobs screened for content by result.",
            ["result"],
            registry=self.registry,
        )
        self.spamd_requests = Counter(
            "salvo_content_spamd_requests",
            "Exchanges with spamd by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        # Ingress quotas (core/quotas.py): jobs refused, by tenant and kind (hour, day,
        # in_flight; producer_hour... when the producer's own quota refused it).
        self.quota_refusals = Counter(
            "salvo_quota_refusals",
            "Jobs refused at ingress for a quota, by tenant and kind.",
            ["tenant", "kind"],
            registry=self.registry,
        )
        self._lat_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self._lat_sum = 0.0
        # Set by the node: () -> (waiting, in flight, oldest age s); the delivery engine.
        self.queue_source: Callable[[], tuple[int, int, float]] | None = None
        self.delivery = None
        # () -> (scope, name) of every operator pause in effect (salvo.actors.control).
        self.operator_pauses: Callable[[], list[tuple[str, str]]] | None = None
        # () -> active alerts per (rule, scope), every rule listed (salvo.actors.alerts).
        self.alerts_firing: Callable[[], dict[tuple[str, str], int]] | None = None
        # () -> (webhook, events in its outbox) (salvo.actors.webhooks).
        self.webhook_pending: Callable[[], list[tuple[str, int]]] | None = None
        self.registry.register(_Gauges(self))

    # -- counting, once per batch ---------------------------------------------------------------

    def count_events(self, events: Iterable[Event]) -> None:
        """Count a batch of events by (tenant, outcome); delivered ones in the latency
        histogram too (their ``ts - queued_at``)."""
        counted: collections.Counter[tuple[str, str]] = collections.Counter()
        latencies = []
        for e in events:
            counted[(e.tenant, e.type)] += 1
            if e.type == "delivered" and e.queued_at:
                latencies.append(e.ts - e.queued_at)
        cap = self.tenant
        for (tenant, outcome), n in counted.items():
            self.recipients.labels(cap(tenant), outcome).inc(n)
        if latencies:
            buckets = self._lat_counts
            for seconds in latencies:
                buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self._lat_sum += sum(latencies)

    def count_replies(self, replies: collections.Counter[tuple[str, int]]) -> None:
        """Count (provider, reply code) pairs of a batch of results."""
        by_class: collections.Counter[tuple[str, str]] = collections.Counter()
        for (provider, code), n in replies.items():
            cls = reply_class(code)
            if cls is not None:
                by_class[(self.provider(provider or "none"), cls)] += n
        for (provider, cls), n in by_class.items():
            self.replies.labels(provider, cls).inc(n)

    def quota_refused(self, tenant: str, refusal: Refusal) -> None:
        kind = refusal.kind if refusal.scope == "tenant" else f"producer_{refusal.kind}"
        self.quota_refusals.labels(self.tenant(tenant), kind).inc()

    def alert_fired(self, rule: str, action: str) -> None:
        self.alerts_fired.labels(rule, action).inc()

    # -- reading -----------------------------------------------------------------------------

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def latency_family(self) -> HistogramMetricFamily:
        cumulative, total = [], 0
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), self._lat_counts, strict=True):
            total += n
            cumulative.append((_bound(bound), total))
        family = HistogramMetricFamily(
            "salvo_delivery_seconds",
            "Seconds from a recipient's acceptance to the destination's 250.",
        )
        family.add_metric([], cumulative, self._lat_sum)
        return family


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(float(value))


class _Gauges(Collector):
    """The values read at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator:
        m = self.metrics
        yield m.latency_family()
        queue = GaugeMetricFamily(
            "salvo_queue_recipients", "Recipients not yet final, by state.", labels=["state"]
        )
        oldest = GaugeMetricFamily(
            "salvo_queue_oldest_seconds", "Age of the oldest job with recipients not yet final."
        )
        if m.queue_source is not None:
            try:
                waiting, in_flight, age = m.queue_source()
            except Exception as exc:  # a scrape must not fail on a busy spool
                log.warning("queue gauges not read: %s", exc)
            else:
                queue.add_metric(["waiting"], waiting)
                queue.add_metric(["in-flight"], in_flight)
                oldest.add_metric([], age)
        yield queue
        yield oldest
        connections = GaugeMetricFamily(
            "salvo_connections", "Open SMTP connections.", labels=["provider", "source"]
        )
        paused = GaugeMetricFamily(
            "salvo_paused", "1 while new connections are paused.", labels=["scope", "name"]
        )
        rate = GaugeMetricFamily(
            "salvo_shaping_rate",
            "Messages per second allowed now (adaptive shaping); 0: no limit.",
            labels=["provider", "source"],
        )
        allowed = GaugeMetricFamily(
            "salvo_shaping_connections",
            "Connections allowed now (adaptive shaping).",
            labels=["provider", "source"],
        )
        delivery = m.delivery
        if delivery is not None:
            open_by: collections.Counter[tuple[str, str]] = collections.Counter()
            allowed_by: collections.Counter[tuple[str, str]] = collections.Counter()
            rate_by: dict[tuple[str, str], float] = {}
            for (source, provider), lane in list(delivery._lanes.items()):
                key = (m.provider(provider), source or "default")
                open_by[key] += lane.shaper.active
                allowed_by[key] += lane.shaper.max_connections
                rate_by[key] = rate_by.get(key, 0.0) + lane.shaper.message_rate
            for (provider, source), n in sorted(open_by.items()):
                connections.add_metric([provider, source], n)
                allowed.add_metric([provider, source], allowed_by[(provider, source)])
                per_s = rate_by[(provider, source)]
                rate.add_metric([provider, source], 0.0 if math.isinf(per_s) else per_s)
            paused_by: dict[str, int] = {}
            for provider in list(delivery._provider_lanes):
                name = m.provider(provider)
                is_paused = 1 if delivery.paused_for(provider) > 0 else 0
                paused_by[name] = max(paused_by.get(name, 0), is_paused)
            for name, is_paused in sorted(paused_by.items()):
                paused.add_metric(["provider", name], is_paused)
        if m.operator_pauses is not None:
            for scope, name in m.operator_pauses():
                paused.add_metric([f"operator:{scope}", name], 1)
        cap = GaugeMetricFamily(
            "salvo_warmup_cap",
            "Today's warm-up cap of a warming source towards a provider.",
            labels=["provider", "source"],
        )
        used = GaugeMetricFamily(
            "salvo_warmup_used",
            "Messages a warming source sent (or has in flight) to a provider today.",
            labels=["provider", "source"],
        )
        caps = delivery.warmup if delivery is not None else None
        if caps:
            for source, provider, n, sent in sorted(caps.lanes()):
                if n is not None:  # warmed: no cap any more
                    cap.add_metric([m.provider(provider), source], n)
                    used.add_metric([m.provider(provider), source], sent)
        yield cap
        yield used
        yield connections
        yield rate
        yield allowed
        yield paused
        firing = GaugeMetricFamily(
            "salvo_alerts_firing", "Active alerts, by rule.", labels=["rule", "scope"]
        )
        if m.alerts_firing is not None:
            for (rule, scope), n in sorted(m.alerts_firing().items()):
                firing.add_metric([rule, scope], n)
        yield firing
        pending = GaugeMetricFamily(
            "salvo_webhook_pending", "Events in a webhook's outbox.", labels=["webhook"]
        )
        if m.webhook_pending is not None:
            try:
                for name, n in m.webhook_pending():
                    pending.add_metric([name], n)
            except Exception as exc:  # a scrape must not fail on a busy spool
                log.warning("webhook gauges not read: %s", exc)
        yield pending


def book_batch(
    metrics: Metrics | None,
    batch: Iterable,
    jobs: Mapping[int, Any],
    provider_of: Mapping[tuple[int, int], str],
    now: float,
) -> Callable:
    """The bookkeeping of one batch of delivery results (salvo.actors.delivery.Result):
    SMTP replies by provider counted once, and the function that gives the KPI buckets of
    its changes (run inside the spool commit that records them). ``jobs``: what the
    scheduler keeps of each job in flight; ``provider_of``: each recipient's provider."""
    labels: dict[tuple[int, int], kpis.Labels] = {}
    replies: collections.Counter[tuple[str, int]] = collections.Counter()
    for result in batch:
        key = (result.message.seq, result.message.idx)
        provider = provider_of.get(key)
        job = jobs.get(key[0])
        if job is not None:
            labels[key] = kpis.Labels(
                job.tenant, job.campaign, provider, job.submitted, result.source
            )
        if result.outcome.code:
            replies[(provider or "", result.outcome.code)] += 1
    if metrics is not None and replies:
        metrics.count_replies(replies)
    return functools.partial(kpis.book_changes, labels, now)
