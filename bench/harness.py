"""Pieces of ``salvo bench`` shared by its salvo rows (``bench/suite.py``) and the
alternatives (``bench/compare.py``).

A node process on a fresh data dir (:class:`Node`), CPU time of the core's threads,
disk usage, the machine's ceilings (RSA-2048 signatures with ``openssl speed``, raw SMTP
with Postfix's ``smtp-source``), the progress line, and cProfile output. The sinks and
the port and process helpers come from :mod:`salvo.testing`. Every process started here
is stopped by its ``stop()`` (SIGTERM, then SIGKILL to its process group).
"""

from __future__ import annotations

import contextlib
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from salvo.core.dkimkeys import generate_private_key
from salvo.progress import is_terminal
from salvo.testing.postfix import SmtpSink
from salvo.testing.procs import TICK, peak_rss, stop_process

SMTP_SOURCE = "/usr/sbin/smtp-source"
FROM_DOMAIN = "acme.example"
DKIM_ALGORITHMS = {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}


# -- processes ----------------------------------------------------------------------------


def own_peak_rss() -> int:
    """This process's peak RSS in bytes."""
    return peak_rss(os.getpid())


def core_threads(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads, grouped: the main (Trio) thread, ZeroMQ's I/O
    threads, and the rest (Trio's worker threads: the spool's LMDB transactions)."""
    groups = {"core: trio thread": 0.0, "core: zmq threads": 0.0, "core: spool threads": 0.0}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue  # a worker thread that just ended
            cpu = (int(fields[11]) + int(fields[12])) / TICK
            if int(tid) == pid:
                groups["core: trio thread"] += cpu
            elif comm.startswith("ZMQ"):
                groups["core: zmq threads"] += cpu
            else:
                groups["core: spool threads"] += cpu
    return groups


def folder_size(path: Path) -> int:
    """Bytes allocated on disk under ``path`` (sparse LMDB maps count what they use)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_blocks * 512
    return total


@contextlib.contextmanager
def workdir(prefix: str = "salvo-bench-") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def interrupt(*_: object) -> None:
    """A SIGTERM handler: unwind like Ctrl-C, through every ``stop()``."""
    raise KeyboardInterrupt


class Progress:
    """One live line on stderr when it is a terminal (nothing when piped), and a line per
    step (always)."""

    def __init__(self) -> None:
        self.tty = is_terminal(sys.stderr)
        self.width = 0

    def show(self, text: str) -> None:
        if self.tty:
            sys.stderr.write("\r" + text.ljust(self.width))
            self.width = len(text)
            sys.stderr.flush()

    def done(self, text: str) -> None:
        if self.tty and self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
        self.width = 0
        print(text, file=sys.stderr, flush=True)


PROGRESS = Progress()


# -- a node ---------------------------------------------------------------------------------


def write_key(folder: Path, dkim: str, pem: bytes | None = None) -> Path | None:
    """A DKIM key for ``dkim`` ("rsa", "ed25519" or "none") in ``folder``: ``pem``, or a
    fresh one."""
    if dkim == "none":
        return None
    path = folder / f"{dkim}.pem"
    path.write_bytes(pem or generate_private_key(DKIM_ALGORITHMS[dkim], 2048))
    return path


class Node:
    """``salvo node`` on a fresh data dir in ``folder``: its config names ``routes``
    (domain -> "host:port"), a DKIM key for the From domain (``dkim``), and ``extra``
    TOML (pools, traffic classes, delivery limits)."""

    def __init__(
        self,
        folder: Path,
        routes: dict[str, str],
        *,
        ingress: str,
        events: str,
        signers: int = 2,
        dkim: str = "rsa",
        key: bytes | None = None,
        extra: str = "",
        profile: Path | None = None,
    ) -> None:
        self.folder = folder
        self.ingress, self.events = ingress, events
        folder.mkdir(parents=True)
        self.key = write_key(folder, dkim, key)
        lines = [
            "[node]",
            'data_dir = "data"',
            f"signers = {signers}",
            'hostname = "bench.salvo.test"',
            "[ingress]",
            f'listen = "{ingress}"',
            "[events]",
            f'publish = "{events}"',
            "[routes]",
            *(f'"{domain}" = "{target}"' for domain, target in routes.items()),
        ]
        if self.key is not None:
            lines += [
                f'[dkim."{FROM_DOMAIN}"]',
                f'selector = "s-{dkim}"',
                f'private_key = "{self.key.name}"',
                f'algorithm = "{DKIM_ALGORITHMS[dkim]}"',
            ]
        self.config = folder / "salvo.toml"
        self.config.write_text("\n".join(lines) + "\n" + extra)
        self.log = folder / "node.log"
        env = dict(os.environ)
        env.pop("SALVO_PROFILE", None)
        if profile is not None:
            env["SALVO_PROFILE"] = str(profile)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "salvo", "node", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=folder,
                env=env,
                start_new_session=True,
            )
        try:
            self.pids = self._wait_ready(signers)
        except BaseException:
            self.stop()
            raise
        self.pids["supervisor"] = self.proc.pid

    def _wait_ready(self, signers: int, timeout: float = 60.0) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            ready = len(re.findall(r"signer \d+ \(pid \d+\) ready", text))
            if "node ready" in text and ready >= signers:
                return {
                    name: int(pid) for name, pid in re.findall(r"started (\S+) \(pid (\d+)\)", text)
                }
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"the node did not start; its log:\n{self.log.read_text()[-3000:]}")

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def events_paths(self) -> list[Path]:
        return sorted((self.data / "events").glob("events*.jsonl"))

    def delivered_events(self) -> int:
        """``delivered`` lines in the node's event logs (complete after :meth:`stop`)."""
        return sum(
            1
            for path in self.events_paths()
            for line in path.open("rb")
            if b'"type":"delivered"' in line
        )

    def stop(self) -> None:
        stop_process(self.proc, timeout=60)


# -- ceilings -------------------------------------------------------------------------------


def rsa_row(seconds: int) -> dict:
    """RSA-2048 signatures/s on both cores: ``openssl speed -multi 2 -mr rsa2048``."""
    out = subprocess.run(
        ["openssl", "speed", "-seconds", str(seconds), "-multi", "2", "-mr", "rsa2048"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    total = [line for line in out.splitlines() if line.startswith("+F2:")]
    return {"sign_per_s": float(total[-1].split(":")[3])}


def smtp_source(host: str, port: int, messages: int, sessions: int, size: int) -> None:
    """Postfix ``smtp-source``: ``messages`` of ``size`` bytes over ``sessions`` reused
    connections, From bench@acme.example to user@example.org."""
    subprocess.run(
        [
            *(SMTP_SOURCE, "-s", str(sessions), "-m", str(messages), "-l", str(size), "-d"),
            *("-f", f"bench@{FROM_DOMAIN}", "-t", "user@example.org"),
            f"{host}:{port}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def ceiling_row(tmp: Path, host: str, messages: int, size: int = 4096) -> dict:
    """Postfix smtp-source -> smtp-sink, 50 reused sessions."""
    with contextlib.ExitStack() as stack:
        sink = SmtpSink(tmp, host)
        stack.callback(sink.stop)
        start = time.perf_counter()
        smtp_source(sink.host, sink.port, messages, 50, size)
        seconds = time.perf_counter() - start
        received = sink.received()
    return {
        "messages": messages,
        "received": received,
        "seconds": seconds,
        "msg_per_s": messages / seconds,
    }


# -- profiles -------------------------------------------------------------------------------


def print_profiles(folder: Path, top: int = 25, file=None) -> None:
    for path in sorted(folder.glob("*/*.prof")):
        stats = pstats.Stats(str(path), stream=file or sys.stdout)
        label = f"{path.parent.name}/{path.name}"
        print(f"\n--- profile {label}: total {stats.total_tt:.2f} s (top {top} by cumulative)")
        stats.sort_stats("cumulative").print_stats(top)
        print(f"--- profile {label}: top {top} by own time")
        stats.sort_stats("tottime").print_stats(top)
