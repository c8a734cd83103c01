"""Helpers for the node's end-to-end tests: a real ``salvo node`` process, SMTP sinks
(aiosmtpd in a thread, Postfix's ``smtp-sink`` as a process), events and raw producers.

Everything runs on 127.0.0.0/8 with ports picked free for each test, and every wait is
bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import zmq
from aiosmtpd.controller import Controller

from salvo.core import dkimkeys

REPO = Path(__file__).resolve().parent.parent
SMTP_SINK = "/usr/sbin/smtp-sink"
FROM_DOMAIN = "acme.example"
SELECTOR = "s1"
NODE_START_TIMEOUT = 60.0  # a busy 2-core machine can be slow to spawn Python processes
STOP_TIMEOUT = 60.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something true, for at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# -- DKIM --------------------------------------------------------------------------------


_KEY_CACHE: dict[int, bytes] = {}


def dkim_key(bits: int = 2048) -> bytes:
    """An RSA private key (PEM), made once per session and size."""
    if bits not in _KEY_CACHE:
        _KEY_CACHE[bits] = dkimkeys.generate_private_key("rsa-sha256", bits)
    return _KEY_CACHE[bits]


def dkim_verify(message: bytes, pem: bytes) -> bool:
    """dkimpy's verdict, with a DNS that knows only our key."""
    import dkim

    record = dkimkeys.dns_record(pem).encode()
    wanted = f"{SELECTOR}._domainkey.{FROM_DOMAIN}."

    def dnsfunc(name: bytes | str, timeout: int = 5) -> bytes:
        name = name.decode() if isinstance(name, bytes) else name
        return record if name.rstrip(".") == wanted.rstrip(".") else b""

    return bool(dkim.verify(message, dnsfunc=dnsfunc))


def header(message: bytes, name: str) -> str | None:
    """The first value of a header (unfolded), or None."""
    head = message.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n").decode("utf-8", "replace")
    head = re.sub(r"\n[ \t]+", " ", head)
    for line in head.split("\n"):
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return None


# -- the node ----------------------------------------------------------------------------


@dataclass
class NodeSetup:
    """Where a test's node lives and listens, and the TOML config it runs with."""

    root: Path
    routes: dict[str, str]
    signers: int = 1
    max_ready: int = 4096
    first_retry: str = "5m"
    max_retry: str = "1h"
    max_job_size: str | None = None
    extra: str = ""
    ingress_extra: str = ""  # more [ingress] keys (curve, ...)
    events_extra: str = ""  # more [events] keys
    # CURVE: (the node's public key file, a producer's .key_secret) for the readiness probe
    curve_probe: tuple[Path, Path] | None = None
    data: str = "data"  # the data_dir, relative to root (or absolute: another node's)
    ingress_port: int = field(default_factory=free_port)
    events_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.key_pem = dkim_key()
        (self.root / "keys").mkdir(exist_ok=True)
        (self.root / "keys" / "s1.pem").write_bytes(self.key_pem)
        self.config_path = self.root / "node.toml"
        self.write()

    @property
    def data_dir(self) -> Path:
        return self.root / self.data

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.ingress_port}"

    @property
    def events_endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.events_port}"

    @property
    def events_file(self) -> Path:
        return self.data_dir / "events" / "events.jsonl"

    def write(self) -> None:
        routes = "\n".join(f'"{d}" = "{t}"' for d, t in self.routes.items())
        size = f'max_job_size = "{self.max_job_size}"\n' if self.max_job_size else ""
        self.config_path.write_text(
            f"""
[node]
data_dir = "{self.data}"
signers = {self.signers}
hostname = "node.salvo.test"

[ingress]
listen = "{self.endpoint}"
{size}{self.ingress_extra}
[events]
publish = "{self.events_endpoint}"
{self.events_extra}

[routes]
{routes}

[dkim."{FROM_DOMAIN}"]
selector = "{SELECTOR}"
private_key = "keys/s1.pem"

[pools.default]
sources = ["127.0.0.1"]
ehlo = "mta.acme.example"

[traffic.default]
first_retry = "{self.first_retry}"
max_retry = "{self.max_retry}"

[delivery]
max_ready = {self.max_ready}
connect_timeout = "10s"
command_timeout = "30s"
data_timeout = "30s"
idle_timeout = "2s"
{self.extra}
"""
        )

    def events(self) -> list[dict]:
        """Every event in the JSONL log so far (rotated files are not used by the tests)."""
        if not self.events_file.exists():
            return []
        lines = self.events_file.read_bytes().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """``salvo ARGS`` (queue, suppress...) against this data dir."""
        return subprocess.run(
            [sys.executable, "-m", "salvo", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )

    def queue_states(self) -> dict[str, int]:
        """Recipient counts by state, from ``salvo queue --data DIR summary``."""
        done = self.cli("queue", "--data", str(self.data_dir), "summary")
        assert done.returncode == 0, done.stderr
        line = next(x for x in done.stdout.splitlines() if x.startswith("states"))
        words = line.split()[1:]
        return {words[i]: int(words[i + 1]) for i in range(0, len(words) - 1, 2)}


class NodeProcess:
    """``python -m salvo node --config PATH`` in its own process group."""

    def __init__(self, setup: NodeSetup) -> None:
        self.setup = setup
        self.proc: subprocess.Popen | None = None
        self.log_path = setup.root / "node.log"
        self.starts = 0

    def start(self, *, wait: bool = True) -> NodeProcess:
        assert self.proc is None or self.proc.poll() is not None
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        log.write(f"---- start {self.starts} ----\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "salvo", "node", "--config", str(self.setup.config_path)],
            cwd=self.setup.root,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        self.starts += 1
        if wait:
            self.wait_ready()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = NODE_START_TIMEOUT) -> None:
        """Until the ingress answers a probe (a frame that is not msgpack: no side effect)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self.setup.curve_probe is not None:
            from salvo.actors.keys import set_client_keys

            server_key, client_key = self.setup.curve_probe
            # The node makes its key pair on its first start.
            wait_for(lambda: server_key.exists() or self.proc.poll() is not None, timeout)
            if self.proc.poll() is not None:
                sock.close()
                raise AssertionError(
                    f"the node exited with {self.proc.returncode}:\n{self.log()[-3000:]}"
                )
            set_client_keys(sock, server_key, client_key)
        sock.connect(self.setup.endpoint)
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"the node exited with {self.proc.returncode}:\n{self.log()[-3000:]}"
                    )
                sock.send(b"\xc1probe")
                if sock.poll(500, zmq.POLLIN):
                    reply = msgspec.msgpack.decode(sock.recv_multipart()[-1])
                    assert reply["status"] == "error", reply
                    return
            raise AssertionError(
                f"the node did not answer within {timeout} s:\n{self.log()[-3000:]}"
            )
        finally:
            sock.close()

    def kill(self) -> None:
        """SIGKILL the whole process group (supervisor and actors) and reap the supervisor."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        # The children die with the group; wait until none is left holding the spool.
        wait_for(lambda: not _group_alive(self.proc.pid), 10)

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM the supervisor; its exit status (the process group is killed after)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.kill()

    def children(self) -> list[int]:
        """The supervisor's child pids, from /proc."""
        return children_of(self.pid)

    def child_pid(self, name: str) -> int | None:
        """The pid of a supervised process (``core``, ``signer-0``), from the supervisor's
        log line ``started NAME (pid N)`` of the latest start, if it is still a child."""
        found = re.findall(rf"started {re.escape(name)} \(pid (\d+)\)", self.log())
        if not found:
            return None
        pid = int(found[-1])
        return pid if pid in self.children() else None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        elif self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)


def _live_processes():
    """(pid, ppid, pgid) of every process that is not a zombie, from /proc."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, ppid, pgid = stat.rpartition(")")[2].split()[:3]
        if state != "Z":
            yield int(entry), int(ppid), int(pgid)


def children_of(pid: int) -> list[int]:
    return [child for child, ppid, _ in _live_processes() if ppid == pid]


def _group_alive(pgid: int) -> bool:
    return any(group == pgid for _, _, group in _live_processes())


@contextlib.contextmanager
def running_node(setup: NodeSetup) -> Iterator[NodeProcess]:
    node = NodeProcess(setup)
    try:
        node.start()
        yield node
    finally:
        node.close()


# -- an aiosmtpd sink ------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpts: list[str]
    content: bytes

    @property
    def message_id(self) -> str | None:
        return header(self.content, "Message-ID")


class _Handler:
    def __init__(self, sink: AioSink) -> None:
        self.sink = sink

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.sink.rcpt_replies.get(address.lower())
        if reply is not None:
            return reply
        once = self.sink.rcpt_once.pop(address.lower(), None)
        if once is not None:
            return once
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.sink.data_delay:
            await asyncio.sleep(self.sink.data_delay)
        content = envelope.original_content or envelope.content
        with self.sink.lock:
            self.sink.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(content))
            )
        return "250 2.0.0 OK queued"


class AioSink:
    """An aiosmtpd server in a thread that records every message.

    ``rcpt_replies`` maps an address (lowercase) to the reply its RCPT gets instead of 250
    (e.g. ``"550 5.1.1 no such user"``); ``rcpt_once`` likewise, for the first RCPT only.
    """

    def __init__(self, host: str = "127.0.0.2", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.messages: list[Received] = []
        self.lock = threading.Lock()
        self.rcpt_replies: dict[str, str] = {}
        self.rcpt_once: dict[str, str] = {}  # the first RCPT only, then 250
        self.data_delay = 0.0
        self._controller = Controller(
            _Handler(self),
            hostname=host,
            port=self.port,
            data_size_limit=100 * 1024 * 1024,
            decode_data=False,
            ready_timeout=30,
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __enter__(self) -> AioSink:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.messages)

    def by_message_id(self) -> Counter[str]:
        return Counter(m.message_id or "" for m in self.snapshot())


# -- Postfix's smtp-sink -------------------------------------------------------------------


class PostfixSink:
    """``smtp-sink`` dumping each message into a file of ``folder``."""

    def __init__(self, folder: Path, host: str = "127.0.0.3") -> None:
        self.folder = folder
        self.host = host
        self.port = free_port(host)
        self.proc: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __enter__(self) -> PostfixSink:
        user = ["-u", "root"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen(
            [SMTP_SINK, *user, "-d", f"{self.folder}/msg.", f"{self.host}:{self.port}", "1000"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

        def listening() -> bool:
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    return s.recv(100).startswith(b"220")
            except OSError:
                return False

        if not wait_for(listening, 20, 0.1):
            self.__exit__()
            raise AssertionError("smtp-sink did not start listening")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def messages(self) -> list[bytes]:
        """The dumped transactions (complete files only; a file is written at the dot)."""
        return [p.read_bytes() for p in sorted(self.folder.glob("msg.*"))]


# -- producers and events ----------------------------------------------------------------------


def job(
    job_id: str, recipients: list[str], *, subject: str = "Hello {{ name }}", **extra: Any
) -> dict:
    """A job in the protocol's dict form, signed by the test key's domain."""
    return {
        "id": job_id,
        "tenant": "acme",
        "campaign": "e2e",
        "from": f"Acme <news@{FROM_DOMAIN}>",
        "return_path": f"bounces@{FROM_DOMAIN}",
        "subject": subject,
        "text": "Hello {{ name }},\nthis is job " + job_id + ".\n",
        "html": "<p>Hello {{ name }}</p>",
        "headers": {"X-Test": job_id},
        "recipients": [{"to": r, "vars": {"name": r.partition("@")[0]}} for r in recipients],
        **extra,
    }


def _curve_client(sock: zmq.Socket, curve: tuple[Path, Path] | None) -> None:
    """``curve``: (the node's public key file, the client's .key_secret), or None."""
    if curve is not None:
        from salvo.actors.keys import set_client_keys

        set_client_keys(sock, *curve)


class RawProducer:
    """A bare DEALER socket speaking docs/protocol.md, for frames no client would send."""

    def __init__(self, endpoint: str, curve: tuple[Path, Path] | None = None) -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        _curve_client(self.sock, curve)
        self.sock.connect(endpoint)

    def send(self, frame: bytes) -> None:
        self.sock.send(frame)

    def send_obj(self, obj: Any) -> None:
        self.sock.send(msgspec.msgpack.encode(obj))

    def recv(self, timeout: float = 30.0) -> dict | None:
        if not self.sock.poll(int(timeout * 1000), zmq.POLLIN):
            return None
        return msgspec.msgpack.decode(self.sock.recv_multipart()[-1])

    def request(self, obj: Any, timeout: float = 30.0) -> dict | None:
        if isinstance(obj, bytes):
            self.send(obj)
        else:
            self.send_obj(obj)
        return self.recv(timeout)

    def close(self) -> None:
        self.sock.close()


class EventSubscriber:
    """A SUB socket on the node's events endpoint, collecting ``[type, json]`` frames."""

    def __init__(self, endpoint: str, curve: tuple[Path, Path] | None = None) -> None:
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        _curve_client(self.sock, curve)
        self._monitor = self.sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self.sock.connect(endpoint)
        self.events: list[dict] = []
        self.bad_frames: list[list[bytes]] = []

    def wait_connected(self, timeout: float = 20.0) -> None:
        """Until the handshake with the node's PUB socket succeeded (then the subscription
        travels: a short pause lets the PUB side register it before events flow)."""
        assert self._monitor.poll(int(timeout * 1000), zmq.POLLIN), "events: no connection"
        self._monitor.recv_multipart()
        time.sleep(0.3)

    def drain(self) -> list[dict]:
        while self.sock.poll(0, zmq.POLLIN):
            frames = self.sock.recv_multipart()
            event = json.loads(frames[1]) if len(frames) == 2 else None
            if event is None or frames[0].decode() != event.get("type"):
                self.bad_frames.append(frames)
            else:
                self.events.append(event)
        return self.events

    def close(self) -> None:
        self.sock.disable_monitor()
        self._monitor.close()
        self.sock.close()


def missing_acked(acked: dict[str, str], sink: AioSink, setup: NodeSetup) -> list[str]:
    """Acked Message-IDs neither at the sink nor finally bounced/expired (per events)."""
    arrived = set(sink.by_message_id())
    left = [m for m in acked if m not in arrived]
    if not left:
        return []
    final = final_states(setup.events())
    return [m for m in left if final.get(m) not in ("bounced", "expired")]


@contextlib.contextmanager
def node_with_sink(
    root: Path, sink_host: str, extra: str = ""
) -> Iterator[tuple[NodeSetup, NodeProcess, AioSink]]:
    """A started node whose example.org goes to an aiosmtpd sink on ``sink_host``, with
    ``extra`` appended to its config."""
    with AioSink(sink_host) as sink:
        setup = NodeSetup(root / "node", {"example.org": sink.address}, extra=extra)
        with running_node(setup) as process:
            yield setup, process, sink


def final_states(events: list[dict]) -> dict[str, str]:
    """The last event type per message id (events in the order they were emitted)."""
    last: dict[str, str] = {}
    for e in events:
        last[e.get("message_id", "")] = e["type"]
    return last


class ContinuousProducer:
    """A thread submitting small jobs (1-3 recipients) until stopped, recording the
    Message-ID -> recipient of every recipient whose reply said it was accepted."""

    def __init__(
        self,
        endpoint: str,
        prefix: str,
        *,
        domain: str = "example.org",
        window: int = 16,
        pause: float = 0.0,
        timeout: float = 3.0,
        attempts: int = 40,
        seed: int = 0,
    ) -> None:
        import random

        self.endpoint = endpoint
        self.prefix = prefix
        self.domain = domain
        self.window = window
        self.pause = pause
        self.timeout = timeout
        self.attempts = attempts
        self.random = random.Random(seed)
        self.acked: dict[str, str] = {}  # message id -> recipient
        self.statuses: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.failure: BaseException | None = None
        self.submitted = 0
        self._thread = threading.Thread(target=self._run, name=f"producer-{prefix}", daemon=True)

    def __enter__(self) -> ContinuousProducer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def acked_count(self) -> int:
        with self.lock:
            return len(self.acked)

    def _jobs(self) -> Iterator[dict]:
        n = 0
        while not self.stop_event.is_set():
            k = self.random.randint(1, 3)
            rcpts = [f"{self.prefix}{n}-{i}@{self.domain}" for i in range(k)]
            self.submitted += 1
            yield job(f"{self.prefix}-{n}", rcpts)
            n += 1
            if self.pause:
                time.sleep(self.pause)

    def _run(self) -> None:
        from salvo.client import Producer

        try:
            with Producer(
                self.endpoint,
                timeout=self.timeout,
                attempts=self.attempts,
                backoff=0.2,
                max_backoff=1.0,
            ) as producer:
                for reply in producer.submit_many(self._jobs(), window=self.window):
                    with self.lock:
                        self.statuses[reply.status] += 1
                        if reply.status in ("accepted", "partial"):
                            for a in reply.accepted:
                                self.acked[a.message_id] = a.to
        except BaseException as exc:  # reported by stop()
            self.failure = exc

    def stop(self, timeout: float = 120.0) -> None:
        """Stop making jobs and wait (bounded) for the replies of those in flight."""
        self.stop_event.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the producer thread did not finish"
        if self.failure is not None:
            raise AssertionError(f"the producer failed: {self.failure!r}") from self.failure
