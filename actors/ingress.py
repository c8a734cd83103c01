"""Ingress: takes jobs from producers and answers each one after it is durable.

The ROUTER socket is owned by one task (a ZeroMQ socket has one owner): it receives job
frames and sends the replies that per-job tasks leave in an outbox, waking from its wait
when one is left. Each job is decoded and validated (:mod:`salvo.core.protocol`), then
handed to the spool writer, whose group commit puts every job that arrived during the
previous commit into the next transaction; the reply leaves only after that commit.

With ``[content]`` on, each job's content is scored first (:mod:`salvo.actors.content`),
in the job's own task: a job refused for its content is never written.

A frame that is not a valid job gets an ``error`` reply naming the problem; a full spool
or a node that is stopping gets ``retry``; nothing a producer sends stops the node.

With ``[ingress] curve`` the socket is a CURVE server: only producers whose key the ZAP
handler knows get through the handshake (:mod:`salvo.actors.zap`), and every job is
checked against ``producers``, the current table: a job for a tenant its producer may not
send for, or from a key that is no longer configured, is ``rejected`` with an ``error``.

With quotas (``[tenants]``, ``[producers]``: :mod:`salvo.core.quotas`), each job is
counted against its tenant's and producer's windows before it is written, and given back
when it was not queued; a job over a quota gets ``retry`` (rate) or ``rejected`` (spent).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
import zmq

from salvo.actors.spool_writer import SpoolWriter
from salvo.actors.zap import INGRESS_DOMAIN, curve_server
from salvo.actors.zmqtrio import TrioSocket
from salvo.core import access, protocol
from salvo.core.authlimit import LogBudget
from salvo.core.errors import StartupError
from salvo.core.quotas import Quotas, Refusal, Ticket
from salvo.ext.errors import SalvoError

log = logging.getLogger("salvo.ingress")

MAX_CONCURRENT_JOBS = 20_000  # jobs between decode and reply; past it, producers wait
HARD_FRAME_CAP = 256 * 1024 * 1024  # bytes; bigger frames close the connection


class Ingress:
    """The producer-facing ROUTER; ``on_committed`` hears of every new job's reply."""

    def __init__(
        self,
        listen: str,
        writer: SpoolWriter,
        *,
        context: zmq.Context,
        max_job_bytes: int,
        max_recipients: int,
        on_committed: Callable[[protocol.Job, protocol.Reply], None],
        screen: Callable[[protocol.Job], Awaitable[protocol.Reply | None]] | None = None,
        curve_secret: Path | None = None,
        producers: access.Producers | None = None,
        quotas: Quotas | None = None,
        on_quota_refusal: Callable[[str, Refusal], None] | None = None,
    ) -> None:
        self.listen = listen
        self._writer = writer
        self._context = context
        self._max_bytes = max_job_bytes
        self._max_recipients = max_recipients
        self._on_committed = on_committed
        self._screen = screen
        self._curve_secret = curve_secret
        # None: no CURVE, any job goes; else replaced whole on a reload (SIGHUP).
        self.producers = producers if curve_secret is not None else None
        self._quotas = quotas if quotas is not None and quotas.active else None
        self._on_quota_refusal = on_quota_refusal
        self._outbox: collections.deque[list] = collections.deque()
        self._wake: trio.CancelScope | None = None
        self._slots = trio.Semaphore(MAX_CONCURRENT_JOBS)
        self.draining = False
        self.in_progress = 0
        self._log_budget = LogBudget(lines=20, period=60.0)

    async def run(self, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        sock = self._context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 2000)
        # A frame over the limit must still arrive, to get its error reply naming the size
        # (docs/protocol.md); ZeroMQ would drop the producer's connection without a word.
        # Only frames past a far higher cap, a guard for memory, are dropped that way.
        sock.setsockopt(zmq.MAXMSGSIZE, max(4 * self._max_bytes, HARD_FRAME_CAP))
        # A ROUTER drops what it cannot queue, silently: past the send high-water mark a
        # producer with many jobs in flight would lose replies. Replies are bounded by the
        # jobs in flight, so queue them all; and learn of a producer that is gone
        # (ROUTER_MANDATORY) instead of queueing for no one.
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        try:
            if self._curve_secret is not None:
                curve_server(sock, self._curve_secret, INGRESS_DOMAIN)
            sock.bind(self.listen)
        except zmq.ZMQError as exc:
            sock.close()
            raise StartupError(
                f"ingress: cannot listen on {self.listen}: {zmq.strerror(exc.errno)}"
            ) from exc
        router = TrioSocket(sock)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    self._flush(router)
                    batch = None
                    with trio.CancelScope() as self._wake:
                        batch = await router.recv_batch(512, copy=False)
                    self._wake = None
                    for frames in batch or ():
                        await self._take(nursery, frames)
        finally:
            self._flush(router)
            router.close()

    def _flush(self, router: TrioSocket) -> None:
        while self._outbox:
            frames = self._outbox.popleft()
            try:
                router.send_multipart_nowait(frames)
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EHOSTUNREACH:
                    raise
                # The producer disconnected; a resubmission of the id gets this reply.
                log.debug("reply for a producer that is gone: dropped")

    def _reply(self, envelope: list, reply: protocol.Reply) -> None:
        self._outbox.append([*envelope, protocol.encode_reply(reply)])
        if self._wake is not None:
            self._wake.cancel()

    async def _take(self, nursery: trio.Nursery, frames: list) -> None:
        # [identity, (empty delimiter,) payload]: the envelope is all but the last frame.
        if len(frames) < 2:
            return
        envelope = [f.bytes for f in frames[:-1]]
        payload = frames[-1].buffer
        try:
            job = protocol.decode_job(
                payload, max_bytes=self._max_bytes, max_recipients=self._max_recipients
            )
        except protocol.ProtocolError as exc:
            self._reply(envelope, protocol.error_reply(payload, exc))
            return
        producer = None
        if self.producers is not None:
            user = _user_id(frames[-1])
            refusal = self.producers.refusal(user, job.tenant)
            if refusal is not None:
                self._refused(job.id, refusal)
                self._reply(envelope, protocol.Reply(id=job.id, status="rejected", error=refusal))
                return
            producer = (user or "").partition(":")[0] or None
        if self.draining:
            self._reply(envelope, _retry(job.id, "the node is stopping; submit again later"))
            return
        ticket = None
        if self._quotas is not None:
            taken = self._quotas.take(job.tenant, producer, len(job.recipients), time.time())
            if isinstance(taken, Refusal):
                self._refused(job.id, taken.error, taken.status)
                if self._on_quota_refusal is not None:
                    self._on_quota_refusal(job.tenant, taken)
                self._reply(
                    envelope, protocol.Reply(id=job.id, status=taken.status, error=taken.error)
                )
                return
            ticket = taken
        await self._slots.acquire()
        self.in_progress += 1
        nursery.start_soon(self._commit, envelope, job, ticket)

    def _refused(self, job_id: str, why: str, status: str = "rejected") -> None:
        show, held = self._log_budget.take(time.monotonic())
        if show:
            more = f" ({held} more refusals not logged)" if held else ""
            log.warning("job %r %s: %s%s", job_id, status, why, more)

    async def _commit(
        self, envelope: list, job: protocol.Job, ticket: Ticket | None = None
    ) -> None:
        queued = False
        try:
            if self._screen is not None and (refusal := await self._screen(job)) is not None:
                self._reply(envelope, refusal)
                return
            result = await self._writer.submit(job)
        except trio.ClosedResourceError:
            self._reply(envelope, _retry(job.id, "the node is stopping; submit again later"))
        except SalvoError as exc:
            if exc.temporary:
                self._reply(envelope, _retry(job.id, str(exc)))
            else:
                log.error("job %r: %s", job.id, exc)
                self._reply(envelope, protocol.Reply(id=job.id, status="error", error=str(exc)))
        else:
            self._reply(envelope, result.reply)
            queued = not result.duplicate and result.reply.status in ("accepted", "partial")
            if not result.duplicate:
                self._on_committed(job, result.reply)
        finally:
            if ticket is not None:
                self._quotas.release(ticket, queued=queued)
            self.in_progress -= 1
            self._slots.release()


def _user_id(frame: zmq.Frame) -> str | None:
    """The ZAP User-Id of the connection a frame came on (None without one)."""
    try:
        return frame.get("User-Id")
    except zmq.ZMQError:
        return None


def _retry(job_id: str, why: str) -> protocol.Reply:
    return protocol.Reply(id=job_id, status="retry", error=why)
