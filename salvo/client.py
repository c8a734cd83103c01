"""Submit jobs to a salvo node: :class:`Producer` (blocking) and :class:`TrioProducer`.

Both keep many jobs in flight on one DEALER socket (``docs/protocol.md``), give each job
its own deadline, and resubmit the *same id* when the node answers ``retry`` (after an
exponential backoff) or when no reply came within ``timeout`` (the reply may have been
lost; the node answers a known id with its first reply, so this never sends twice).
After ``attempts`` sends the job ends: with the last ``retry`` reply, or with
:class:`SubmitTimeout`.

A job is a :class:`~salvo.core.protocol.Job` or a dict in the protocol's form (key
``"from"``); a dict without an ``id`` gets a new one (``uuid4`` as 32 hex digits).
Replies are :class:`~salvo.core.protocol.Reply`.

:class:`Producer` runs a :class:`TrioProducer` on a background thread: its methods may be
called from any thread (a web app's workers share one producer).
"""

from __future__ import annotations

import contextlib
import heapq
import math
import os
import queue
import random
import threading
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from itertools import islice
from typing import Any

import trio
import zmq

from salvo.actors.keys import set_client_keys
from salvo.actors.zmqtrio import TrioSocket, context
from salvo.core.protocol import InvalidJob, Job, ProtocolError, Reply, decode_reply, encode_job
from salvo.ext.errors import SalvoError

__all__ = [
    "DEFAULT_ENDPOINT",
    "Producer",
    "SubmitTimeout",
    "TrioProducer",
    "open_trio_producer",
    "prepare_job",
]

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5557"


class SubmitTimeout(SalvoError, TimeoutError):
    """No reply to a job after every attempt; the node may or may not have it.

    Submitting the same id again later is safe: the node answers a known id with its
    first reply.
    """

    temporary = True

    def __init__(self, job_id: str, attempts: int, timeout: float) -> None:
        super().__init__(job_id, attempts, timeout)
        self.job_id = job_id
        self.attempts = attempts
        self.timeout = timeout

    def __str__(self) -> str:
        return (
            f"no reply for job {self.job_id!r} after {self.attempts} attempts "
            f"({self.timeout:g} s each); is the node running at the endpoint?"
        )

    def as_reply(self) -> Reply:
        """This timeout as a reply with status "error" (what ``submit_many`` yields)."""
        return Reply(id=self.job_id, status="error", error=f"timeout: {self}")


Outcome = Reply | SubmitTimeout
Waiter = Callable[[Outcome], None]


def prepare_job(job: Job | dict[str, Any]) -> tuple[str, bytes]:
    """``(id, frame)`` for a job; a dict without an id gets a uuid4 one."""
    if isinstance(job, Job):
        return job.id, encode_job(job)
    if not isinstance(job, dict):
        raise TypeError(f"a job is a dict or a salvo.core.protocol.Job, not {type(job).__name__}")
    job_id = job.get("id")
    if job_id is None:
        job_id = uuid.uuid4().hex
        job = {**job, "id": job_id}
    if not isinstance(job_id, str) or not job_id:
        raise InvalidJob("must be a non-empty string", "id")
    return job_id, encode_job(job)


class _Pending:
    __slots__ = ("attempts", "frame", "queued", "token", "waiters")

    def __init__(self, frame: bytes, waiter: Waiter) -> None:
        self.frame = frame
        self.waiters = [waiter]
        self.attempts = 0
        self.queued = True  # in the outbox, waiting for the socket
        self.token = 0  # invalidates older timers of this job


class _InFlight:
    """Sans-IO bookkeeping of the jobs in flight: what to send, when, and who waits.

    Time is passed in. A timer per job fires either a resend (after a ``retry``
    backoff, or after ``timeout`` without a reply) or, when attempts are used up, the end.
    """

    def __init__(self, *, timeout: float, attempts: int, backoff: float, max_backoff: float):
        self.timeout, self.attempts = timeout, attempts
        self.backoff, self.max_backoff = backoff, max_backoff
        self._pending: dict[str, _Pending] = {}
        self._outbox: deque[str] = deque()
        self._timers: list[tuple[float, int, str, int]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, job_id: str, frame: bytes, waiter: Waiter, now: float | None = None) -> None:
        """Queue a job; with ``now``, it also times out if it cannot even be sent."""
        pending = self._pending.get(job_id)
        if pending is not None:  # the same id twice: one submission, one reply for both
            pending.waiters.append(waiter)
            return
        pending = self._pending[job_id] = _Pending(frame, waiter)
        self._outbox.append(job_id)
        if now is not None:
            self._schedule(job_id, pending, now + self.timeout)

    def next_to_send(self) -> tuple[str, bytes] | None:
        """The next job to send (it stays first until :meth:`sent`)."""
        while self._outbox:
            pending = self._pending.get(self._outbox[0])
            if pending is not None and pending.queued:
                return self._outbox[0], pending.frame
            self._outbox.popleft()  # answered while it waited for a resend
        return None

    def sent(self, job_id: str, now: float) -> None:
        self._outbox.popleft()
        pending = self._pending[job_id]
        pending.queued = False
        pending.attempts += 1
        self._schedule(job_id, pending, now + self.timeout)

    def on_reply(self, frame: bytes, now: float) -> None:
        try:
            reply = decode_reply(frame)
        except ProtocolError:
            return  # not from a salvo node: nothing to correlate it with
        pending = self._pending.get(reply.id)
        if pending is None or pending.queued:
            return  # a late reply to an attempt already answered (or a stray)
        if reply.status == "retry" and pending.attempts < self.attempts:
            delay = min(self.max_backoff, self.backoff * 2 ** (pending.attempts - 1))
            self._schedule(reply.id, pending, now + delay * random.uniform(0.5, 1.0))
            return
        self._finish(reply.id, reply)

    def on_time(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, _, job_id, token = heapq.heappop(self._timers)
            pending = self._pending.get(job_id)
            if pending is None or pending.token != token:
                continue
            if pending.queued:
                # Not sent within a whole timeout: no node takes it (none is reachable, or
                # each refuses this producer's CURVE handshake). That counts as an attempt.
                pending.attempts += 1
                if pending.attempts >= self.attempts:
                    self._finish(job_id, SubmitTimeout(job_id, pending.attempts, self.timeout))
                else:
                    self._schedule(job_id, pending, now + self.timeout)
                continue
            if pending.attempts >= self.attempts:
                self._finish(job_id, SubmitTimeout(job_id, pending.attempts, self.timeout))
            else:
                pending.queued = True
                self._outbox.append(job_id)
                self._schedule(job_id, pending, now + self.timeout)

    def has_outbox(self) -> bool:
        return self.next_to_send() is not None

    def next_deadline(self) -> float:
        return self._timers[0][0] if self._timers else math.inf

    def _schedule(self, job_id: str, pending: _Pending, when: float) -> None:
        pending.token += 1
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, job_id, pending.token))

    def _finish(self, job_id: str, outcome: Outcome) -> None:
        for waiter in self._pending.pop(job_id).waiters:
            waiter(outcome)


class TrioProducer:
    """Submits jobs from Trio tasks; made by :func:`open_trio_producer`.

    One background task owns the socket; ``submit`` and ``submit_many`` may be called
    from any number of tasks. Cancelling ``submit`` does not recall the job.
    """

    def __init__(self, flight: _InFlight, max_in_flight: int) -> None:
        self._flight = flight
        self._max_in_flight = max_in_flight
        self._slots = trio.Semaphore(max_in_flight)
        self._wakeup: trio.CancelScope | None = None

    def start_submit(self, job: Job | dict[str, Any], on_outcome: Waiter) -> str:
        """Queue a job without waiting; return its id.

        ``on_outcome`` is called once, in the Trio thread, with the :class:`Reply` or a
        :class:`SubmitTimeout`. It must not block.
        """
        job_id, frame = prepare_job(job)
        self._start(job_id, frame, on_outcome)
        return job_id

    async def submit(self, job: Job | dict[str, Any]) -> Reply:
        """Submit one job and return the node's reply; raise :class:`SubmitTimeout`."""
        job_id, frame = prepare_job(job)
        done = trio.Event()
        outcomes: list[Outcome] = []

        def finished(outcome: Outcome) -> None:
            outcomes.append(outcome)
            done.set()

        async with self._slots:
            self._start(job_id, frame, finished)
            await done.wait()
        if isinstance(outcomes[0], SubmitTimeout):
            raise outcomes[0]
        return outcomes[0]

    async def submit_many(
        self, jobs: Iterable[Job | dict[str, Any]], *, window: int | None = None
    ) -> AsyncIterator[Reply]:
        """Submit jobs with up to ``window`` in flight; yield replies as they come.

        Replies come in completion order (match them by ``id``); a job that timed out
        yields :meth:`SubmitTimeout.as_reply` (status "error").
        """
        window = window or self._max_in_flight
        send, receive = trio.open_memory_channel[Outcome](math.inf)
        todo = iter(jobs)
        in_flight = 0
        while True:
            for job in islice(todo, window - in_flight):
                self.start_submit(job, send.send_nowait)
                in_flight += 1
            if not in_flight:
                return
            outcome = await receive.receive()
            in_flight -= 1
            yield outcome.as_reply() if isinstance(outcome, SubmitTimeout) else outcome

    def _start(self, job_id: str, frame: bytes, waiter: Waiter) -> None:
        self._flight.add(job_id, frame, waiter, trio.current_time())
        if self._wakeup is not None:
            self._wakeup.cancel()

    async def _run(self, sock: TrioSocket) -> None:
        flight = self._flight
        while True:
            now = trio.current_time()
            flight.on_time(now)
            while (item := flight.next_to_send()) is not None:
                try:
                    sock.send_multipart_nowait([item[1]], copy=False)
                except trio.WouldBlock:
                    break
                flight.sent(item[0], now)
            for frames in sock.recv_batch_nowait(1000, copy=True):
                flight.on_reply(frames[-1], now)  # the reply is the last frame (REQ-style too)
            mask = zmq.POLLIN | (zmq.POLLOUT if flight.has_outbox() else 0)
            with trio.move_on_at(flight.next_deadline()) as self._wakeup:
                await sock.wait_events(mask)
            self._wakeup = None


@asynccontextmanager
async def open_trio_producer(
    endpoint: str = DEFAULT_ENDPOINT,
    *,
    timeout: float = 30.0,
    attempts: int = 5,
    backoff: float = 0.5,
    max_backoff: float = 10.0,
    max_in_flight: int = 1000,
    curve_server_key: str | os.PathLike | None = None,
    curve_key: str | os.PathLike | None = None,
) -> AsyncIterator[TrioProducer]:
    """Connect a DEALER socket to ``endpoint`` and yield a :class:`TrioProducer`.

    ``timeout``: seconds to wait for each attempt's reply; ``attempts``: sends per job
    (retries and resends included); ``backoff``: first delay after a ``retry`` reply,
    doubled each time up to ``max_backoff``; ``max_in_flight``: concurrent ``submit``
    calls (and ``submit_many``'s default window).

    CURVE (a node with ``[ingress] curve``): ``curve_server_key`` is the node's public key
    file (``node.key``), ``curve_key`` this producer's key pair (``NAME.key_secret`` of
    ``salvo keys generate``); both or neither. A node that does not know the key refuses
    the handshake: every job then ends with :class:`SubmitTimeout`.
    """
    if attempts < 1 or timeout <= 0 or max_in_flight < 1:
        raise ValueError("attempts and max_in_flight must be >= 1 and timeout > 0")
    if (curve_server_key is None) != (curve_key is None):
        raise ValueError("give both curve_server_key and curve_key, or neither")
    flight = _InFlight(timeout=timeout, attempts=attempts, backoff=backoff, max_backoff=max_backoff)
    raw = context().socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)  # unanswered jobs are resent by whoever submits them again
    with TrioSocket(raw) as sock:
        if curve_key is not None:
            set_client_keys(raw, curve_server_key, curve_key)
        try:
            raw.connect(endpoint)
        except zmq.ZMQError as exc:
            raise SalvoError(f"cannot connect to {endpoint!r}: {exc}") from None
        producer = TrioProducer(flight, max_in_flight)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer._run, sock)
            try:
                yield producer
            finally:
                nursery.cancel_scope.cancel()


class Producer:
    """A blocking producer for scripts and web apps; safe to share between threads.

    Runs a :class:`TrioProducer` (same options as :func:`open_trio_producer`) on a
    daemon thread. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, **options: Any) -> None:
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(
            target=trio.run, args=(self._main, endpoint, options), name="salvo-producer"
        )
        self._thread.daemon = True
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure

    async def _main(self, endpoint: str, options: dict[str, Any]) -> None:
        try:
            async with open_trio_producer(endpoint, **options) as producer:
                self._producer = producer
                self._token = trio.lowlevel.current_trio_token()
                self._stop = trio.Event()
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            if self._ready.is_set():
                raise
            self._failure = exc
            self._ready.set()

    def submit(self, job: Job | dict[str, Any]) -> Reply:
        """Submit one job and return the node's reply; raise :class:`SubmitTimeout`."""
        return trio.from_thread.run(self._producer.submit, job, trio_token=self._token)

    def submit_many(
        self, jobs: Iterable[Job | dict[str, Any]], *, window: int = 1000
    ) -> Iterator[Reply]:
        """Submit jobs with up to ``window`` in flight; yield replies in completion order.

        ``jobs`` is consumed lazily in the calling thread. A job that timed out yields
        :meth:`SubmitTimeout.as_reply` (status "error").
        """
        outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        todo = iter(jobs)
        in_flight = 0
        while True:
            batch = [prepare_job(job) for job in islice(todo, window - in_flight)]
            if batch:
                trio.from_thread.run_sync(
                    self._start_batch, batch, outcomes.put, trio_token=self._token
                )
                in_flight += len(batch)
            if not in_flight:
                return
            outcome = self._next(outcomes)
            in_flight -= 1
            yield outcome.as_reply() if isinstance(outcome, SubmitTimeout) else outcome

    def _next(self, outcomes: queue.SimpleQueue[Outcome]) -> Outcome:
        while True:
            try:
                return outcomes.get(timeout=1.0)
            except queue.Empty:
                if not self._thread.is_alive():  # never wait for a thread that died
                    raise SalvoError("the producer's I/O thread stopped") from None

    def _start_batch(self, batch: list[tuple[str, bytes]], waiter: Waiter) -> None:
        for job_id, frame in batch:
            self._producer._start(job_id, frame, waiter)

    def close(self) -> None:
        """Stop the I/O thread; jobs still in flight are abandoned (resubmit them later)."""
        if self._thread.is_alive():
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            self._thread.join()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
