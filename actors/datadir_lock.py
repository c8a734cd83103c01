"""The data dir's lock: one node per data dir, as Postfix's ``master.lock``.

``salvo node`` takes it before anything opens the spool and holds it for the node's life;
a second node on the same data dir is refused with the holder's pid. The CLI commands
that write to a running node's spool (``salvo suppress``, ``salvo queue``) do not take it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from salvo.core.errors import StartupError
from salvo.core.spool_env import NODE_LOCK, STORE_SUBDIR

__all__ = ["DataDirLock", "os_reason"]


class DataDirLock:
    """An exclusive ``flock`` on ``DATA_DIR/node.lock``, which holds the owner's pid.

    The supervisor takes it before anything opens the spool and keeps the descriptor open
    until it exits. The kernel drops the lock when the last descriptor of the open file
    goes, so a node killed by SIGKILL never leaves a stale lock. The descriptor is
    close-on-exec and spawned children get only the descriptors multiprocessing passes
    them, so no actor holds a copy that could outlive the supervisor.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / NODE_LOCK
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        """Take the lock, or raise :class:`StartupError` naming why not (and the holder)."""
        where = f"data dir {self.data_dir}"
        if (
            self.data_dir.is_dir()
            and not self.path.exists()
            and not (self.data_dir / STORE_SUBDIR).exists()
            and any(self.data_dir.iterdir())
        ):  # no lock file left in a folder that is not ours
            raise StartupError(
                f"{where} is not empty and holds no salvo store; "
                "use an empty or new directory for data_dir"
            )
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StartupError(f"{where}: cannot use it: {os_reason(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StartupError(f"{where}: cannot lock {self.path}: {exc.strerror}") from None
            holder = self._holder()
            raise StartupError(
                f"{where} is in use by another node ({holder}); "
                "stop it first or use another data_dir"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as exc:
            os.close(fd)
            raise StartupError(f"{where}: cannot write {self.path}: {exc.strerror}") from None
        self._fd = fd
        return self

    def _holder(self) -> str:
        # The holder writes its pid right after it took the lock: give it a moment.
        deadline = time.monotonic() + 1.0
        while True:
            try:
                text = self.path.read_text().strip()
            except OSError:
                text = ""
            if text.isdigit():
                return f"pid {text}"
            if time.monotonic() >= deadline:
                return "pid unknown"
            time.sleep(0.05)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def os_reason(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"{reason} ({exc.filename})" if exc.filename else reason
