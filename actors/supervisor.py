"""The supervisor: ``salvo node``'s main process, as Postfix's master(8) is Postfix's.

It starts the actors as processes (spawn, never fork: LMDB environments and ZeroMQ
contexts must not cross a fork), restarts one that dies (with a growing delay), and stops
them in order: on SIGTERM or SIGINT the core process (ingress, scheduler, delivery,
events) drains first — producers get ``retry``, in-flight deliveries finish or go back to
the queue, the spool commits — then the signers stop, then the supervisor exits 0.

Every child asks the kernel to kill it when the supervisor dies (``PR_SET_PDEATHSIG``), so
a SIGKILLed node leaves no orphan holding its ports or its spool.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("salvo.supervisor")

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent exits (Linux; else a no-op)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return


def _child(target: Callable[..., None], parent: int, args: tuple) -> None:
    die_with_parent()
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    target(*args)


@dataclass
class Child:
    """One supervised process: what to run, and its restart bookkeeping."""

    name: str
    target: Callable[..., None]
    args: tuple
    process: multiprocessing.process.BaseProcess | None = None
    restarts: int = 0
    delay: float = 0.5
    restart_at: float = 0.0
    started_at: float = field(default=0.0)
    hub: bool = False  # the others are linked to it: when it dies, they restart with it


class Supervisor:
    """Starts, watches and stops the node's processes."""

    def __init__(self, *, stop_timeout: float = 60.0) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._children: list[Child] = []
        self._stopping = False
        self.stop_timeout = stop_timeout

    def add(self, name: str, target: Callable[..., None], *args: object, hub: bool = False) -> None:
        """Register a process to run (started by :meth:`run`), in stop order.

        When a ``hub`` dies the other children are restarted too: they hold links (and
        in-flight work) that only the hub's new incarnation can take up again.
        """
        self._children.append(Child(name, target, args, hub=hub))

    def _start(self, child: Child) -> None:
        process = self._ctx.Process(
            target=_child, args=(child.target, os.getpid(), child.args), name=child.name
        )
        process.start()
        child.process = process
        child.started_at = time.monotonic()
        log.info("started %s (pid %d)", child.name, process.pid)

    def request_stop(self, *_: object) -> None:
        """Begin an orderly stop (the SIGTERM/SIGINT handler)."""
        self._stopping = True

    def run(self) -> int:
        """Run until asked to stop; return the exit status."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        for child in self._children:
            self._start(child)
        while not self._stopping:
            self._watch(timeout=0.5)
        return self._stop_all()

    def _watch(self, timeout: float) -> None:
        sentinels = [c.process.sentinel for c in self._children if c.process is not None]
        multiprocessing.connection.wait(sentinels, timeout=timeout)
        now = time.monotonic()
        for child in self._children:
            process = child.process
            if process is not None and not process.is_alive() and not self._stopping:
                log.warning("%s (pid %d) exited with %s", child.name, process.pid, process.exitcode)
                process.join()
                child.process = None
                if child.hub:
                    self._restart_linked(child)
                # A child that ran a while was healthy: start again quickly.
                if now - child.started_at > 30:
                    child.delay = 0.5
                child.restart_at = now + child.delay
                child.delay = min(child.delay * 2, 30.0)
            if child.process is None and not self._stopping and now >= child.restart_at:
                child.restarts += 1
                self._start(child)

    def _restart_linked(self, hub: Child) -> None:
        for other in self._children:
            if other is not hub and other.process is not None and other.process.is_alive():
                log.info("restarting %s with %s", other.name, hub.name)
                other.process.terminate()
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
            process.terminate()
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
        return status


def runtime_dir() -> Path:
    """A private folder for the node's ipc:// sockets (short paths: the limit is 107)."""
    return Path(tempfile.mkdtemp(prefix="salvo-"))
