"""The feedback loop's processing in the core process: received reports -> policy -> events.

Reports come from the inbound listener (:mod:`salvo.actors.feedback_listener`), which
stores each in the spool before its 250. This task takes them from the spool oldest first,
parses each on a worker thread (the parser is pure: :mod:`salvo.core.feedback.parse`),
and applies it in one write transaction on the spool writer's thread that also deletes it
(:mod:`salvo.core.feedback.apply`), then emits the events. Reports left by a crash are
processed after the restart. One-click unsubscribes (the HTTP endpoint) go through
:meth:`Feedback.unsubscribe` the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio

from salvo.actors.spool_writer import SpoolWriter
from salvo.core import kpis
from salvo.core.events import Event
from salvo.core.feedback import apply as fb_apply
from salvo.core.feedback.parse import parse_report
from salvo.core.feedback.policy import FeedbackPolicy
from salvo.core.feedback.report import Kind, Report
from salvo.core.feedback.store import RawReport
from salvo.core.spool import Spool

log = logging.getLogger("salvo.feedback")

SWEEP_EVERY = 3600.0  # seconds between sweeps of old soft-bounce entries
POLL_EVERY = 30.0  # seconds; reports stored by another process are found this late


def parse_safely(data: bytes) -> Report:
    """The parser's reading, or ``none`` when it fails (a report never stops the loop)."""
    try:
        return parse_report(data)
    except Exception as exc:
        log.warning("report not parsed (%s: %s): treated as none", type(exc).__name__, exc)
        return Report(kind=Kind.NONE)


def process_one(
    spool: Spool,
    rid: int,
    report: Report | None,
    *,
    secret: bytes | None,
    policy: FeedbackPolicy,
    now: float,
    book: bool = True,
) -> list[Event]:
    """Apply and delete pending report ``rid`` in one transaction (on the writer thread);
    with ``book``, the KPI buckets of its events in the same transaction, and the events
    the webhooks take in their outbox."""

    def fn(txn) -> list[Event]:
        raw = spool.feedback.take_in(txn, rid)
        if raw is None:  # processed meanwhile (another process)
            return []
        applied = fb_apply.apply_report_in(
            spool, txn, raw, report, secret=secret, policy=policy, now=now
        )
        fb_apply.count_report_in(spool, txn, report, applied)
        if book and applied.events:
            spool.add_kpis_in(txn, kpis.book_events(applied.events, now))
        spool.add_webhook_events_in(txn, applied.events)
        return applied.events

    return spool.store.write(fn)


class Feedback:
    """Processes stored reports and one-click unsubscribes; run :meth:`run` in a nursery."""

    def __init__(
        self,
        spool: Spool,
        writer: SpoolWriter,
        events: trio.MemorySendChannel[list[Event]],
        *,
        secret: bytes,
        policy: FeedbackPolicy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spool = spool
        self.writer = writer
        self.secret = secret
        self.policy = policy
        self._events = events
        self._clock = clock
        self._wake = trio.Event()
        self.processed = 0
        # Bookkeeping (docs/metrics.md): Prometheus counters and durable KPI buckets.
        self.metrics = None  # salvo.actors.metrics.Metrics, set by the node
        self.bookkeeping = True

    def wake(self) -> None:
        """A report was stored: process it soon."""
        self._wake.set()

    async def run(self) -> None:
        last_sweep = 0.0
        while True:
            self._wake = trio.Event()
            ids = await self.writer.run_sync(self.spool.feedback.pending_ids, 100)
            for rid in ids:
                await self._process(rid)
            now = self._clock()
            if now - last_sweep >= SWEEP_EVERY:
                last_sweep = now
                await self.writer.run_sync(self._sweep, now)
            if len(ids) < 100:
                with trio.move_on_after(POLL_EVERY):
                    await self._wake.wait()

    def _sweep(self, now: float) -> int:
        window = self.policy.soft_bounce_window
        return self.spool.store.write(
            lambda txn: self.spool.feedback.sweep_soft_in(txn, now, window)
        )

    async def _process(self, rid: int) -> None:
        raw: RawReport | None = await self.writer.run_sync(self.spool.feedback.get_report, rid)
        if raw is None:
            return
        report = await trio.to_thread.run_sync(parse_safely, raw.data)
        try:
            events = await self.writer.run_sync(self._apply, rid, report)
        except Exception as exc:  # a report that cannot be applied must not block the rest
            log.error("report %d cannot be applied (%s: %s): dropped", rid, type(exc).__name__, exc)
            await self.writer.run_sync(self._drop, rid)
            return
        self.processed += 1
        log.info("report %d (%s): %d events", rid, report.kind.value, len(events))
        await self._send(events)

    async def _send(self, events: list[Event]) -> None:
        if events:
            if self.metrics is not None:
                self.metrics.count_events(events)
            await self._events.send(events)

    def _apply(self, rid: int, report: Report) -> list[Event]:
        return process_one(
            self.spool,
            rid,
            report,
            secret=self.secret,
            policy=self.policy,
            now=self._clock(),
            book=self.bookkeeping,
        )

    def _drop(self, rid: int) -> None:
        def fn(txn) -> None:
            if self.spool.feedback.take_in(txn, rid) is not None:
                self.spool.feedback.add_in(txn, b"report:failed")

        self.spool.store.write(fn)

    async def unsubscribe(self, tenant: str, address: str, source: str) -> bool:
        """Suppress ``address`` for ``tenant`` durably; True once committed."""
        now = self._clock()

        def write(txn) -> list[Event]:
            events = fb_apply.unsubscribe_in(
                self.spool, txn, tenant, address, now=now, source=source
            )
            if self.bookkeeping and events:
                self.spool.add_kpis_in(txn, kpis.book_events(events, now))
            self.spool.add_webhook_events_in(txn, events)
            return events

        events = await self.writer.run_sync(self.spool.store.write, write)
        await self._send(events)
        return True
