"""The supervisor: ``salvo node``'s main process, as Postfix's master(8) is Postfix's.

It holds the data dir's lock (:class:`DataDirLock`) for the node's whole life, starts the
actors as processes (spawn, never fork: LMDB environments and ZeroMQ contexts must not
cross a fork) and waits until each reports that it started (sockets bound, spool open).
An actor that fails before that is a start-up failure: the node stops the others and
exits with one line naming the reason, instead of starting it again. An actor that dies
after it started is restarted, with a growing delay, up to a limit; past it the node
stops and exits non-zero with the reason. On SIGTERM or SIGINT the core process
(ingress, scheduler, delivery, events) drains first — producers get ``retry``, in-flight
deliveries finish or go back to the queue, the spool commits — then the signers stop,
then the supervisor exits 0. SIGHUP is passed on to the children that reload (the core:
keys and tokens, docs/security.md); the others ignore it.

Every child asks the kernel to kill it when the supervisor dies (``PR_SET_PDEATHSIG``), so
a SIGKILLed node leaves no orphan holding its ports or its spool.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from salvo.actors.datadir_lock import os_reason
from salvo.core.config import ConfigError
from salvo.core.errors import SalvoError, StartupError

log = logging.getLogger("salvo.supervisor")

_PR_SET_PDEATHSIG = 1

FIRST_DELAY = 0.2  # seconds before the first restart of an actor that died
MAX_DELAY = 30.0  # the delay doubles per death, up to this
HEALTHY_AFTER = 30.0  # an actor that ran this long was healthy: its delay starts over
RESTART_LIMIT = 5  # restarts of one actor within RESTART_WINDOW; one more death ends the node
RESTART_WINDOW = 60.0


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent exits (Linux; else a no-op)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return


# -- start-up reports ----------------------------------------------------------------------


_report: multiprocessing.connection.Connection | None = None


def report_started() -> None:
    """Tell the supervisor that this actor process started: its sockets are bound, its
    spool is open. Before this call, a failure ends the node; after it, the actor is
    restarted. A no-op when the process was not started by a supervisor."""
    global _report
    if _report is not None:
        with contextlib.suppress(OSError):
            _report.send(("started",))
        _report.close()
        _report = None


def describe_failure(exc: BaseException) -> tuple[str, int]:
    """One line and an exit status for an exception that stopped an actor's start."""
    while isinstance(exc, BaseExceptionGroup):
        leaves = [e for e in exc.exceptions if type(e).__name__ != "Cancelled"]
        exc = (leaves or exc.exceptions)[0]
    if isinstance(exc, StartupError):
        return str(exc), exc.exit_status
    if isinstance(exc, OSError):
        return os_reason(exc), 1
    if isinstance(exc, SalvoError):
        return str(exc), 2 if isinstance(exc, ConfigError) else 1
    return f"{type(exc).__name__}: {exc}", 1


def _child(
    target: Callable[..., None],
    parent: int,
    args: tuple,
    report: multiprocessing.connection.Connection,
) -> None:
    global _report
    die_with_parent()
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    # A hangup of the process group must not kill an actor; the core listens for it.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    _report = report
    try:
        target(*args)
    except BaseException as exc:
        if _report is None:  # it had started: a crash, with its traceback in the log
            raise
        message, status = describe_failure(exc)
        log.debug("start-up failure", exc_info=True)
        with contextlib.suppress(OSError):
            _report.send(("failed", message, status))
        sys.exit(status)


# -- the supervisor ------------------------------------------------------------------------


@dataclass
class Child:
    """One supervised process: what to run, and its restart bookkeeping."""

    name: str
    target: Callable[..., None]
    args: tuple
    process: multiprocessing.process.BaseProcess | None = None
    report: multiprocessing.connection.Connection | None = None  # reads the start-up report
    started: bool = False  # this incarnation reported that it started
    ever_started: bool = False  # some incarnation did: a failure to start is no longer fatal
    failure: str | None = None  # why this incarnation failed to start, as it said
    failure_status: int = 1
    restarts: int = 0
    deaths: collections.deque[float] = field(default_factory=collections.deque)
    delay: float = FIRST_DELAY
    restart_at: float = 0.0
    started_at: float = 0.0
    hub: bool = False  # the others are linked to it: when it dies, they restart with it
    stop_signal: int = signal.SIGTERM  # what the supervisor sends it to stop
    reloads: bool = False  # SIGHUP to the supervisor is passed on to it


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"


class Supervisor:
    """Starts, watches and stops the node's processes.

    After :meth:`run`, ``failure`` holds the one-line reason when the node ended on its
    own (an actor that could not start, or one that died too often), else None.
    """

    def __init__(
        self,
        *,
        stop_timeout: float = 60.0,
        restart_limit: int = RESTART_LIMIT,
        restart_window: float = RESTART_WINDOW,
    ) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._children: list[Child] = []
        self._stopping = False
        self.stop_timeout = stop_timeout
        self.restart_limit = restart_limit
        self.restart_window = restart_window
        self.failure: str | None = None
        self.failure_status = 1
        self.on_started: Callable[[], None] | None = None  # once every actor has started

    def add(
        self,
        name: str,
        target: Callable[..., None],
        *args: object,
        hub: bool = False,
        stop_signal: int = signal.SIGTERM,
        reloads: bool = False,
    ) -> None:
        """Register a process to run (started by :meth:`run`), in stop order.

        When a ``hub`` dies the other children are restarted too: they hold links (and
        in-flight work) that only the hub's new incarnation can take up again.
        ``stop_signal`` is what the supervisor sends it to stop (a signer distinguishes the
        supervisor's stop, after the core is gone, from a SIGTERM to the process group).
        ``reloads``: SIGHUP to the supervisor is passed on to it once it has started.
        """
        self._children.append(
            Child(name, target, args, hub=hub, stop_signal=stop_signal, reloads=reloads)
        )

    def _start(self, child: Child) -> None:
        if child.report is not None:
            child.report.close()
        reader, writer = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=_child, args=(child.target, os.getpid(), child.args, writer), name=child.name
        )
        process.start()
        writer.close()
        child.process = process
        child.report = reader
        child.started = False
        child.failure = None
        child.started_at = time.monotonic()
        log.info("started %s (pid %d)", child.name, process.pid)

    def request_stop(self, *_: object) -> None:
        """Begin an orderly stop (the SIGTERM/SIGINT handler)."""
        self._stopping = True

    def forward_reload(self, *_: object) -> None:
        """Pass SIGHUP on to the started children that reload (the SIGHUP handler)."""
        for child in self._children:
            if child.reloads and child.started and child.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.process.pid, signal.SIGHUP)

    def run(self) -> int:
        """Run until asked to stop or until the node cannot go on; return the exit status."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.forward_reload)
        for child in self._children:
            self._start(child)
        announced = False
        while not self._stopping and self.failure is None:
            pending = [c.restart_at for c in self._children if c.process is None]
            soonest = min(pending, default=time.monotonic() + 0.5) - time.monotonic()
            self._watch(timeout=min(max(soonest, 0.0), 0.5))
            if not announced and all(c.started for c in self._children):
                announced = True
                if self.on_started is not None:
                    self.on_started()
        status = self._stop_all()
        return self.failure_status if self.failure is not None else status

    def _read_reports(self, child: Child) -> None:
        report = child.report
        if report is None:
            return
        try:
            while report.poll():
                message = report.recv()
                if message[0] == "started":
                    child.started = child.ever_started = True
                    log.info("%s (pid %d) is up", child.name, child.process.pid)
                elif message[0] == "failed":
                    child.failure, child.failure_status = message[1], message[2]
        except (EOFError, OSError):
            report.close()
            child.report = None

    def _watch(self, timeout: float) -> None:
        waitables: list = [c.process.sentinel for c in self._children if c.process is not None]
        waitables += [c.report for c in self._children if c.report is not None]
        multiprocessing.connection.wait(waitables, timeout=timeout)
        now = time.monotonic()
        for child in self._children:
            self._read_reports(child)
            process = child.process
            if process is not None and not process.is_alive() and not self._stopping:
                process.join()
                self._read_reports(child)  # what it said before it exited
                child.process = None
                reason = child.failure or _exit_reason(process.exitcode)
                if not child.started:
                    log.warning("%s (pid %d) failed to start: %s", child.name, process.pid, reason)
                    if not child.ever_started:  # the node's own start: no use trying again
                        self.failure = reason if child.failure else f"{child.name}: {reason}"
                        self.failure_status = child.failure_status if child.failure else 1
                        return
                else:
                    log.warning("%s (pid %d) exited: %s", child.name, process.pid, reason)
                if self._give_up(child, now, reason):
                    return
                if child.hub:
                    self._restart_linked(child)
                if now - child.started_at > HEALTHY_AFTER:
                    child.delay = FIRST_DELAY
                child.restart_at = now + child.delay
                child.delay = min(child.delay * 2, MAX_DELAY)
            if child.process is None and not self._stopping and now >= child.restart_at:
                child.restarts += 1
                self._start(child)

    def _give_up(self, child: Child, now: float, reason: str) -> bool:
        """Count a death; past the limit, set ``failure`` and return True."""
        child.deaths.append(now)
        while child.deaths and child.deaths[0] < now - self.restart_window:
            child.deaths.popleft()
        if len(child.deaths) <= self.restart_limit:
            return False
        self.failure = (
            f"{child.name} died {len(child.deaths)} times within {self.restart_window:.0f} s "
            f"(last: {reason}); not restarting it again"
        )
        self.failure_status = 1
        log.error("%s", self.failure)
        return True

    def _restart_linked(self, hub: Child) -> None:
        for other in self._children:
            if other is not hub and other.process is not None and other.process.is_alive():
                log.info("restarting %s with %s", other.name, hub.name)
                os.kill(other.process.pid, other.stop_signal)
                other.process.join(10)
                if other.process.is_alive():
                    other.process.kill()
                    other.process.join()
                self._start(other)

    def _stop_all(self) -> int:
        """Stop children in registration order, each within the timeout; 0 if all went well."""
        status = 0
        for child in self._children:
            process = child.process
            if process is None or not process.is_alive():
                continue
            log.info("stopping %s (pid %d)", child.name, process.pid)
            os.kill(process.pid, child.stop_signal)
            process.join(self.stop_timeout)
            if process.is_alive():
                log.error(
                    "%s did not stop within %.0f s: killing it", child.name, self.stop_timeout
                )
                process.kill()
                process.join()
                status = 1
            elif process.exitcode not in (0, -signal.SIGTERM):
                status = 1
        for child in self._children:
            if child.report is not None:
                child.report.close()
                child.report = None
        return status


def runtime_dir() -> Path:
    """A private folder for the node's ipc:// sockets (short paths: the limit is 107)."""
    return Path(tempfile.mkdtemp(prefix="salvo-"))
