"""A throwaway ``redis-server`` (Debian's) on a free loopback port, without persistence.

For the cluster tests, benchmarks and demos: ``with RedisServer() as redis: redis.url``.
:meth:`RedisServer.kill` and :meth:`RedisServer.start` again (same port) play an outage;
a restarted server comes back empty, as one without persistence does.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from salvo.testing.procs import free_port, stop_process

__all__ = ["REDIS_SERVER", "RedisServer", "available"]

REDIS_SERVER = "/usr/bin/redis-server"


def available() -> bool:
    """Whether ``redis-server`` is installed (``./dev.sh setup`` installs it)."""
    return shutil.which("redis-server") is not None or Path(REDIS_SERVER).exists()


class RedisServer:
    """``redis-server --port PORT --bind HOST --save '' --appendonly no``."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.proc: subprocess.Popen | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="salvo-redis-")

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 20.0) -> RedisServer:
        """Start the server and wait until it answers PING."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        binary = shutil.which("redis-server") or REDIS_SERVER
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir.name,
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on {self.host}:{self.port}")
            time.sleep(0.05)
        return self

    def ping(self) -> bool:
        """True when the server answers PING."""
        import redis

        try:
            with redis.Redis(self.host, self.port, socket_timeout=1) as client:
                return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError):
            return False

    def client(self):
        """A redis-py client of this server."""
        import redis

        return redis.Redis(self.host, self.port, socket_timeout=5)

    def kill(self) -> None:
        """SIGKILL: an outage, all data lost."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL of its group)."""
        if self.proc is not None:
            stop_process(self.proc, timeout=10)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._dir.cleanup()
