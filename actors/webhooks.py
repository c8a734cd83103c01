"""The webhooks actor: posts each webhook's outbox to its receiver, in order, at least once.

One task per ``[[webhooks]]`` entry. It reads the first ``batch_max`` events of its
outbox (salvo.core.outbox; a read transaction on a worker thread), posts them as one
signed JSON body (salvo.core.webhooks), and deletes them in a write transaction on the
spool writer's thread after a 2xx. On any failure the batch stays at the head of the
outbox and is posted again, from the same first event, after an exponential backoff
with jitter: nothing after it goes first. Events older than ``expire_after`` are
dropped (counted and logged) instead of posted. docs/webhooks.md has the whole story.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio

from salvo import __version__
from salvo.actors.spool_writer import SpoolWriter
from salvo.core import webhooks as wh
from salvo.core.config import Config, WebhookSection, parse_duration
from salvo.core.errors import StartupError
from salvo.core.outbox import Entry
from salvo.core.spool import Spool

log = logging.getLogger("salvo.webhooks")

MAX_ERROR_BODY = 200  # bytes of a refusal's body kept for the status
IDLE_POLL = 1.0  # seconds between looks at an empty outbox, at most


def load_secret(path: Path) -> bytes:
    """A webhook's HMAC key: the file's text without surrounding white space (made by
    ``salvo node`` on the first start)."""
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise StartupError(f"[[webhooks]] secret_file {path}: cannot read it: {exc}") from exc
    if len(secret) < 16:
        raise StartupError(f"[[webhooks]] secret_file {path}: holds fewer than 16 bytes")
    return secret


@dataclass
class Hook:
    """One webhook: its settings (seconds) and what the status shows of it."""

    name: str
    url: str
    events: list[str]
    tenants: list[str]
    secret: bytes
    batch_max: int
    batch_wait: float
    timeout: float
    expire_after: float
    retry_first: float
    retry_max: float
    last_success: float | None = None
    last_error: str = ""
    last_error_at: float | None = None
    failures: int = 0  # consecutive
    next_try: float | None = None
    posts: dict[str, int] = field(default_factory=dict)  # by result, since start

    @classmethod
    def of(cls, section: WebhookSection, secret: bytes) -> Hook:
        def d(key: str) -> float:
            return parse_duration(getattr(section, key), key=f"[[webhooks]] {key}")

        return cls(
            name=section.name,
            url=section.url,
            events=list(section.events),
            tenants=list(section.tenants),
            secret=secret,
            batch_max=section.batch_max,
            batch_wait=d("batch_wait"),
            timeout=d("timeout"),
            expire_after=d("expire_after"),
            retry_first=d("retry_first"),
            retry_max=d("retry_max"),
        )


def result_label(status: int | None) -> str:
    """``salvo_webhook_posts_total``'s ``result``: 2xx, 4xx, 5xx, other, or error (no
    answer: refused, reset, timed out)."""
    if status is None:
        return "error"
    if 200 <= status < 600:
        return f"{status // 100}xx"
    return "other"


class Webhooks:
    """Every configured webhook's poster; run :meth:`run` in a nursery."""

    def __init__(
        self,
        config: Config,
        spool: Spool,
        writer: SpoolWriter,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.spool = spool
        self.outbox = spool.outbox
        self.writer = writer
        self._clock = clock
        self._rng = rng or random.Random()
        self.hooks = [
            Hook.of(h, load_secret(config.webhook_secret_path(h))) for h in config.webhooks
        ]
        self.metrics = None  # salvo.actors.metrics.Metrics, set by the node

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        headers = {"User-Agent": f"salvo/{__version__}", "Content-Type": "application/json"}
        # Redirects are not followed: a POST that a receiver moved is an error to fix.
        async with httpx.AsyncClient(headers=headers, follow_redirects=False) as client:
            for name in sorted(set(self.outbox.names()) - {h.name for h in self.hooks}):
                left = self.outbox.stats(name).pending
                if left:
                    log.warning("webhook %r is not configured any more: %d events kept", name, left)
            async with trio.open_nursery() as nursery:
                for hook in self.hooks:
                    nursery.start_soon(self._run_hook, client, hook)
                task_status.started()

    async def _run_hook(self, client: httpx.AsyncClient, hook: Hook) -> None:
        limit = hook.batch_max
        poll = min(IDLE_POLL, max(hook.batch_wait, 0.05))
        while True:
            entries = await trio.to_thread.run_sync(self.outbox.head, hook.name, limit)
            if not entries:
                await trio.sleep(poll)
                continue
            now = self._clock()
            old = [e for e in entries if now - e.ts_ms / 1000 > hook.expire_after]
            if old:
                await self._remove(hook, [], old)
                log.warning(
                    "webhook %r: %d events older than %gs dropped unposted (last error: %s)",
                    hook.name,
                    len(old),
                    hook.expire_after,
                    hook.last_error or "none",
                )
                continue
            wait = hook.batch_wait - (now - entries[0].ts_ms / 1000)
            if len(entries) < limit and wait > 0 and hook.failures == 0:
                await trio.sleep(min(wait, hook.batch_wait))
                entries = await trio.to_thread.run_sync(self.outbox.head, hook.name, limit)
            verdict = await self._post(client, hook, entries)
            if verdict == wh.OK:
                await self._remove(hook, [e.key for e in entries], [])
                limit = hook.batch_max
                continue
            if verdict == wh.SPLIT:
                limit = max(1, len(entries) // 2)
                continue  # at once: the receiver answered, it only wants less at a time
            delay = hook.next_try - self._clock() if hook.next_try else 0.0
            await trio.sleep(max(0.0, delay))

    async def _post(self, client: httpx.AsyncClient, hook: Hook, entries: list[Entry]) -> str:
        body = wh.payload(hook.name, self.outbox.ids(entries))
        stamp = int(self._clock())
        headers = {
            "X-Salvo-Timestamp": str(stamp),
            "X-Salvo-Signature": wh.sign(hook.secret, stamp, body),
            "X-Salvo-Webhook": hook.name,
        }
        status: int | None = None
        error = ""
        retry_hint = None
        with trio.move_on_after(hook.timeout) as scope:
            try:
                async with client.stream(
                    "POST", hook.url, content=body, headers=headers, timeout=hook.timeout
                ) as response:
                    status = response.status_code
                    retry_hint = response.headers.get("retry-after")
                    if not 200 <= status < 300:
                        error = f"HTTP {status}: " + await _start_of(response)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}".strip()[:300]
        if scope.cancelled_caught:
            status, error = None, f"no answer within {hook.timeout:g}s"
        label = result_label(status)
        hook.posts[label] = hook.posts.get(label, 0) + 1
        if self.metrics is not None:
            self.metrics.webhook_posts.labels(hook.name, label).inc()
        verdict = wh.verdict(status) if status is not None else wh.RETRY
        if verdict == wh.SPLIT and len(entries) == 1:
            verdict = wh.RETRY  # one event is as small as a batch gets
        now = self._clock()
        if verdict == wh.OK:
            hook.last_success, hook.failures, hook.next_try = now, 0, None
            return verdict
        hook.last_error, hook.last_error_at = error, now
        if verdict == wh.SPLIT:
            return verdict
        hook.failures += 1
        delay = wh.backoff(hook.failures, hook.retry_first, hook.retry_max, self._rng)
        hint = wh.retry_after(retry_hint, hook.retry_max)
        if hint is not None:
            delay = max(delay, hint)
        hook.next_try = now + delay
        if hook.failures == 1 or hook.failures % 10 == 0:
            log.warning(
                "webhook %r: %s (%d failures in a row; %d events wait; next try in %.1fs)",
                hook.name,
                error,
                hook.failures,
                len(entries),
                delay,
            )
        return verdict

    async def _remove(self, hook: Hook, delivered: list[bytes], expired: list[Entry]) -> None:
        keys = [e.key for e in expired]
        outbox, store = self.outbox, self.spool.store

        def write() -> tuple[int, int]:
            return store.write(lambda txn: outbox.remove_in(txn, hook.name, delivered, keys))

        await self.writer.run_sync(write)

    # -- status (GET /api/webhooks, salvo webhooks status, /metrics) -------------------------

    def status(self) -> list[dict]:
        """Every webhook's state, and outboxes of webhooks no longer configured that still
        hold events (read transactions: call it on a worker thread)."""
        now = self._clock()
        out = []
        for hook in self.hooks:
            stats = self.outbox.stats(hook.name)
            out.append(
                {
                    "name": hook.name,
                    "url": hook.url,
                    "configured": True,
                    "events": hook.events,
                    "tenants": hook.tenants,
                    "pending": stats.pending,
                    "oldest_pending_age_s": _age(now, stats.oldest),
                    "last_success": hook.last_success,
                    "last_error": hook.last_error,
                    "last_error_at": hook.last_error_at,
                    "consecutive_failures": hook.failures,
                    "next_try": hook.next_try,
                    "delivered": stats.delivered,
                    "expired": stats.expired,
                    "posts": dict(hook.posts),
                }
            )
        configured = {h.name for h in self.hooks}
        for name in self.outbox.names():
            if name in configured:
                continue
            stats = self.outbox.stats(name)
            if stats.pending:
                out.append(
                    {
                        "name": name,
                        "configured": False,
                        "pending": stats.pending,
                        "oldest_pending_age_s": _age(now, stats.oldest),
                        "delivered": stats.delivered,
                        "expired": stats.expired,
                    }
                )
        return out

    def pending(self) -> list[tuple[str, int]]:
        """(name, pending events) of every configured webhook (for the gauge)."""
        return [(h.name, self.outbox.stats(h.name).pending) for h in self.hooks]


def _age(now: float, oldest: float | None) -> float | None:
    return None if oldest is None else round(max(0.0, now - oldest), 3)


async def _start_of(response: httpx.Response) -> str:
    """The first bytes of a refusal's body, as text, for the status (never all of it)."""
    got = b""
    try:
        async for chunk in response.aiter_raw():
            got += chunk
            if len(got) >= MAX_ERROR_BODY:
                break
    except httpx.HTTPError:
        pass
    return got[:MAX_ERROR_BODY].decode("utf-8", "replace").strip() or response.reason_phrase
