"""SpamAssassin's spamd for the content tests, and TCP stand-ins around it.

:class:`Spamd` runs Debian's ``spamd`` on a free loopback port: local tests only (``-L``:
no DNS or network rules), no per-user config, at most two children, its log in a file.
:class:`Relay` sits in front of it and counts the connections (one per spamd exchange),
or holds them unanswered (``stall``) to play a spamd that hangs. :class:`FixedReplyServer`
answers every connection with the same bytes (garbage, to play a broken spamd). All run
on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from nodeutil import free_port

SPAMD = "/usr/sbin/spamd"
START_TIMEOUT = 60.0  # spamd compiles its rules at start: seconds on a busy machine
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def available() -> bool:
    return Path(SPAMD).exists() and shutil.which("perl") is not None


class Spamd:
    """One spamd process (its own process group) listening on ``port``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = root / "spamd.log"
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Spamd:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [
                SPAMD,
                f"--listen=127.0.0.1:{self.port}",
                "--allowed-ips=127.0.0.1",
                "--local",  # no network tests
                "--nouser-config",
                "--cf=use_bayes 0",  # no learning: the same score every time, no home dir
                "--max-children=2",
                f"--pidfile={self.root / 'spamd.pid'}",
                "--syslog=stderr",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"spamd exited with {self.proc.returncode}:\n{self.log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return self
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"spamd did not listen within {START_TIMEOUT} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)


class _Server:
    """A threaded TCP listener on 127.0.0.1; ``handle(conn)`` per connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self):
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            with contextlib.suppress(OSError):
                self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def wait_stopping(self, seconds: float) -> None:
        self._stop.wait(seconds)


def _read_request(conn: socket.socket) -> bytes:
    """A whole SPAMC request: the headers, then Content-length bytes."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


class Relay(_Server):
    """Forwards each connection to ``target`` (spamd), counting them; with ``stall`` set,
    reads the request and holds the connection unanswered until the client gives up."""

    def __init__(self, target_port: int) -> None:
        super().__init__()
        self.target_port = target_port
        self.stall = False

    def handle(self, conn: socket.socket) -> None:
        request = _read_request(conn)
        if self.stall:
            conn.settimeout(0.2)
            while True:  # until the client closes, or the relay stops
                try:
                    if not conn.recv(1):
                        return
                except TimeoutError:
                    if self._stop.is_set():
                        return
        with socket.create_connection(("127.0.0.1", self.target_port), timeout=30) as up:
            up.sendall(request)
            while chunk := up.recv(65536):
                conn.sendall(chunk)


class FixedReplyServer(_Server):
    """Answers every request with ``reply`` and closes."""

    def __init__(self, reply: bytes) -> None:
        super().__init__()
        self.reply = reply

    def handle(self, conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(self.reply)
