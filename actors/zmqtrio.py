"""pyzmq sockets in Trio: non-blocking attempts, ``EVENTS`` checks, and waits on the ``FD``.

pyzmq has no Trio backend. A ZeroMQ socket's ``FD`` is edge-triggered and means only "the
socket's state may have changed: read ``EVENTS``". Any operation on the socket (a send, a
recv, reading ``EVENTS``) may consume that edge, so a task must never wait on the ``FD``
while the socket may already be ready. Every operation here therefore runs:

1. try it with ``NOBLOCK``;
2. on ``Again``, read ``EVENTS``; if the socket is ready for this operation, go to 1;
3. only then ``await trio.lowlevel.wait_readable(fd)`` (for sends too: the ``FD`` only
   ever becomes readable), and go to 2.

One task owns a socket: every operation, ``_nowait`` ones included, runs under a guard
that raises :class:`trio.BusyResourceError` if another task is inside an operation (a
``_nowait`` recv in a second task could consume the edge the first task waits for).

Contexts: use one :func:`context` per process. Sockets and contexts must not cross a
``fork``; start actor processes with ``spawn`` and create sockets in the child.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import trio
import zmq

__all__ = ["TrioSocket", "context"]

R = TypeVar("R")


def context() -> zmq.Context:
    """The process's ZeroMQ context (pyzmq makes a new one in a forked child)."""
    return zmq.Context.instance()


class _OwnerGuard:
    """Like trio's ConflictDetector: at most one task inside an operation at a time."""

    __slots__ = ("_busy",)

    def __init__(self) -> None:
        self._busy = False

    def __enter__(self) -> None:
        if self._busy:
            raise trio.BusyResourceError("another task is using this ZeroMQ socket")
        self._busy = True

    def __exit__(self, *exc_info: object) -> None:
        self._busy = False


class TrioSocket:
    """A pyzmq socket driven from one Trio task.

    Every ``async`` method is a checkpoint and cancel-safe: a message is either sent (or
    received) whole, or not at all. ``_nowait`` twins never block and raise
    :class:`trio.WouldBlock` instead (``recv_batch_nowait`` returns ``[]``).
    """

    def __init__(self, socket: zmq.Socket) -> None:
        self._socket = socket
        self._fd: int = socket.getsockopt(zmq.FD)
        self._guard = _OwnerGuard()
        self._closed = False

    @property
    def socket(self) -> zmq.Socket:
        """The wrapped pyzmq socket (for options, bind, connect)."""
        return self._socket

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    async def send_multipart(self, frames: Sequence[Any], *, copy: bool = False) -> None:
        """Send one multipart message, waiting while the socket cannot take it."""
        await self._run(
            lambda: self._socket.send_multipart(frames, zmq.NOBLOCK, copy=copy), zmq.POLLOUT
        )

    def send_multipart_nowait(self, frames: Sequence[Any], *, copy: bool = False) -> None:
        """Send one multipart message now, or raise :class:`trio.WouldBlock`."""
        self._now(lambda: self._socket.send_multipart(frames, zmq.NOBLOCK, copy=copy))

    async def recv_multipart(self, *, copy: bool = False) -> list[Any]:
        """Receive one multipart message (``zmq.Frame`` objects unless ``copy``)."""
        return await self._run(
            lambda: self._socket.recv_multipart(zmq.NOBLOCK, copy=copy), zmq.POLLIN
        )

    def recv_multipart_nowait(self, *, copy: bool = False) -> list[Any]:
        """Receive one queued multipart message, or raise :class:`trio.WouldBlock`."""
        return self._now(lambda: self._socket.recv_multipart(zmq.NOBLOCK, copy=copy))

    async def recv_batch(self, max_items: int, *, copy: bool = False) -> list[list[Any]]:
        """Wait for one message, then take up to ``max_items`` in all that are already queued."""
        return await self._run(lambda: self._take(max_items, copy), zmq.POLLIN)

    def recv_batch_nowait(self, max_items: int, *, copy: bool = False) -> list[list[Any]]:
        """Up to ``max_items`` already-queued messages; ``[]`` when none is."""
        try:
            return self._now(lambda: self._take(max_items, copy))
        except trio.WouldBlock:
            return []

    async def wait_events(self, mask: int) -> int:
        """Wait until ``EVENTS`` has a flag of ``mask`` (``POLLIN``, ``POLLOUT``); return it."""
        return await self._run(lambda: self._ready(mask), mask)

    def close(self, linger: int | None = None) -> None:
        """Close the socket; a task waiting on it gets :class:`trio.ClosedResourceError`.

        Call from the Trio thread. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        trio.lowlevel.notify_closing(self._fd)
        self._socket.close(linger)

    def __enter__(self) -> TrioSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _take(self, max_items: int, copy: bool) -> list[list[Any]]:
        recv = self._socket.recv_multipart
        batch = [recv(zmq.NOBLOCK, copy=copy)]  # Again here means "nothing queued"
        try:
            while len(batch) < max_items:
                batch.append(recv(zmq.NOBLOCK, copy=copy))
        except zmq.Again:
            pass
        return batch

    def _ready(self, mask: int) -> int:
        events = self._socket.getsockopt(zmq.EVENTS) & mask
        if not events:
            raise zmq.Again()
        return events

    def _now(self, attempt: Callable[[], R]) -> R:
        with self._guard:
            self._check_open()
            try:
                return attempt()
            except zmq.Again:
                raise trio.WouldBlock from None

    async def _run(self, attempt: Callable[[], R], flag: int) -> R:
        await trio.lowlevel.checkpoint_if_cancelled()
        with self._guard:
            self._check_open()
            while True:
                try:
                    result = attempt()
                    break
                except zmq.Again:
                    pass
                # Reading EVENTS re-arms the FD's edge: wait only when not already ready.
                while not self._socket.getsockopt(zmq.EVENTS) & flag:
                    await trio.lowlevel.wait_readable(self._fd)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return result

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the ZeroMQ socket was closed")
