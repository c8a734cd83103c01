"""The inbound SMTP listener for bounces, complaints and mailto unsubscribes (Trio).

Sockets, deadlines and bounds around the sans-IO :class:`salvo.core.smtp_server.SMTPServer`:

- RCPT is taken only for the feedback domains: ``b-TOKEN`` (VERP), ``u-TOKEN`` (mailto
  unsubscribe) and the configured mailboxes (``postmaster``, ``abuse``, ``fbl``); anything
  else gets 550 5.7.1. Nothing is ever relayed.
- Deadlines are per whole command (``command_timeout`` from the first byte of a command
  to its end) and per whole message (``data_timeout`` from the 354 to the final dot); a
  client that passes one gets 421 and is disconnected.
- At most ``max_connections`` clients at once (the next gets 421), ``max_message_size``
  per message (SIZE), ``max_messages_per_connection``.
- A message is stored in the spool (group commit: the messages of every connection that
  arrived during a commit share the next one) BEFORE its 250; then the processing task
  (:class:`salvo.actors.feedback.Feedback`) is woken. A full report store answers 451.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio

from salvo.actors.feedback import Feedback
from salvo.actors.http import listen_tcp
from salvo.actors.spool_writer import SpoolWriter
from salvo.core.config import Config, listen_address, parse_duration, parse_size
from salvo.core.errors import SpoolError
from salvo.core.feedback.store import RawReport
from salvo.core.feedback.tokens import UNSUBSCRIBE_PREFIX, VERP_PREFIX
from salvo.core.smtp_server import Message, Reply, SMTPServer

log = logging.getLogger("salvo.feedback.listener")

RECV_SIZE = 65536
MAX_BATCH = 64  # messages per commit


class _Pending:
    __slots__ = ("done", "error", "id", "report")

    def __init__(self, report: RawReport) -> None:
        self.report = report
        self.done = trio.Event()
        self.id = 0
        self.error = ""


class ReportCommitter:
    """Group commit of received reports: every message that arrives during a commit goes
    into the next one; each waiter learns its report id (or why it failed) after it."""

    def __init__(self, writer: SpoolWriter, *, max_pending: int, max_bytes: int) -> None:
        self._writer = writer
        self._max_pending = max_pending
        self._max_bytes = max_bytes
        self._queue: list[_Pending] = []
        self._wake = trio.Event()

    async def store(self, report: RawReport) -> _Pending:
        item = _Pending(report)
        self._queue.append(item)
        self._wake.set()
        await item.done.wait()
        return item

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    with trio.CancelScope(shield=True):
                        ids = await self._writer.run_sync(self._write, [p.report for p in batch])
                except SpoolError as exc:  # full (ReportStoreFull, SpoolFullError) or failed
                    for p in batch:
                        p.error = str(exc)
                        p.done.set()
                    continue
                for p, rid in zip(batch, ids, strict=True):
                    p.id = rid
                    p.done.set()

    def _write(self, reports: list[RawReport]) -> list[int]:
        spool = self._writer.spool
        return spool.store.write(
            lambda txn: spool.feedback.put_reports_in(
                txn, reports, max_pending=self._max_pending, max_bytes=self._max_bytes
            ),
            submit=True,
        )


def rcpt_filter(domains: list[str], mailboxes: list[str]) -> Callable[[str], bool]:
    """Whether an envelope recipient is ours: a feedback domain, and a token's prefix or
    one of the mailboxes as its local part."""
    doms = {d.lower().rstrip(".") for d in domains}
    boxes = {m.lower() for m in mailboxes}

    def accept(address: str) -> bool:
        local, at, domain = address.rpartition("@")
        if not at:  # RCPT TO:<postmaster> (RFC 5321 4.5.1)
            return address.lower() == "postmaster" and "postmaster" in boxes
        if domain.lower().rstrip(".") not in doms or not local or len(local) > 1024:
            return False
        low = local.lower()
        return low in boxes or (low.startswith((VERP_PREFIX, UNSUBSCRIBE_PREFIX)) and len(low) > 2)

    return accept


class FeedbackListener:
    """Serves SMTP on ``[feedback] listen``; run :meth:`run` with ``nursery.start``."""

    def __init__(self, config: Config, feedback: Feedback, committer: ReportCommitter) -> None:
        fb = config.feedback
        self.host, self.port = listen_address(fb.listen, key="[feedback] listen")
        self.hostname = config.hostname
        self._accept = rcpt_filter(fb.domains, fb.mailboxes)
        self._feedback = feedback
        self._committer = committer
        self.max_size = parse_size(fb.max_message_size)
        self.max_messages = fb.max_messages_per_connection
        self.command_timeout = parse_duration(fb.command_timeout)
        self.data_timeout = parse_duration(fb.data_timeout)
        self._slots = trio.Semaphore(fb.max_connections)
        self.bound_port = 0

    async def run(self, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await listen_tcp(self.host, self.port, "feedback")
        self.bound_port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._committer.run)
            task_status.started()
            log.info("feedback listener on %s:%d", self.host, self.bound_port)
            await trio.serve_listeners(self._serve, listeners, handler_nursery=nursery)

    async def _serve(self, stream: trio.SocketStream) -> None:
        try:
            peer = "{}:{}".format(*stream.socket.getpeername()[:2])
        except OSError:
            peer = "?"
        server = SMTPServer(
            self.hostname,
            self._accept,
            max_size=self.max_size,
            max_messages=self.max_messages,
        )
        try:
            if self._slots.value == 0:
                with trio.move_on_after(5):
                    await stream.send_all(server.refuse().encode())
                return
            async with self._slots:
                await self._session(stream, server, peer)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("feedback client %s: %s", peer, exc)
        finally:
            with trio.move_on_after(1) as scope:
                scope.shield = True
                await stream.aclose()

    async def _session(self, stream: trio.SocketStream, server: SMTPServer, peer: str) -> None:
        await stream.send_all(server.greeting().encode())
        deadline = trio.current_time() + self.command_timeout
        while not server.closed:
            data = b""
            with trio.move_on_at(deadline):
                data = await stream.receive_some(RECV_SIZE)
                if not data:
                    return  # the client closed
            if not data:  # the deadline passed
                await stream.send_all(server.timeout().encode())
                return
            was_data = server.in_data
            outputs = server.receive(data)
            while outputs:
                item = outputs.pop(0)
                if isinstance(item, Reply):
                    await stream.send_all(item.encode())
                    if item.close:
                        return
                    continue
                outputs[:0] = await self._store(server, item, peer)
            # A new deadline once a command or a message is complete (a reply went out);
            # bytes that only extend a line or a message do not extend it.
            if server.in_data and not was_data:
                deadline = trio.current_time() + self.data_timeout
            elif not server.in_data and (was_data or server_replied(data)):
                deadline = trio.current_time() + self.command_timeout

    async def _store(self, server: SMTPServer, message: Message, peer: str) -> list:
        report = RawReport(
            received=time.time(),
            peer=peer,
            mail_from=message.mail_from,
            rcpts=message.rcpts,
            data=message.data,
        )
        result = await self._committer.store(report)
        if result.error:
            log.warning("report from %s not stored: %s", peer, result.error)
            return server.stored(False)
        self._feedback.wake()
        return server.stored(True, f"queued as report {result.id}")


def server_replied(data: bytes) -> bool:
    """Whether the bytes held the end of a command line (it got its reply)."""
    return b"\n" in data
