"""Shared pieces of the node benchmarks (``bench/node.py``, ``salvo bench``).

Processes (a node, Postfix's ``smtp-sink``), CPU and memory of a process from ``/proc``,
free ports, the machine's RSA ceiling, cProfile output. Every process started here is
stopped by its ``stop()`` (SIGTERM, then SIGKILL to its process group).
"""

from __future__ import annotations

import contextlib
import os
import pstats
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from salvo.core.dkimkeys import generate_private_key

SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"
TICK = os.sysconf("SC_CLK_TCK")
FROM_DOMAIN = "acme.example"
DKIM_ALGORITHMS = {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}


# -- ports and processes --------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_listening(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {host}:{port}") from None
            time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def peak_rss(pid: int) -> int:
    """Peak resident set size of a live process in bytes (VmHWM; 0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


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


def stop_process(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL to its process group if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group: also any orphaned child
    proc.wait()


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


# -- Postfix smtp-sink ----------------------------------------------------------------------


class Sink:
    """A Postfix ``smtp-sink`` on (host, free port); ``stop_after`` = ``-M``: exit after N."""

    def __init__(self, folder: Path, host: str, stop_after: int | None = None) -> None:
        if not Path(SMTP_SINK).exists():
            raise SystemExit(f"{SMTP_SINK} is missing: apt-get install postfix")
        self.host, self.port = host, free_port(host)
        self.out = folder / f"sink-{host}-{self.port}.txt"
        self.cpu = 0.0
        cmd = [SMTP_SINK, "-c"]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]  # smtp-sink refuses to run as root without it
        if stop_after:
            cmd += ["-M", str(stop_after)]
        cmd += [f"{host}:{self.port}", "1000"]
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            wait_listening(host, self.port)
        except BaseException:
            self.stop()
            raise

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def exited(self) -> float | None:
        """None while it runs; once it has exited (``-M``), the CPU seconds it used."""
        if self.proc.returncode is not None:
            return self.cpu
        pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
        if pid == 0:
            return None
        self.proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        self.cpu = usage.ru_utime + usage.ru_stime
        return self.cpu

    def cpu_now(self) -> float:
        """CPU seconds so far (alive), or what it used (exited)."""
        done = self.exited()
        return done if done is not None else cpu_seconds(self.proc.pid)

    def received(self) -> int:
        """Messages received so far (the last ``mesg=`` of ``-c``)."""
        with open(self.out, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 200))
            counts = re.findall(rb"mesg=(\d+)", f.read())
        return int(counts[-1]) if counts else 0

    def stop(self) -> None:
        stop_process(self.proc, timeout=5)


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
        sink = Sink(tmp, host)
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
