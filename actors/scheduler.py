"""The scheduler: the single owner of queue state in the core process.

It claims due recipients from the spool (a durable move to in-flight, at most
``max_ready`` at a time: the rest stays on disk, as in Postfix's small active queue),
sends them to the signers in batches of one job's recipients, routes each signed message
to delivery, and records every outcome in batched spool commits. Events leave only after
the commit that made the change. Deferred recipients get their next attempt from the
retry schedule of their traffic class; a remote server's permanent 5.1.x reply (bad
mailbox or domain) adds the address to the suppression list.

Providers (docs/delivery.md): each message is queued for its provider (the MX pattern or
MX set of its domain, or its static route). One provider may have at most its share of
``max_ready`` in flight (``[providers.NAME] max_ready``; by default all of it for a
provider without a rate limit, about 30 s of its rate for one with a limit): a claimed
recipient whose domain is known to belong to a provider at its share is handed back to
the spool unsigned, due again after :data:`HANDBACK_DELAY`, so a slow provider cannot
fill the node with its mail while others wait on disk. Likewise a recipient of a provider
whose every lane is paused after failed connections (a dead destination) is handed back
unsigned, due when the pause ends: no CPU goes into rendering and signing mail that could
only be deferred. A deferral for a paused lane carries the pause's end as a hint
(``Result.retry_at``): its next attempt is the later of the hint and the retry schedule.
"""

from __future__ import annotations

import collections
import email.utils
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import trio

from salvo.actors.delivery import BATCH, Delivery, Message, Result, RouteSettings
from salvo.actors.dispatch import Dispatcher
from salvo.actors.resolver import Resolver
from salvo.actors.smtp_session import SMTPTimeouts
from salvo.actors.spool_writer import SpoolWriter
from salvo.core import protocol
from salvo.core.config import Config, PoolSection, parse_duration
from salvo.core.events import Event
from salvo.core.messages import Content, SignItem
from salvo.core.mx import FailureReason, MXPlan, RouteFailure
from salvo.core.providers import route_key
from salvo.core.retry import after_pause, next_attempt
from salvo.core.smtp import Outcome, Scope, Status
from salvo.core.spool import Change, Claim, Claimed
from salvo.core.spool import Outcome as SpoolOutcome
from salvo.core.spool_records import JobRecord

log = logging.getLogger("salvo.scheduler")

CLAIM_BATCH = 512
SIGN_BATCH = 32
OUTCOME_BATCH = 2000
# Every spool commit has a fixed cost (two fsyncs, copied B-tree pages: about 0.3 ms of
# CPU), so commits of a few dozen outcomes cost twice as much per recipient as commits of
# hundreds. Outcomes are news of mail already sent: they gather for OUTCOME_WINDOW before
# their commit (bench: core CPU per message 147 -> 120 us at 4,500 msg/s), and the claims
# that follow them grow with them.
OUTCOME_WINDOW = 0.05  # seconds
MAINTENANCE_EVERY = 10.0
HANDBACK_DELAY = 5.0  # seconds: a recipient of a provider at its share is due again then
SHARE_HORIZON = 30.0  # seconds of a rate-limited provider's rate that may be in flight
DOMAIN_CACHE = 100_000  # domains whose provider is remembered (cleared when full)


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


def _mail_from(record: JobRecord) -> str:
    if record.return_path:
        return record.return_path
    return email.utils.parseaddr(record.from_)[1]


class _CannotMake(Outcome):
    """A signer could not make the message (a template or encoding error at send time):
    recorded as ``failed``, a final state of its own (docs/spool.md)."""

    __slots__ = ()


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
    ) -> None:
        self.config = config
        self.writer = writer
        self.spool = writer.spool
        self.delivery = delivery
        self.dispatcher: Dispatcher | None = None
        self._results = results
        self._results_send = results_send
        self._events = events
        self._clock = clock
        self.inflight: dict[tuple[int, int], Claimed] = {}
        self._jobs: dict[int, _Job] = {}
        self._wake = trio.Event()
        self._idle = trio.Event()
        self.claiming = True
        # MX routing: domains being resolved, and the messages waiting for each.
        self.resolver = resolver or Resolver.from_config(config)
        self._resolving: dict[str, list[tuple[Message, str]]] = {}
        # Providers: their table, the provider of each in-flight recipient and of each
        # domain seen, and how many recipients each has in flight.
        self.providers = config.provider_table()
        delivery.configure(self.providers, config.delivery.max_connections_total, clock)
        self._provider_of: dict[tuple[int, int], str] = {}
        self._domain_provider: dict[str, str] = {}
        self.provider_inflight: collections.Counter[str] = collections.Counter()
        self._static: dict[tuple[str, tuple[str, int]], tuple] = {}
        self._routes: dict[str, tuple[str, int] | None] = {}
        self.settings = {
            name: RouteSettings(
                ehlo=pool.ehlo or config.hostname,
                max_connections=config.delivery.max_connections,
                max_messages_per_connection=config.delivery.max_messages_per_connection,
                idle_timeout=parse_duration(config.delivery.idle_timeout),
                timeouts=_timeouts(config),
            )
            for name, pool in config.pools.items()
        }

    # -- intake ---------------------------------------------------------------------------

    def job_committed(self, job: protocol.Job, result: protocol.Reply) -> None:
        """Ingress's news of a new job: events for it, and a wake-up to claim it."""
        now = self._clock()
        common = {"ts": now, "job": job.id, "tenant": job.tenant, "campaign": job.campaign or ""}
        events = [
            Event(type="accepted", recipient=a.to, message_id=a.message_id, queued_at=now, **common)
            for a in result.accepted
        ]
        events += [
            Event(type="suppressed", recipient=r.to, text="suppressed at intake", **common)
            for r in result.rejected
            if r.reason == "suppressed"
        ]
        self._emit(events)
        self._wake.set()

    # -- claiming -------------------------------------------------------------------------

    async def run_claims(self) -> None:
        """Claim due recipients while there is room; sleep until the next is due."""
        while self.claiming:
            room = self.config.delivery.max_ready - len(self.inflight)
            got = 0
            handed: list[SpoolOutcome] = []
            if room > 0:
                claim = await self.writer.run_sync(
                    self.spool.claim_due, self._clock(), min(room, CLAIM_BATCH)
                )
                got = len(claim.claimed) + len(claim.finished)
                handed = self._take(claim)
                if handed:  # written unsigned, without events: they were never tried
                    changes = await self.writer.record_outcomes(handed)
                    # ...unless that made one final (its expiry came first).
                    self._emit(
                        [
                            self._event(c, self._job_of(c.seq))
                            for c in changes
                            if c.record.state != "queued"
                        ]
                    )
            if got and got >= min(room, CLAIM_BATCH) and not handed:
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

    def _share(self, provider: str) -> int:
        """How many recipients of ``provider`` may be in flight at once: its configured
        ``max_ready``, else what it can take soon. A provider without a message rate
        limit may use all of ``max_ready`` (a cap below it would only stall the queue:
        what is handed back waits HANDBACK_DELAY while the provider idles); a rate-limited
        one about SHARE_HORIZON seconds of its rate, so that it cannot fill ``max_ready``
        with messages that wait for tokens while other providers' mail waits on disk."""
        p = self.providers.get(provider)
        total = self.config.delivery.max_ready
        if p.max_ready:
            return p.max_ready
        rate = p.limits.max_messages_per_second or p.limits.max_messages_per_hour / 3600
        if not rate:
            return total
        soon = max(rate * SHARE_HORIZON, p.limits.max_connections * BATCH)
        return max(1, min(total // 2, int(soon)))

    def _known_provider(self, domain: str) -> str | None:
        """The provider of a domain, if known before its message is made: its static route,
        or the provider its last MX lookup gave."""
        route = self._route(domain)
        if route is not None:
            return route_key(*route)
        return self._domain_provider.get(domain.rstrip(".").lower())

    def _route(self, domain: str) -> tuple[str, int] | None:
        """``config.route(domain)``, remembered: it is asked for every message."""
        try:
            return self._routes[domain]
        except KeyError:
            if len(self._routes) >= DOMAIN_CACHE:
                self._routes.clear()
            route = self._routes[domain] = self.config.route(domain)
            return route

    def _take(self, claim: Claim) -> list[SpoolOutcome]:
        """Send claimed recipients to the signers; return those handed back unsigned
        because their provider is paused or at its share of ``max_ready``."""
        handed: list[SpoolOutcome] = []
        if claim.finished:
            self._emit([self._event(c, self._job_of(c.seq)) for c in claim.finished])
        for seq, record in claim.jobs.items():
            if seq not in self._jobs:
                self._jobs[seq] = _Job(
                    record.id,
                    record.tenant,
                    record.campaign,
                    record.traffic,
                    _mail_from(record),
                    record.submitted,
                    Content(
                        record.from_,
                        record.subject,
                        record.text,
                        record.html,
                        record.headers,
                        record.raw,
                    ),
                )
        by_job: dict[int, list[SignItem]] = {}
        now = self._clock()
        paused: dict[str, float] = {}  # per provider, asked once per claim
        for c in claim.claimed:
            provider = self._known_provider(c.domain)
            if provider is not None:
                if provider not in paused:
                    paused[provider] = self.delivery.paused_for(provider)
                why, delay = "", 0.0
                if paused[provider] > 0:
                    why = f"paused for {paused[provider]:.0f} s after failed connections"
                    delay = after_pause(paused[provider])
                elif self.provider_inflight[provider] >= self._share(provider):
                    why, delay = "at its share of max_ready", HANDBACK_DELAY
                if why:
                    handed.append(
                        SpoolOutcome(
                            seq=c.seq,
                            idx=c.idx,
                            state="queued",
                            text=f"{provider}: {why}",
                            next_attempt=now + delay,
                        )
                    )
                    continue
                self._count((c.seq, c.idx), provider)
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
        message = Message(seq, idx, rcpt, job.mail_from, body or b"")
        if body is None:  # final as `failed` (_CannotMake): not a bounce, suppresses no one
            outcome = _CannotMake(
                rcpt, Status.BOUNCED, Scope.MESSAGE, text=f"cannot make the message: {error}"
            )
            self._results_send.send_nowait(Result(message, outcome, "", ""))
            return
        pool = self.config.traffic_class(job.traffic).pool
        route = self._route(claimed.domain)
        if route is None:
            self._route_by_mx(message, claimed.domain, pool)
            return
        host, port = route
        message.hosts = [(host, host, port)]
        provider, spec, settings = self._static_target(pool, route)
        self._count((seq, idx), provider)
        self.delivery.send(
            message, host, port, spec.sources, settings, provider=provider, weights=spec.weights
        )

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

    # -- MX routing (docs/routing.md) -------------------------------------------------------

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
        """Deliver on the plan's first destination, or end the recipient as DNS said:
        bounced (permanent: null MX, NXDOMAIN, only refused hosts) or deferred."""
        if isinstance(result, RouteFailure):
            status = Status.BOUNCED if result.permanent else Status.DEFERRED
            outcome = Outcome(message.rcpt, status, Scope.SITE, None, result.esc, result.text)
            self._results_send.send_nowait(Result(message, outcome, "", ""))
            return
        message.hosts = result.destinations()
        _name, address, port = message.hosts[0]
        provider = self.providers.classify([name for name, _address, _port in message.hosts])
        if len(self._domain_provider) >= DOMAIN_CACHE:
            self._domain_provider.clear()
        self._domain_provider[result.domain.rstrip(".").lower()] = provider
        self._count((message.seq, message.idx), provider)
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

    def _count(self, key: tuple[int, int], provider: str) -> None:
        """Count an in-flight recipient against its provider's share (until recorded)."""
        if key not in self._provider_of:
            self._provider_of[key] = provider
            self.provider_inflight[provider] += 1

    # -- outcomes ---------------------------------------------------------------------------

    async def run_outcomes(self) -> None:
        """Record delivery results in batched commits, then publish their events."""
        async for first in self._results:
            await trio.sleep(OUTCOME_WINDOW)  # one wake-up per batch, not one per result
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
        changes = await self.writer.record_outcomes(outcomes)
        results = {(r.message.seq, r.message.idx): r for r in batch}
        events, hard = [], []
        for change in changes:
            result = results.get((change.seq, change.idx))
            job = self._job_of(change.seq)
            event = self._event(change, job, result)
            events.append(event)
            # Only a remote server's 5.1.x (a reply code) suppresses: a local DNS verdict
            # could come from a broken resolver and must not poison the list.
            if event.type == "bounced" and event.code >= 500 and event.status.startswith("5.1."):
                hard.append((change.record.to, event))
        for result in batch:
            key = (result.message.seq, result.message.idx)
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
        if hard:
            await self._suppress(hard, now)
        self._emit(events)
        self._wake.set()
        if not self.inflight:
            self._idle.set()

    def _spool_outcome(self, result: Result, now: float) -> SpoolOutcome:
        o, m = result.outcome, result.message
        code = o.code or 0
        enhanced = ".".join(map(str, o.esc)) if o.esc else ""
        common = {
            "seq": m.seq,
            "idx": m.idx,
            "code": code,
            "enhanced": enhanced,
            "host": result.host,
        }
        text = o.text[:500]
        if type(o) is _CannotMake:
            return SpoolOutcome(state="failed", text=text, **common)
        if o.status is Status.DELIVERED:
            return SpoolOutcome(state="delivered", text=text, **common)
        if o.status is Status.BOUNCED:
            return SpoolOutcome(state="bounced", text=text, **common)
        claimed = self.inflight.get((m.seq, m.idx))
        job = self._jobs.get(m.seq)
        traffic = self.config.traffic_class(job.traffic if job else "default")
        attempts = (claimed.attempts if claimed else 0) + 1
        when = next_attempt(
            now,
            attempts,
            first=parse_duration(traffic.first_retry),
            cap=parse_duration(traffic.max_retry),
        )
        if result.retry_at is not None:  # its lane is paused: not before the pause ends
            when = max(when, result.retry_at)
        return SpoolOutcome(state="deferred", text=text, next_attempt=when, **common)

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
            self._events.send_nowait(events)

    def _event(
        self, change: Change, job: _Job | JobRecord | None, result: Result | None = None
    ) -> Event:
        record = change.record
        last = record.last
        return Event(
            type=record.state,
            ts=last.at if last else self._clock(),
            job=job.id if job else "",
            recipient=record.to,
            message_id=record.message_id,
            tenant=job.tenant if job else "",
            campaign=job.campaign if job else "",
            attempt=record.attempts,
            host=(last.host if last else "") or (result.host if result else ""),
            source=result.source if result else "",
            code=last.code if last else 0,
            status=last.enhanced if last else "",
            text=last.text if last else "",
            queued_at=job.submitted if job else 0.0,
            next_attempt=record.next_attempt if record.state == "deferred" else 0.0,
        )


def _timeouts(config: Config) -> SMTPTimeouts:
    d = config.delivery
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
