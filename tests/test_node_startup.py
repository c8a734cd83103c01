"""A node's start: one node per data dir (the lock), start-up failures as one line and a
non-zero exit, and the supervisor's restart limit for an actor that keeps dying."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from nodeutil import (
    AioSink,
    NodeProcess,
    NodeSetup,
    children_of,
    job,
    running_node,
    wait_for,
)

from salvo.client import Producer

BOUND = 30.0  # seconds for a node that cannot start to say so and exit (a hang guard)
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} salvo\.")


def _salvo_node(setup: NodeSetup, *, wrap: list[str] | None = None) -> tuple[int, str, float]:
    """Run ``salvo node`` until it exits (at most BOUND s): status, stderr, seconds."""
    command = [sys.executable, "-m", "salvo", "node", "--config", str(setup.config_path)]
    if wrap:
        command = [*wrap[:-1], wrap[-1] + " ".join(_quote(c) for c in command)]
    started = time.monotonic()
    done = subprocess.run(
        command,
        cwd=setup.root,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=BOUND,
        start_new_session=True,
    )
    return done.returncode, done.stderr, time.monotonic() - started


def _quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


def _one_error_line(stderr: str) -> str:
    """The one line ``salvo node: ...`` of a failed start; every other line is the log's."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    own = [line for line in lines if not LOG_LINE.match(line)]
    assert len(own) == 1, stderr
    assert lines[-1] == own[0], stderr
    assert own[0].startswith("salvo node: "), stderr
    return own[0]


def _lock_holders(path: Path, pids: list[int]) -> list[int]:
    """The pids among ``pids`` with a descriptor open on ``path``."""
    holders = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                    holders.append(pid)
                    break
            except OSError:
                continue
    return holders


# -- one node per data dir ---------------------------------------------------------------


def test_a_second_node_on_the_same_data_dir_exits_and_the_first_delivers_once(tmp_path: Path):
    with AioSink("127.0.0.21") as sink:
        sink.data_delay = 0.002  # the first node is still delivering when the second starts
        first = NodeSetup(tmp_path / "first", {"example.org": sink.address})
        second = NodeSetup(
            tmp_path / "second", {"example.org": sink.address}, data=str(first.data_dir)
        )
        lock = first.data_dir / "node.lock"
        with running_node(first) as node:
            assert lock.read_text().strip() == str(node.pid)
            # The supervisor alone holds the lock: no actor has a copy of the descriptor.
            actors = node.children()
            assert actors
            assert _lock_holders(lock, [node.pid, *actors]) == [node.pid]

            jobs = [job(f"j{j}", [f"r{j}-{i}@example.org" for i in range(10)]) for j in range(50)]
            with Producer(first.endpoint, timeout=30, attempts=3) as producer:
                replies = list(producer.submit_many(jobs, window=50))
            assert Counter(r.status for r in replies) == {"accepted": 50}

            status, stderr, _ = _salvo_node(second)
            line = _one_error_line(stderr)
            assert status == 1
            assert line == (
                f"salvo node: data dir {first.data_dir} is in use by another node "
                f"(pid {node.pid}); stop it first or use another data_dir"
            )
            assert node.proc.poll() is None  # the first node goes on

            # The CLI commands that write work beside the running node, without the lock.
            added = first.cli("suppress", "--data", str(first.data_dir), "add", "x@example.org")
            assert added.returncode == 0, added.stderr
            checked = first.cli("suppress", "--data", str(first.data_dir), "check", "x@example.org")
            assert "suppressed" in checked.stdout, checked

            wanted = Counter(f"r{j}-{i}@example.org" for j in range(50) for i in range(10))

            def received() -> Counter[str]:
                return Counter(r for m in sink.snapshot() for r in m.rcpts)

            assert wait_for(lambda: received() == wanted, 120, 0.1), sum(received().values())
            time.sleep(1.0)  # a duplicate would come within this
            assert received() == wanted
            assert max(sink.by_message_id().values()) == 1
            assert lock.read_text().strip() == str(node.pid)

            # SIGKILL of the whole node: the kernel drops the lock, a new node starts at once.
            node.kill()
            again = NodeProcess(first)
            try:
                again.start(wait=False)
                again.wait_ready(timeout=30)
                assert lock.read_text().strip() == str(again.pid)
                status, stderr, _ = _salvo_node(second)
                assert status == 1
                assert f"(pid {again.pid})" in _one_error_line(stderr)
                assert again.terminate() == 0
            finally:
                again.close()
    assert max(sink.by_message_id().values()) == 1


# -- start-up failures ---------------------------------------------------------------------


@pytest.fixture
def setup(tmp_path: Path) -> NodeSetup:
    return NodeSetup(tmp_path / "node", {"example.org": "127.0.0.1:9"})


def _taken(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


@pytest.mark.parametrize(
    ("port", "endpoint", "says"),
    [
        ("ingress_port", "endpoint", "ingress: cannot listen on"),
        ("events_port", "events_endpoint", "events: cannot publish on"),
    ],
)
def test_a_port_in_use(setup: NodeSetup, port: str, endpoint: str, says: str):
    with _taken(getattr(setup, port)):
        status, stderr, _ = _salvo_node(setup)
    assert status == 1
    assert _one_error_line(stderr) == (
        f"salvo node: {says} {getattr(setup, endpoint)}: Address already in use"
    )
    assert "started core" in stderr and "restarting" not in stderr


def test_dkim_key_that_cannot_be_read(setup: NodeSetup):
    # Root reads a mode-000 file: a key path that is a folder fails for root too.
    key = setup.root / "keys" / "s1.pem"
    key.unlink()
    key.mkdir()
    status, stderr, _ = _salvo_node(setup)
    assert status == 1
    assert stderr.splitlines() == [
        f"salvo node: DKIM key for acme.example: cannot read {key}: Is a directory"
    ]
    shutil.rmtree(key)
    status, stderr, _ = _salvo_node(setup)
    assert status == 1
    assert stderr.splitlines() == [
        f"salvo node: DKIM key for acme.example: cannot read {key}: No such file or directory"
    ]


def test_data_dir_that_cannot_be_made(setup: NodeSetup):
    # Root ignores mode bits: a data dir under a regular file cannot be made by anyone.
    (setup.root / "afile").write_text("")
    setup.data = "afile/data"
    setup.write()
    status, stderr, _ = _salvo_node(setup)
    assert status == 1
    data = setup.root / "afile" / "data"
    assert stderr.splitlines() == [
        f"salvo node: data dir {data}: cannot use it: Not a directory ({data})"
    ]


def test_data_dir_that_is_not_a_salvo_store(setup: NodeSetup):
    setup.data = "keys"
    setup.write()
    status, stderr, _ = _salvo_node(setup)
    assert status == 1
    assert stderr.splitlines() == [
        f"salvo node: data dir {setup.root / 'keys'} is not empty and holds no salvo store; "
        "use an empty or new directory for data_dir"
    ]
    assert not (setup.root / "keys" / "node.lock").exists()  # nothing left in it


def _can_mount_tmpfs(where: Path) -> bool:
    if not shutil.which("unshare"):
        return False
    where.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k none {_quote(str(where))}"],
        capture_output=True,
        timeout=10,
    )
    return probe.returncode == 0


@pytest.mark.parametrize("kind", ["read-only", "full"])
def test_data_dir_on_a_read_only_or_full_filesystem(setup: NodeSetup, kind: str):
    """A real read-only (or full) tmpfs in a private mount namespace: needs CAP_SYS_ADMIN,
    which root in this project's container has; skipped elsewhere."""
    data = setup.data_dir
    if not _can_mount_tmpfs(data):
        pytest.skip("cannot mount a tmpfs in a private mount namespace here")
    where = _quote(str(data))
    if kind == "read-only":
        prepare = f"mount -t tmpfs -o ro,size=1m none {where}"
    else:  # a store made by a CLI command, then every block taken
        store = f"{_quote(sys.executable)} -m salvo suppress --data {where} add a@example.org"
        fill = f"(dd if=/dev/zero of={where}/fill bs=4k 2>/dev/null || true)"
        prepare = f"mount -t tmpfs -o size=1m none {where} && {store} >/dev/null && {fill}"
    mount = f"{prepare} && exec "
    status, stderr, _ = _salvo_node(setup, wrap=["unshare", "-m", "sh", "-c", mount])
    assert status == 1
    reason = (
        f"cannot use it: Read-only file system ({data / 'node.lock'})"
        if kind == "read-only"
        else f"cannot write {data / 'node.lock'}: No space left on device"
    )
    assert stderr.splitlines() == [f"salvo node: data dir {data}: {reason}"]


def test_bad_config_exits_2(setup: NodeSetup):
    setup.config_path.write_text('[node]\nsigners = "two"\n')
    status, stderr, _ = _salvo_node(setup)
    assert status == 2
    assert stderr.splitlines() == [
        f"salvo node: {setup.config_path}: [node] signers: Expected `int`, got `str`"
    ]


# -- the restart limit -----------------------------------------------------------------------


def test_an_actor_that_keeps_dying_after_its_start_ends_the_node(tmp_path: Path):
    setup = NodeSetup(tmp_path / "node", {"example.org": "127.0.0.1:9"})
    node = NodeProcess(setup)
    killed: list[int] = []
    try:
        node.start()
        while node.proc.poll() is None and len(killed) < 10:

            def up() -> int | None:
                pids = re.findall(r"signer-0 \(pid (\d+)\) is up", node.log())
                fresh = [int(p) for p in pids if int(p) not in killed]
                return fresh[-1] if fresh else None

            wait_for(lambda: up() or node.proc.poll() is not None, 15, 0.05)
            pid = up()
            if pid is None:
                break
            if pid in children_of(node.pid):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        status = node.proc.wait(timeout=15)
        log = node.log()
    finally:
        node.close()
    assert status == 1, log[-3000:]
    assert len(killed) == 6, log[-3000:]  # five restarts, then the limit
    assert log.count("started signer-0") == 6
    assert "Traceback" not in log
    assert log.splitlines()[-1] == (
        "salvo node: signer-0 died 6 times within 60 s (last: killed by SIGKILL); "
        "not restarting it again"
    )
    assert "node stopped" in log  # the core drained and closed the spool
