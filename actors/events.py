"""The events actor: publishes every state change on a PUB socket and in JSONL files.

PUB frames: ``[type, json]`` so that a subscriber can filter by event type with a prefix
subscription (``b"bounced"``). The log is ``<data_dir>/events/events.jsonl``, rotated to
``events-<UTC time>.jsonl`` past ``max_size``, keeping ``keep`` rotated files. Lines are
flushed per batch but not fsynced: the spool is the record of truth, events are its news.

The actor owns the files: an erasure's scrub and the retention by age
(salvo.actors.log_scrub) reach them as a :class:`LogTask` on the events channel, run in
order with the batches (an event queued before an erasure is written before the scrub).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
import zmq

from salvo.actors.log_scrub import HashMatcher, expire_logs, scrub_logs
from salvo.actors.zap import EVENTS_DOMAIN, curve_server
from salvo.core.errors import StartupError
from salvo.core.events import EVENT_TYPES, Event, encode_events

_log = logging.getLogger("salvo.events")
DAY = 86400.0


class LogTask:
    """Work on the log files, run by the events actor in a thread between two batches;
    ``done`` is set after it ran (``result`` or ``error``), at once when there is no log."""

    def __init__(self, fn: Callable[[EventLog], Any]) -> None:
        self.fn = fn
        self.done = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class EventLog:
    """Appends JSON lines to a rotating file."""

    def __init__(self, folder: Path, *, max_size: int, keep: int) -> None:
        self.folder = folder
        self.max_size = max_size
        self.keep = keep
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "events.jsonl"
        self._file = open(self.path, "ab")  # noqa: SIM115 - held open for the actor's life
        self._first = _first_ts(self.path)  # when the current file's first line was written

    def write(self, lines: bytes) -> None:
        """Append lines (each ending in a newline), then rotate if the file is too big."""
        if self._first is None:
            self._first = time.time()
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
        self._first = None

    def scrub(self, matcher: HashMatcher) -> tuple[int, int]:
        """Rewrite every file without the matcher's addresses (the current one too, then
        reopened); (files rewritten, lines changed)."""
        self._file.close()
        try:
            return scrub_logs(self.folder, matcher)
        finally:
            self._file = open(self.path, "ab")  # noqa: SIM115

    def expire(self, max_age: float, now: float | None = None) -> int:
        """Retention by age: rotate the current file once its first line is older than
        ``min(max_age / 10, 1 day)`` (so that it can age out), delete rotated files older
        than ``max_age``; returns files deleted."""
        now = time.time() if now is None else now
        if self._first is not None and now - self._first >= min(max_age / 10, DAY):
            self._rotate()
        return expire_logs(self.folder, max_age, now)

    def close(self) -> None:
        self._file.close()


def _first_ts(path: Path) -> float | None:
    """The ``ts`` of a log file's first line (None: empty or unreadable)."""
    try:
        with open(path, "rb") as f:
            line = f.readline()
        return float(json.loads(line)["ts"]) if line else None
    except (OSError, ValueError, KeyError, TypeError):
        return time.time()


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
    receive: trio.MemoryReceiveChannel[list[Event] | LogTask],
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
            if isinstance(batch, LogTask):
                await _run_task(batch, log)
                continue
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


async def _run_task(task: LogTask, log: EventLog | None) -> None:
    try:
        if log is not None:
            task.result = await trio.to_thread.run_sync(task.fn, log)
    except Exception as exc:  # reported to the task's owner, the events go on
        task.error = exc
    finally:
        task.done.set()
