"""Content scoring at intake: asks spamd about each new template before a job is durable.

The ingress calls :meth:`ContentChecker.screen` for every job in the job's own task, so a
job waiting for spamd holds up no other producer. A template's score is cached by content
hash (:mod:`salvo.core.content.screen`), and jobs of one template that arrive while it is
being scored wait for that one exchange: a campaign in many jobs costs one spamd call.
At most ``max_connections`` exchanges run at once.

spamd down, slow or answering what is not spamd's protocol: the job is accepted (or gets
``retry`` with ``when_down = "refuse"``) and a ``content_unchecked`` event says why. After
such a failure spamd is not asked again for ``DOWN_PAUSE`` seconds, so that a dead spamd
costs each job no timeout; a failure is not cached.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio

from salvo.core.config import ContentSection, parse_duration, parse_size
from salvo.core.content import spamc
from salvo.core.content.screen import ContentPolicy, ScoreCache, content_key, sample_message
from salvo.core.events import Event
from salvo.core.protocol import Job, Reply
from salvo.ext.errors import SalvoError

log = logging.getLogger("salvo.content")

DOWN_PAUSE = 5.0  # seconds without spamd calls after a failed one


class ContentUnavailable(SalvoError):
    """spamd gave no usable score: the text says why."""

    temporary = True


class _Pending:
    """One spamd exchange that jobs of the same template wait for."""

    __slots__ = ("done", "error", "score")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.score: spamc.Score | None = None
        self.error: str = ""


class ContentStatistics:
    """Counters: spamd exchanges made, failed, and jobs answered from the cache."""

    def __init__(self) -> None:
        self.calls = 0
        self.failures = 0
        self.cache_hits = 0


async def ask_spamd(
    address: tuple[str, int], kind: spamc.Kind, message: bytes, timeout: float
) -> spamc.Score:
    """One exchange with spamd; raises :class:`ContentUnavailable` naming the failure."""
    host, port = address
    where = f"spamd at {host}:{port}"
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                await stream.send_all(spamc.request(kind, message))
                data = bytearray()
                while not spamc.reply_complete(data):
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        break
                    data += chunk
                    if len(data) > spamc.MAX_REPLY:
                        break
        return spamc.parse_reply(bytes(data), kind)
    except trio.TooSlowError:
        raise ContentUnavailable(f"{where}: no answer within {timeout:g} s") from None
    except OSError as exc:
        raise ContentUnavailable(f"{where}: {exc.strerror or exc}") from None
    except spamc.SpamdReplyError as exc:
        raise ContentUnavailable(f"{where}: {exc}") from None


class ContentChecker:
    """``[content]``'s screen; ``events`` gets the content events (a list per send)."""

    def __init__(
        self,
        section: ContentSection,
        events: trio.MemorySendChannel[list[Event]] | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.address = section.address()
        self.policy = ContentPolicy(
            reject_at=section.reject_at,
            warn_at=section.warn_at,
            max_size=parse_size(section.max_size),
        )
        self._timeout = parse_duration(section.timeout)
        self._refuse = section.when_down == "refuse"
        self._cache = ScoreCache(section.cache_size)
        self._pending: dict[bytes, _Pending] = {}
        self._limiter = trio.CapacityLimiter(section.max_connections)
        self._events = events
        self._clock = clock
        self._down_until = 0.0
        self._down_why = ""
        self.statistics = ContentStatistics()
        self.metrics = None  # salvo.actors.metrics.Metrics, set by the node
        self.spool = None  # salvo.core.spool.Spool: its webhook outbox, set by the node
        self._hooked: list[Event] = []  # content events not yet in the webhook outbox

    async def screen(self, job: Job) -> Reply | None:
        """The reply that refuses ``job`` for its content (``error``), or for want of a
        score (``retry``, when configured to refuse), or None: go on to the spool."""
        result, reply = await self._screen(job)
        if self.metrics is not None:
            self.metrics.content_checks.labels(result).inc()
        if self._hooked:  # durable for the webhooks before the job is answered
            hooked, self._hooked = self._hooked, []
            await trio.to_thread.run_sync(self.spool.add_webhook_events, hooked)
        return reply

    async def _screen(self, job: Job) -> tuple[str, Reply | None]:
        key = content_key(job)
        score = self._cache.get(key)
        if score is not None:
            self.statistics.cache_hits += 1
        else:
            try:
                score = await self._score(key, job)
            except ContentUnavailable as exc:
                return self._unavailable(job, str(exc))
            if score is None:
                return "unrendered", None  # the spool's render check answers the job
        verdict = self.policy.verdict(score)
        if verdict == "pass":
            return verdict, None
        text = self.policy.describe(score, verdict)
        if verdict == "warn":
            self._emit(job, "content_warning", text, score.score)
            return verdict, None
        self._emit(job, "content_rejected", text, score.score)
        return verdict, Reply(id=job.id, status="error", error=text)

    async def _score(self, key: bytes, job: Job) -> spamc.Score | None:
        pending = self._pending.get(key)
        if pending is not None:  # the same template is being scored: wait for it
            await pending.done.wait()
            if pending.error:
                raise ContentUnavailable(pending.error)
            return pending.score
        now = self._clock()
        if now < self._down_until:
            raise ContentUnavailable(f"{self._down_why} (not asked again for a few seconds)")
        sample = sample_message(job, key, now, self.policy.max_size)
        if sample is None:
            return None
        pending = self._pending[key] = _Pending()
        try:
            async with self._limiter:
                self.statistics.calls += 1
                pending.score = await ask_spamd(self.address, "SYMBOLS", sample, self._timeout)
            self._cache.put(key, pending.score)
            self._count_request("ok")
            return pending.score
        except ContentUnavailable as exc:
            self.statistics.failures += 1
            self._count_request("failed")
            pending.error = str(exc)
            self._down_until = self._clock() + DOWN_PAUSE
            self._down_why = pending.error
            raise
        finally:
            # Cancelled (the node stops): the waiters go on without a score.
            if pending.score is None and not pending.error:
                pending.error = "the content check was cancelled"
            del self._pending[key]
            pending.done.set()

    def _unavailable(self, job: Job, why: str) -> tuple[str, Reply | None]:
        if self._refuse:
            self._emit(job, "content_unchecked", f"{why}; job refused (when_down = refuse)")
            reply = Reply(id=job.id, status="retry", error=f"content check unavailable: {why}")
            return "refused", reply
        self._emit(job, "content_unchecked", f"{why}; job accepted unscored")
        return "unchecked", None

    def _count_request(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.spamd_requests.labels(outcome).inc()

    def _emit(self, job: Job, kind: str, text: str, score: float = 0.0) -> None:
        log.info("job %r: %s: %s", job.id, kind, text)
        if self._events is None:
            return
        event = Event(
            type=kind,
            ts=self._clock(),
            job=job.id,
            tenant=job.tenant,
            campaign=job.campaign or "",
            text=text,
            score=score,
        )
        if self.spool is not None and self.spool.outbox.active:
            self._hooked.append(event)
        try:
            self._events.send_nowait([event])
        except (trio.WouldBlock, trio.ClosedResourceError):
            log.warning("job %r: %s event dropped (the event channel is full)", job.id, kind)
