"""How bytes move between the SMTP state machine and the network, under deadlines.

The transports (a plain TCP socket read and written directly, or any Trio stream, TLS)
share one interface whose waits honour the caller's cancel scope; :func:`exchange` and
:func:`exchange_transactions` write what :class:`~salvo.core.smtp.SMTPClient` has to
send and feed it replies until it has what was asked, each reply within its deadline.
:class:`~salvo.actors.smtp_session.SMTPSession` is built on them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import trio

from salvo.core.smtp import Event, Outcome, Phase, SMTPClient, SMTPTimeouts, TransactionDone

__all__ = [
    "DEADLINE_SLACK",
    "PlainIO",
    "StreamIO",
    "exchange",
    "exchange_transactions",
    "move_deadline",
]

_RECV = 65536
_SEND = 65536

# A reply's deadline may come this much early: a reused connection's deadlines move a few
# ms per message, and moving a Trio deadline costs more than the read it guards.
DEADLINE_SLACK = 0.05  # seconds


def move_deadline(scope: trio.CancelScope, deadline: float) -> None:
    """Set ``scope``'s deadline to ``deadline``, or leave it up to DEADLINE_SLACK earlier."""
    current = scope.deadline
    if deadline < current or deadline - current > DEADLINE_SLACK:
        scope.deadline = deadline


class PlainIO:
    """Reads and writes of a plain TCP socket without Trio's extra scheduling passes.

    ``trio.SocketStream`` yields to the scheduler after every successful send and recv
    (a checkpoint): four or more passes per message, a third of the CPU of a reused
    connection. Here a call that can complete at once does so; one that would block waits
    with ``wait_readable`` / ``wait_writable``, which are checkpoints and honour the
    caller's cancel scope (the deadlines). Every transaction waits for the server at least
    once, so other tasks still run. The fd stays owned by the ``SocketStream``.
    """

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    async def send_all_within(
        self, data: bytes, scope: trio.CancelScope, block: float, until: float
    ) -> bool:
        """:meth:`send_all` with the deadline ``min(now + block, until)``, computed only
        if the write has to wait (nearly never: the socket buffer takes a message).
        Returns whether it waited."""
        view, fd = memoryview(data), self._fd
        while view:
            try:
                sent = os.write(fd, view)
            except BlockingIOError:
                await self.send_all(view, scope, min(trio.current_time() + block, until))
                return True
            except OSError as exc:
                raise trio.BrokenResourceError(f"send failed: {exc!r}") from exc
            view = view[sent:]
        return False

    async def send_all(self, data: bytes, scope: trio.CancelScope, deadline: float) -> None:
        view, fd = memoryview(data), self._fd
        while view:
            try:
                sent = os.write(fd, view)
            except BlockingIOError:
                scope.deadline = deadline
                await trio.lowlevel.wait_writable(fd)
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(f"send failed: {exc!r}") from exc
            view = view[sent:]

    async def receive_some(
        self, max_bytes: int, scope: trio.CancelScope, deadline: float, wait: bool = False
    ) -> bytes:
        """Read what is there; ``wait``: wait for readability before the first read."""
        fd = self._fd
        if wait:
            move_deadline(scope, deadline)
            await trio.lowlevel.wait_readable(fd)
        while True:
            try:
                return os.read(fd, max_bytes)
            except BlockingIOError:
                move_deadline(scope, deadline)  # only now: it costs more than a read
                await trio.lowlevel.wait_readable(fd)
            except OSError as exc:
                raise trio.BrokenResourceError(f"receive failed: {exc!r}") from exc


class StreamIO:
    """Any Trio stream (TLS, or a closed one) behind :class:`PlainIO`'s interface."""

    __slots__ = ("_stream",)

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream

    async def send_all(self, data: bytes, scope: trio.CancelScope, deadline: float) -> None:
        scope.deadline = deadline
        await self._stream.send_all(data)

    async def send_all_within(
        self, data: bytes, scope: trio.CancelScope, block: float, until: float
    ) -> bool:
        await self.send_all(data, scope, min(trio.current_time() + block, until))
        return True

    async def receive_some(
        self, max_bytes: int, scope: trio.CancelScope, deadline: float, wait: bool = False
    ) -> bytes:
        scope.deadline = deadline
        return await self._stream.receive_some(max_bytes)


async def exchange_transactions(
    client: SMTPClient,
    io: PlainIO | StreamIO,
    deadlines: dict[Phase, float],
    timeouts: SMTPTimeouts,
    done: Callable[[int, tuple[Outcome, ...]], None],
) -> None:
    """As :func:`exchange`, until every transaction in flight has ended.

    Each transaction's outcomes go to ``done(index, outcomes)`` as soon as they are known,
    so that those answered before a failure keep them. ``timeouts.transaction`` bounds
    each one, counted from the end of the one before.
    """
    block, bound = timeouts.data_block, timeouts.transaction
    now = trio.current_time
    t = now()  # when the last reply completed: the next one's deadline counts from it
    until = t + bound
    with trio.CancelScope() as scope:
        while True:
            data = client.data_to_send()
            if data:
                waited = False
                for start in range(0, len(data), _SEND):
                    chunk = data[start : start + _SEND] if len(data) > _SEND else data
                    waited |= await io.send_all_within(chunk, scope, block, until)
                if waited:  # a slow write does not eat into the reply's deadline
                    t = now()
            phase = client.awaiting
            if phase is None:
                return
            count = client.reply_count
            deadline = min(t + deadlines[phase], until)
            ended = False
            while client.reply_count == count:  # each pass reads; the deadline ends it
                # The reply cannot be there yet (we just wrote, or read a part of
                # it): wait first, and save a read that would only say EAGAIN.
                data = await io.receive_some(_RECV, scope, deadline, True)
                for event in client.receive_data(data):
                    if type(event) is TransactionDone:
                        done(event.index, event.outcomes)
                        ended = True
                if not data:
                    return
            t = now()
            if ended:
                until = t + bound
    raise trio.TooSlowError  # only reached when the scope's deadline cancelled it


async def exchange(
    client: SMTPClient,
    io: PlainIO | StreamIO,
    deadlines: dict[Phase, float],
    block: float,
    stop: tuple[type, ...],
    until: float = math.inf,
) -> list[Event]:
    """Write what is due, then read reply after reply until an event in ``stop``.

    One cancel scope for the whole exchange, with the deadline of every write
    (``data_block``) and every awaited reply (that reply's timeout, over all the reads
    it takes), never beyond ``until``; the transport moves it there before it waits.
    Raises ``trio.TooSlowError`` when it expires.
    """
    events: list[Event] = []
    with trio.CancelScope() as scope:
        while True:
            data = client.data_to_send()
            for start in range(0, len(data), _SEND):
                deadline = min(trio.current_time() + block, until)
                await io.send_all(data[start : start + _SEND], scope, deadline)
            phase = client.awaiting
            if phase is None or any(isinstance(e, stop) for e in events):
                return events
            count = client.reply_count
            deadline = min(trio.current_time() + deadlines[phase], until)
            while client.reply_count == count:  # each pass reads; the deadline ends it
                data = await io.receive_some(_RECV, scope, deadline)
                events += client.receive_data(data)
                if not data:
                    return events
    raise trio.TooSlowError  # only reached when the scope's deadline cancelled it
