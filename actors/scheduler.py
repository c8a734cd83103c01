"""The scheduler: the single owner of queue state in the core process.

It claims due recipients from the spool (a durable move to in-flight), holds back those
of a provider that is paused or at its share, sends the rest to the signers in batches of
one job's recipients, routes each signed message (salvo.actors.routing) to delivery, and
records every outcome in batched spool commits; events leave only after the commit that
made the change. Every decision on the way is salvo.core.policy's; this module does the
spool transactions, the channels and the bookkeeping of what is in flight.
"""

from __future__ import annotations

import collections
import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from salvo.actors.delivery import BATCH, Delivery, Message, Result, RouteSettings
from salvo.actors.dispatch import Dispatcher
from salvo.actors.metrics import book_batch
from salvo.actors.resolver import Resolver
from salvo.actors.routing import Router
from salvo.actors.spool_writer import SpoolWriter
from salvo.actors.warmup import WarmupLanes
from salvo.core import policy, protocol
from salvo.core.config import Config, parse_duration
from salvo.core.events import Event, change_event, submit_events
from salvo.core.feedback.outbound import ReturnPaths
from salvo.core.messages import Content, SignItem
from salvo.core.smtp import Outcome
from salvo.core.spool import Change, Claim, Claimed
from salvo.core.spool import Outcome as SpoolOutcome
from salvo.core.spool_records import JobRecord

log = logging.getLogger("salvo.scheduler")

CLAIM_BATCH = 512
SIGN_BATCH = 32
OUTCOME_BATCH = 2000
MAINTENANCE_EVERY = 10.0


@dataclass(slots=True)
class _Job:
    """What the scheduler keeps of a job while some of its recipients are in flight."""

    id: str
    tenant: str
    campaign: str
    traffic: str
    mail_from: str
    submitted: float
    content: Content
    refs: int = 0

    @classmethod
    def of(cls, r: JobRecord) -> _Job:
        mail_from = r.return_path or email.utils.parseaddr(r.from_)[1]
        content = Content(r.from_, r.subject, r.text, r.html, r.headers, r.raw, r.tenant, r.traffic)
        return cls(r.id, r.tenant, r.campaign, r.traffic, mail_from, r.submitted, content)


class Scheduler:
    """Claims, dispatches, routes and records; see the module docstring."""

    def __init__(
        self,
        config: Config,
        writer: SpoolWriter,
        delivery: Delivery,
        results: trio.MemoryReceiveChannel[Result],
        results_send: trio.MemorySendChannel[Result],
        events: trio.MemorySendChannel[list[Event]],
        *,
        clock: Callable[[], float] = time.time,
        resolver: Resolver | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._rng = rng or random.Random()  # retry jitter, spread after pauses
        self.writer = writer
        self.spool = writer.spool
        self.delivery = delivery
        self.dispatcher: Dispatcher | None = None
        self._results = results
        self._results_send = results_send
        self._events = events
        self._clock = clock
        self._return_paths = ReturnPaths.from_config(config)  # VERP; the secret read once
        # Bookkeeping (docs/metrics.md): Prometheus counters and durable KPI buckets.
        self.metrics = None  # salvo.actors.metrics.Metrics, set by the node
        self.bookkeeping = True
        self.inflight: dict[tuple[int, int], Claimed] = {}
        self._jobs: dict[int, _Job] = {}
        self._wake = trio.Event()
        self._idle = trio.Event()
        self.claiming = True
        self.control = None  # salvo.actors.control.Control: operator pauses, set by the node
        # Providers: their table, the provider of each in-flight recipient, and how many
        # recipients each has in flight.
        self.providers = config.provider_table()
        delivery.configure(self.providers, config.delivery.max_connections_total, clock)
        self._provider_of: dict[tuple[int, int], str] = {}
        self.provider_inflight: collections.Counter[str] = collections.Counter()
        timeouts = config.smtp_timeouts()
        settings = {
            name: RouteSettings(
                ehlo=pool.ehlo or config.hostname,
                max_connections=config.delivery.max_connections,
                max_messages_per_connection=config.delivery.max_messages_per_connection,
                idle_timeout=parse_duration(config.delivery.idle_timeout),
                timeouts=timeouts,
            )
            for name, pool in config.pools.items()
        }
        # Warm-up: the daily caps of warming sources (docs/warmup.md); delivery asks them
        # when it picks a source, the claim loop before it signs.
        self.warmup = WarmupLanes(config, self.spool, self._rng)
        delivery.warmup = self.warmup.caps if self.warmup else None
        self.router = Router(
            config,
            delivery,
            self.providers,
            settings,
            resolver or Resolver.from_config(config),
            self._count,
            results_send.send_nowait,
        )

    # -- intake ---------------------------------------------------------------------------

    def job_committed(self, job: protocol.Job, result: protocol.Reply) -> None:
        """Ingress's news of a new job: events for it, and a wake-up to claim it."""
        self._emit(submit_events(job, result, self._clock()))
        self._wake.set()

    # -- claiming -------------------------------------------------------------------------

    async def run_claims(self) -> None:
        """Claim due recipients while there is room; sleep until the next is due."""
        while self.claiming:
            room = policy.claim_room(
                self.config.delivery.max_ready, len(self.inflight), CLAIM_BATCH
            )
            got = 0
            handed: list[SpoolOutcome] = []
            if room > 0:
                claim = await self.writer.run_sync(self.spool.claim_due, self._clock(), room)
                got = len(claim.claimed) + len(claim.finished)
                handed = self._take(claim)
                if handed:  # written unsigned, without events: they were never tried
                    changes = await self.writer.record_outcomes(handed)
                    # ...unless that made one final (its expiry came first).
                    self.emit_changes([c for c in changes if c.record.state != "queued"])
            if got and got >= room and not handed:
                continue  # more may be due right now
            wait = 1.0
            due = self.spool.next_due()
            if due is not None and room > 0 and not handed:
                wait = min(wait, max(0.0, due - self._clock()))
            # After a hand-back the due backlog is (mostly) a provider at its share:
            # claim again when outcomes free room, not at once (no churn through it).
            with trio.move_on_after(wait):
                await self._wake.wait()
            self._wake = trio.Event()

    def _take(self, claim: Claim) -> list[SpoolOutcome]:
        """Send claimed recipients to the signers; return those handed back unsigned
        because their provider is paused or at its share of ``max_ready``."""
        handed: list[SpoolOutcome] = []
        if claim.finished:
            self._emit([self._event(c, self._job_of(c.seq)) for c in claim.finished])
        for seq, record in claim.jobs.items():
            if seq not in self._jobs:
                self._jobs[seq] = _Job.of(record)
        by_job: dict[int, list[SignItem]] = {}
        now = self._clock()
        paused: dict[str, float] = {}  # per provider, asked once per claim
        rates: dict[str, float] = {}  # the adaptive rate of its lanes, idem
        max_ready = self.config.delivery.max_ready
        control = self.control
        for c in claim.claimed:
            provider = self.router.known_provider(c.domain)
            if control is not None and (out := control.hold(c, provider, self._jobs[c.seq], now)):
                handed.append(out)  # paused by the operator, or cancelled
                continue
            if provider is not None:
                if provider not in paused:
                    paused[provider] = self.delivery.paused_for(provider)
                    rates[provider] = self.delivery.message_rate(provider)
                if self.warmup and (
                    out := self.warmup.hold(c.seq, c.idx, self._jobs[c.seq].traffic, provider, now)
                ):
                    handed.append(out)  # every source of its pool at its cap today
                    continue
                share = policy.share(
                    self.providers.get(provider), max_ready, BATCH, rates[provider]
                )
                held = policy.hold_back(
                    paused[provider], self.provider_inflight[provider], share, self._rng
                )
                if held is not None:
                    handed.append(
                        SpoolOutcome(
                            seq=c.seq,
                            idx=c.idx,
                            state="queued",
                            text=f"{provider}: {held.reason}",
                            next_attempt=now + held.delay,
                        )
                    )
                    continue
                self._count_key((c.seq, c.idx), provider)
            self.inflight[(c.seq, c.idx)] = c
            self._jobs[c.seq].refs += 1
            by_job.setdefault(c.seq, []).append(SignItem(c.seq, c.idx, c.to, c.vars, c.message_id))
        for seq in claim.jobs:  # every recipient of it handed back: nothing to keep
            job = self._jobs.get(seq)
            if job is not None and job.refs <= 0:
                del self._jobs[seq]
        assert self.dispatcher is not None
        for seq, items in by_job.items():
            content = self._jobs[seq].content
            for i in range(0, len(items), SIGN_BATCH):
                self.dispatcher.submit(seq, content, items[i : i + SIGN_BATCH])
        return handed

    def wake(self) -> None:
        self._wake.set()

    def emit_changes(self, changes: list[Change]) -> None:
        self._emit([self._event(c, self._job_of(c.seq)) for c in changes])

    def _job_of(self, seq: int) -> _Job | JobRecord | None:
        return self._jobs.get(seq) or self.spool.get_job(seq)

    # -- signed messages to delivery --------------------------------------------------------

    def on_signed(self, seq: int, idx: int, body: bytes | None, error: str) -> None:
        """A signer's answer for one recipient (called by the dispatcher)."""
        claimed = self.inflight.get((seq, idx))
        if claimed is None:
            return
        rcpt = claimed.rcpt
        job = self._jobs[seq]
        mail_from = self._return_paths.mail_from(job.mail_from, job.traffic, seq, idx)
        message = Message(seq, idx, rcpt, mail_from, body or b"")
        if body is None:  # not the destination's answer: not a bounce, suppresses no one
            outcome = Outcome.failed(rcpt, f"cannot make the message: {error}")
            self._results_send.send_nowait(Result(message, outcome, "", ""))
            return
        self.router.send(message, claimed.domain, self.config.traffic_class(job.traffic).pool)

    def _count(self, message: Message, provider: str) -> None:
        """A message queued for ``provider`` (by the router)."""
        self._count_key((message.seq, message.idx), provider)

    def _count_key(self, key: tuple[int, int], provider: str) -> None:
        """Count an in-flight recipient against its provider's share (until recorded)."""
        if key not in self._provider_of:
            self._provider_of[key] = provider
            self.provider_inflight[provider] += 1

    # -- outcomes ---------------------------------------------------------------------------

    async def run_outcomes(self) -> None:
        """Record delivery results in batched commits, then publish their events."""
        async for first in self._results:
            await trio.sleep(policy.OUTCOME_WINDOW)  # one wake-up per batch, not per result
            batch = [first]
            while len(batch) < OUTCOME_BATCH:
                try:
                    batch.append(self._results.receive_nowait())
                except trio.WouldBlock:
                    break
            await self._record(batch)

    async def _record(self, batch: list[Result]) -> None:
        now = self._clock()
        outcomes = [self._spool_outcome(r, now) for r in batch]
        warm = self.warmup.counted(batch, self._provider_of)
        book = self._book(batch, now)
        also = self.warmup.book(warm, now) if warm else None
        changes = await self.writer.record_outcomes(outcomes, book, also=also)
        if warm:
            self.warmup.recorded(warm, now)
        results = {(r.message.seq, r.message.idx): r for r in batch}
        events, hard = [], []
        for change in changes:
            result = results.get((change.seq, change.idx))
            if result is not None and result.held is not None and change.record.state == "queued":
                continue  # handed back untried: no event, as for a hold at claim time
            job = self._job_of(change.seq)
            event = self._event(change, job, result)
            events.append(event)
            if policy.suppresses(event.type, event.code, event.hard):
                hard.append((change.record.to, event))
        for result in batch:
            self._forget((result.message.seq, result.message.idx))
        if hard:
            await self._suppress(hard, now)
        self._emit(events)
        self._wake.set()
        if not self.inflight:
            self._idle.set()

    def _forget(self, key: tuple[int, int]) -> None:
        """A recipient is no longer in flight: its provider's share and its job's count."""
        provider = self._provider_of.pop(key, None)
        if provider is not None:
            self.provider_inflight[provider] -= 1
            if self.provider_inflight[provider] <= 0:
                del self.provider_inflight[provider]
        if self.inflight.pop(key, None) is not None:
            job = self._jobs.get(key[0])
            if job is not None:
                job.refs -= 1
                if job.refs <= 0:
                    del self._jobs[key[0]]

    # -- pauses that land while recipients are in flight (docs/control.md) -------------------

    def held_back(self, message: Message, provider: str) -> SpoolOutcome | None:
        """The hand-back of a signed message that waits in delivery, when a pause or cancel
        covers it now (delivery asks this while any is in effect)."""
        job = self._jobs.get(message.seq)
        if job is None or self.control is None:
            return None
        return self.control.hold(message, provider, job, self._clock())

    async def withdraw(self) -> int:
        """After a pause or cancel: take back what it covers from the signers' queue (not
        yet signed) and record it as held; returns how many."""
        if self.dispatcher is None or self.control is None:
            return 0
        control, now = self.control, self._clock()
        handed: list[SpoolOutcome] = []

        def keep(item) -> bool:
            job = self._jobs.get(item.seq)
            claimed = self.inflight.get((item.seq, item.idx))
            if job is None or claimed is None:
                return True
            provider = self.router.known_provider(claimed.domain)
            out = control.hold(item, provider, job, now)
            if out is None:
                return True
            handed.append(out)
            return False

        self.dispatcher.withdraw(keep)
        if not handed:
            return 0
        changes = await self.writer.record_outcomes(handed)
        for out in handed:
            self._forget((out.seq, out.idx))
        self.emit_changes([c for c in changes if c.record.state != "queued"])
        self._wake.set()
        return len(handed)

    def _book(self, batch: list[Result], now: float):
        """The bookkeeping of one batch (docs/metrics.md), or None when it is off."""
        if not self.bookkeeping:
            return None
        return book_batch(self.metrics, batch, self._jobs, self._provider_of, now)

    def _spool_outcome(self, result: Result, now: float) -> SpoolOutcome:
        if result.held is not None:
            return result.held
        m = result.message
        claimed = self.inflight.get((m.seq, m.idx))
        job = self._jobs.get(m.seq)
        traffic = self.config.traffic_class(job.traffic if job else "default")
        return policy.spool_outcome(
            m.seq,
            m.idx,
            result.outcome,
            result.host,
            now=now,
            attempts=(claimed.attempts if claimed else 0) + 1,
            first_retry=parse_duration(traffic.first_retry),
            max_retry=parse_duration(traffic.max_retry),
            retry_at=result.retry_at,
            rng=self._rng,
            source=result.source,
            provider=self._provider_of.get((m.seq, m.idx), ""),
        )

    async def _suppress(self, hard: list[tuple[str, Event]], now: float) -> None:
        def add() -> None:
            for address, event in hard:
                self.spool.suppression.add(
                    [address],
                    now=now,
                    reason="hard-bounce",
                    source=f"{event.code} {event.status} from {event.host}"[:200],
                )

        try:
            await self.writer.run_sync(add)
        except Exception as exc:  # a bad address must not stop the recording of outcomes
            log.error("could not suppress hard bounces: %s", exc)

    # -- maintenance and drain ----------------------------------------------------------------

    async def run_maintenance(self) -> None:
        """Expire recipients past their expiry and purge finished jobs, periodically."""
        while True:
            await trio.sleep(MAINTENANCE_EVERY)
            now = self._clock()
            changes = await self.writer.run_sync(self.spool.expire_due, now)
            if changes:
                self._emit([self._event(c, self._job_of(c.seq)) for c in changes])
            await self.writer.run_sync(self.spool.purge, now)

    async def drain(self, timeout: float) -> int:
        """Stop claiming, let in-flight recipients finish for up to ``timeout`` seconds,
        then hand the rest back to the queue. Returns how many were handed back."""
        self.claiming = False
        self._wake.set()
        if self.inflight:
            self._idle = trio.Event()
            with trio.move_on_after(timeout):
                await self._idle.wait()
        left = [
            SpoolOutcome(seq=s, idx=i, state="queued", text="node stopping")
            for s, i in self.inflight
        ]
        if left:
            await self.writer.record_outcomes(left)
            self.inflight.clear()
        return len(left)

    # -- events -----------------------------------------------------------------------------

    def _emit(self, events: list[Event]) -> None:
        if events:
            if self.metrics is not None:
                self.metrics.count_events(events)
            self._events.send_nowait(events)

    def _event(
        self, change: Change, job: _Job | JobRecord | None, result: Result | None = None
    ) -> Event:
        if result is None:
            return change_event(change, job, self._clock())
        return change_event(change, job, self._clock(), result.host, result.source)
