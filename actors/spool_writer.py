"""The spool's group-commit writer: many submitting tasks, one durable transaction each turn.

Any number of tasks ``await writer.submit(job)``; every submission that arrives while a
commit is running goes into the next transaction, and each submitter gets its result only
after the transaction holding its job has committed (``sync=True``). Outcomes are batched
the same way. All transactions run on one worker thread (a limiter of one), each begun and
committed inside a single ``trio.to_thread.run_sync`` call, as py-lmdb requires.

Submissions wait on their batch (one ``trio.Event`` per transaction, not per job) and take
their result from the batch by position.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import trio

from salvo.core.errors import SalvoError
from salvo.core.kpis import Delta, merge_delta
from salvo.core.protocol import Job
from salvo.core.spool import Change, Outcome, Spool, Submitted

__all__ = ["SpoolWriter", "WriterStatistics"]

R = TypeVar("R")


class _Slot:
    """One waiting submitter: its result or error arrives after the commit."""

    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    async def wait(self) -> Any:
        await self.done.wait()
        if self.error is not None:
            # A fresh instance per waiter: one exception object raised in many tasks
            # would chain their tracebacks together.
            raise type(self.error)(*self.error.args) from self.error
        return self.result


class _Batch:
    """The jobs of one transaction; ``done`` is set after it committed (or failed)."""

    __slots__ = ("done", "error", "jobs", "recipients", "results")

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.recipients = 0
        self.done = trio.Event()
        self.results: list[Submitted] = []
        self.error: BaseException | None = None


class WriterStatistics:
    """Counters: transactions committed, jobs and outcomes written, largest batch."""

    def __init__(self) -> None:
        self.commits = 0
        self.jobs = 0
        self.outcomes = 0
        self.largest_batch = 0


class SpoolWriter:
    """Serialize and group the spool's writes; run :meth:`run` in a nursery.

    ``max_jobs`` and ``max_recipients`` bound one transaction (a larger backlog waits for
    the next one). The recipient bound keeps a burst of big jobs from becoming one long
    transaction: the first jobs commit, and get claimed and signed, while the rest are
    written (a burst of 30 jobs of 1,000 recipients held the signers idle for 0.3 s).
    """

    def __init__(
        self,
        spool: Spool,
        *,
        clock: Callable[[], float] = time.time,
        max_jobs: int = 2000,
        max_recipients: int = 5000,
    ) -> None:
        self.spool = spool
        self._clock = clock
        self._max_jobs = max_jobs
        self._max_recipients = max_recipients
        self._batches: deque[_Batch] = deque()  # the last one is open for more jobs
        self._outcomes: list[tuple[tuple[list[Outcome], Any], _Slot]] = []
        self._wake = trio.Event()
        self._limiter = trio.CapacityLimiter(1)
        self._closed = False
        self._stats = WriterStatistics()

    def statistics(self) -> WriterStatistics:
        """Counters since start."""
        return self._stats

    async def submit(self, job: Job) -> Submitted:
        """Queue ``job``; return its reply (and whether it was a duplicate) once it is
        durably committed.

        Raises SpoolFullError (temporary) when the spool refused the batch.
        """
        if self._closed:
            raise trio.ClosedResourceError("the spool writer is closed")
        batches, size = self._batches, len(job.recipients)
        if (
            batches
            and len(batches[-1].jobs) < self._max_jobs
            and batches[-1].recipients + size <= self._max_recipients
        ):
            batch = batches[-1]
        else:
            batch = _Batch()
            batches.append(batch)
        position = len(batch.jobs)
        batch.jobs.append(job)
        batch.recipients += size
        self._wake.set()
        await batch.done.wait()
        if batch.error is not None:
            # A fresh instance per waiter: one exception object raised in many tasks
            # would chain their tracebacks together.
            raise type(batch.error)(*batch.error.args) from batch.error
        return batch.results[position]

    async def record_outcomes(
        self,
        outcomes: Sequence[Outcome],
        book: Callable[[list[Change]], Delta] | None = None,
        also: Callable[[Any, list[Change]], None] | None = None,
    ) -> list[Change]:
        """Record delivery outcomes in the next transaction; return the changes made.

        ``book(changes)`` (pure: it may run more than once) gives the KPI bucket
        increments of the changes; they are written in the same transaction. So is
        whatever ``also(txn, changes)`` writes (the warm-up counts; it may run more than
        once too)."""
        slot = self._enqueue(self._outcomes, ((list(outcomes), book), also))
        return await slot.wait()

    async def run_sync(self, fn: Callable[..., R], *args: Any) -> R:
        """Run ``fn(*args)`` on the writer's thread, between its group commits.

        For the other write transactions of the node (claims, expiry, purge, suppression):
        py-lmdb ties a write transaction to its thread, and one thread keeps them ordered.
        """
        if self._closed:
            raise trio.ClosedResourceError("the spool writer is closed")
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def _enqueue(self, queue: list, item: Any) -> _Slot:
        if self._closed:
            raise trio.ClosedResourceError("the spool writer is closed")
        slot = _Slot()
        queue.append((item, slot))
        self._wake.set()
        return slot

    def close(self) -> None:
        """Refuse new work; :meth:`run` returns after committing what is queued."""
        self._closed = True
        self._wake.set()

    async def run(self) -> None:
        """The commit loop: one transaction per turn for jobs, one for outcomes."""
        while True:
            if not self._batches and not self._outcomes:
                if self._closed:
                    return
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            if self._outcomes:
                batch, self._outcomes = self._outcomes, []
                await self._commit(batch, self._write_outcomes)
            if self._batches:
                await self._commit_jobs(self._batches.popleft())
                if self._batches:
                    # Let the submitters just answered tell the scheduler, and its claim
                    # take the spool thread before the next batch of jobs (run_sync waits
                    # in line, FIFO): a burst of jobs must not hold off claims until all
                    # of it is written, with the signers idle meanwhile.
                    for _ in range(3):
                        await trio.lowlevel.cancel_shielded_checkpoint()

    async def _commit_jobs(self, batch: _Batch) -> None:
        try:
            # Shielded: once begun, the transaction's outcome must reach its submitters.
            with trio.CancelScope(shield=True):
                batch.results = await trio.to_thread.run_sync(
                    self._write_jobs, batch.jobs, limiter=self._limiter
                )
        except SalvoError as exc:
            batch.error = exc
        batch.done.set()

    async def _commit(self, batch: list, write: Callable[[list], list]) -> None:
        slots = [slot for _, slot in batch]
        try:
            # Shielded: once begun, the transaction's outcome must reach its submitters.
            with trio.CancelScope(shield=True):
                results = await trio.to_thread.run_sync(write, batch, limiter=self._limiter)
        except SalvoError as exc:
            for slot in slots:
                slot.error = exc
                slot.done.set()
            return
        for slot, result in zip(slots, results, strict=True):
            slot.result = result
            slot.done.set()

    def _write_jobs(self, jobs: list[Job]) -> list[Submitted]:
        results = self.spool.submit_many(jobs, self._clock())
        self._count(len(jobs), 0)
        return results

    def _write_outcomes(self, batch: list) -> list:
        flat = [o for ((outcomes, _), _), _ in batch for o in outcomes]
        books = [book for ((_, book), _), _ in batch]
        alsos = [also for (_, also), _ in batch]
        result: list = []

        def then(txn: Any, changes: list[Change]) -> None:
            by_key: dict[tuple[int, int], Change] = {(c.seq, c.idx): c for c in changes}
            result[:] = [
                [by_key[o.seq, o.idx] for o in outs if (o.seq, o.idx) in by_key]
                for ((outs, _), _), _ in batch
            ]
            for also, mine in zip(alsos, result, strict=True):
                if also is not None:
                    also(txn, mine)
            if any(books):
                delta: Delta = {}
                for book, mine in zip(books, result, strict=True):
                    if book is not None and mine:
                        delta = merge_delta(delta, book(mine))
                self.spool.add_kpis_in(txn, delta)

        self.spool.record_outcomes(flat, self._clock(), then)
        self._count(0, len(flat))
        return result

    def _count(self, jobs: int, outcomes: int) -> None:
        self._stats.commits += 1
        self._stats.jobs += jobs
        self._stats.outcomes += outcomes
        self._stats.largest_batch = max(self._stats.largest_batch, jobs)
