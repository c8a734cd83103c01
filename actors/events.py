"""The events actor: publishes every state change on a PUB socket and in JSONL files.

PUB frames: ``[type, json]`` so that a subscriber can filter by event type with a prefix
subscription (``b"bounced"``). The log is ``<data_dir>/events/events.jsonl``, rotated to
``events-<UTC time>.jsonl`` past ``max_size``, keeping ``keep`` rotated files. Lines are
flushed per batch but not fsynced: the spool is the record of truth, events are its news.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import trio
import zmq

from salvo.actors.zap import EVENTS_DOMAIN, curve_server
from salvo.core.errors import StartupError
from salvo.core.events import EVENT_TYPES, Event, encode_events

_log = logging.getLogger("salvo.events")


class EventLog:
    """Appends JSON lines to a rotating file."""

    def __init__(self, folder: Path, *, max_size: int, keep: int) -> None:
        self.folder = folder
        self.max_size = max_size
        self.keep = keep
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "events.jsonl"
        self._file = open(self.path, "ab")  # noqa: SIM115 - held open for the actor's life

    def write(self, lines: bytes) -> None:
        """Append lines (each ending in a newline), then rotate if the file is too big."""
        self._file.write(lines)
        self._file.flush()
        if self._file.tell() >= self.max_size:
            self._rotate()

    def _rotate(self) -> None:
        self._file.close()
        # Microseconds, so that names sort by age even for several rotations in a second
        # (the oldest are deleted by name).
        now = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}"
        target = self.folder / f"events-{stamp}.jsonl"
        while target.exists():  # the clock stepped back: still a name after the others
            stamp += "0"
            target = self.folder / f"events-{stamp}.jsonl"
        self.path.rename(target)
        for old in sorted(self.folder.glob("events-*.jsonl"))[: -self.keep or None]:
            old.unlink()
        self._file = open(self.path, "ab")  # noqa: SIM115

    def close(self) -> None:
        self._file.close()


class Reopen:
    """Set ``wanted`` (a subscriber key was revoked: SIGHUP) to have the events actor close
    its CURVE socket and bind a new one before its next batch. Every subscriber is
    dropped: the others reconnect by themselves (ZeroMQ), the revoked one cannot."""

    wanted = False


def _bind(context: zmq.Context, publish: str, curve_secret: Path | None) -> zmq.Socket:
    sock = context.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    try:
        if curve_secret is not None:
            curve_server(sock, curve_secret, EVENTS_DOMAIN)
        sock.bind(publish)
    except BaseException:
        sock.close()
        raise
    return sock


async def _rebind(context: zmq.Context, publish: str, curve_secret: Path | None) -> zmq.Socket:
    """A new socket on the address just closed (its listener goes away in ZeroMQ's I/O
    thread: try again for up to 5 s)."""
    for _ in range(250):
        try:
            return _bind(context, publish, curve_secret)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE:
                raise
        await trio.sleep(0.02)
    return _bind(context, publish, curve_secret)


async def run_events(
    receive: trio.MemoryReceiveChannel[list[Event]],
    *,
    publish: str,
    log: EventLog | None,
    context: zmq.Context,
    curve_secret: Path | None = None,
    reopen: Reopen | None = None,
    task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED,
) -> None:
    """Publish and log event batches until the channel closes (started once bound).

    With ``curve_secret`` the socket is a CURVE server: only subscribers whose key the ZAP
    handler knows (``[subscribers]``) connect; others get nothing."""
    try:
        sock = _bind(context, publish, curve_secret)
    except zmq.ZMQError as exc:
        if log is not None:
            log.close()
        raise StartupError(
            f"events: cannot publish on {publish}: {zmq.strerror(exc.errno)}"
        ) from exc
    task_status.started()
    # Only this task uses the socket, and a PUB socket never blocks: past a slow
    # subscriber's high-water mark it drops, so delivery never waits for subscribers (the
    # JSONL log is complete). Plain non-blocking sends, then: two events per message.
    more, last = zmq.SNDMORE | zmq.NOBLOCK, zmq.NOBLOCK
    topics = {t: t.encode() for t in EVENT_TYPES}
    try:
        async for batch in receive:
            data = encode_events(batch)
            if log is not None:
                log.write(data)
            if reopen is not None and reopen.wanted:
                reopen.wanted = False
                sock.close()
                sock = await _rebind(context, publish, curve_secret)
                _log.info("events: socket bound again: a subscriber key was revoked")
            send = sock.send
            for event, line in zip(batch, data.split(b"\n"), strict=False):
                send(topics.get(event.type) or event.type.encode(), more)
                send(line, last)
            await trio.lowlevel.checkpoint()
    finally:
        sock.close()
        if log is not None:
            log.close()
