"""Run a command with its stderr on a pseudo-terminal, as a person at a terminal would."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
import threading
from dataclasses import dataclass


@dataclass
class TerminalRun:
    returncode: int
    stdout: str
    terminal: str  # what the command wrote to its stderr (the terminal)


def run_on_terminal(
    args: list[str],
    *,
    timeout: float = 60.0,
    stdin: str | None = None,
    rows: int = 40,
    columns: int = 120,
) -> TerminalRun:
    """Run ``args`` with stderr on a pty (stdout a pipe); bounded by ``timeout``."""
    master, slave = pty.openpty()
    # A new pty has no size (0 columns): give it a terminal's, as a person's would have.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    chunks: list[bytes] = []

    def drain() -> None:
        # A pty's buffer is small: read it while the command runs. EIO: the other side
        # closed (the command ended).
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
        )
        os.close(slave)
        try:
            out, _ = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        reader.join(timeout=5)
    finally:
        os.close(master)
    return TerminalRun(proc.returncode, out, b"".join(chunks).decode("utf-8", "replace"))
