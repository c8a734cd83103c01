"""The node's side of erasure and retention (docs/privacy.md).

- Erasure over the admin API (:meth:`ErasureService.erase`): the spool's records are
  rewritten in short transactions on the writer's thread (salvo.core.erasure), then the
  scrub below runs at once.
- Scrub requests (the ``erase`` sub-database, written by an erasure here or by
  ``salvo erase`` in another process): looked for every ``CHECK_EVERY`` seconds; the event
  logs are scrubbed by the events actor (a :class:`~salvo.actors.events.LogTask`, in order
  with the events), the spool file is cleaned of old copies
  (:func:`salvo.core.erasure.clean_file`, each of its transactions on the writer's
  thread), the requests are dropped and an ``erased`` event each is published.
- Retention of the event logs by age (``[retention] events``): a LogTask every
  ``retention_every`` seconds.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from salvo.actors.events import EventLog, LogTask
from salvo.actors.log_scrub import HashMatcher
from salvo.actors.spool_writer import SpoolWriter
from salvo.core import erasure
from salvo.core.spool import Spool

log = logging.getLogger("salvo.erasure")

CHECK_EVERY = 1.0


class ErasureService:
    """See the module docstring; ``events_max_age`` None: no retention by age."""

    def __init__(
        self,
        spool: Spool,
        writer: SpoolWriter,
        events: trio.MemorySendChannel,
        *,
        events_max_age: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spool = spool
        self.writer = writer
        self.events = events
        self.events_max_age = events_max_age
        self.clock = clock
        self._lock = trio.Lock()
        self._wake = trio.Event()
        self.retention_every = min(60.0, max(0.2, events_max_age / 4)) if events_max_age else None

    def _write(self, fn: Callable[[Any], Any]) -> Any:
        """A durable write transaction on the writer's thread, from a worker thread."""
        return trio.from_thread.run(self.writer.run_sync, self.spool.store.write, fn)

    async def run(self, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        last_retention = 0.0
        while True:
            with trio.move_on_after(CHECK_EVERY):
                await self._wake.wait()
            self._wake = trio.Event()
            try:
                await self.process()
            except Exception:  # the next turn tries again; the node goes on
                log.exception("event-log scrub of an erasure failed")
            now = self.clock()
            if self.retention_every and now - last_retention >= self.retention_every:
                last_retention = now
                await self._log_task(
                    functools.partial(EventLog.expire, max_age=self.events_max_age)
                )

    async def _log_task(self, fn: Callable[[EventLog], Any]) -> Any:
        task = LogTask(fn)
        await self.events.send(task)
        await task.done.wait()
        if task.error is not None:
            raise task.error
        return task.result

    async def process(self) -> int:
        """Carry out the waiting scrub requests; returns how many."""
        async with self._lock:
            store = self.spool.store
            dbs = store.dbs
            pending = await trio.to_thread.run_sync(
                store.read, lambda txn: erasure.scrub_requests_in(txn, dbs)
            )
            if not pending:
                return 0
            secret = await trio.to_thread.run_sync(store.read, self.spool.suppression.secret_in)
            matcher = HashMatcher(secret, [req for _, req in pending])
            files, lines = await self._log_task(functools.partial(EventLog.scrub, matcher=matcher))
            await trio.to_thread.run_sync(erasure.clean_file, store, self._write)
            keys = [key for key, _ in pending]
            await self.writer.run_sync(
                store.write, lambda txn: erasure.scrub_done_in(txn, dbs, keys)
            )
            now = self.clock()
            await self.events.send([erasure.erased_event(req.tenant, now) for _, req in pending])
            log.info(
                "erasure: %d request(s) done, %d event log line(s) in %d file(s) rewritten",
                len(pending),
                lines or 0,
                files or 0,
            )
            return len(pending)

    async def erase(self, address: str, tenant: str = "") -> dict:
        """Erase an address now (the admin API); raises InvalidAddressError."""
        eraser = erasure.Eraser(self.spool, address, tenant=tenant)
        now = self.clock()
        report = await trio.to_thread.run_sync(
            functools.partial(eraser.run, now, write=self._write)
        )
        await self.process()
        left = await trio.to_thread.run_sync(self.spool.store.count_in_file, eraser.pattern)
        return {
            "found": report.address_found,
            "cancelled": report.cancelled,
            "rewritten": report.rewritten,
            "suppressed": report.suppressed,
            "left_in_spool_file": left,
        }
