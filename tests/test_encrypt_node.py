"""Encryption at rest on a real node (aiosmtpd sink, real LMDB): the data file holds no
body or variable marker while mail waits (and does with ``encrypt = false``: the grep
works), a restart reads everything back and delivers it; a changed byte fails one
recipient and the node goes on; ``salvo tenant shred`` ends a tenant's queue
``cancelled`` with events while another tenant is delivered; a wrong or missing master key
stops the start with one line. Waits are bounded; nothing asserts on timing."""

from __future__ import annotations

import base64
import os
import re
import stat
import subprocess
import sys
import time

import msgspec
import pytest
from nodeutil import AioSink, NodeProcess, NodeSetup, job, running_node, wait_for

from salvo.client import Producer
from salvo.core import spool_crypto as sc
from salvo.core import spool_records as r
from salvo.core.protocol import Job
from salvo.core.spool import Spool
from salvo.core.spool_env import Store
from salvo.core.spool_keys import MasterKeyError

BOUND = 60.0
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} salvo\.")


def _marked_job(job_id: str, tenant: str, n: int, send_after: float) -> dict:
    body = job(job_id, [f"{tenant}{i}@example.org" for i in range(n)], tenant=tenant)
    body["subject"] = f"SUBJ-{job_id}-5e1f {{{{ name }}}}"
    body["text"] = f"TEXT-{job_id}-77ab {{{{ code }}}}\n"
    body["html"] = f"<p>HTML-{job_id}-0c3d</p>"
    for i, rcpt in enumerate(body["recipients"]):
        rcpt["vars"] = {"name": f"n{i}", "code": f"VAR-{job_id}-{i}-a9f2"}
    body["send_after"] = send_after
    return body


def _markers(job_id: str, n: int) -> list[bytes]:
    fixed = [f"SUBJ-{job_id}-5e1f", f"TEXT-{job_id}-77ab", f"HTML-{job_id}-0c3d"]
    return [m.encode() for m in fixed + [f"VAR-{job_id}-{i}-a9f2" for i in range(n)]]


def _submit(setup: NodeSetup, jobs: list[dict]) -> None:
    with Producer(setup.endpoint, timeout=30, attempts=3) as producer:
        replies = list(producer.submit_many(jobs))
    assert {x.status for x in replies} == {"accepted"}, replies


def _data_file(setup: NodeSetup) -> bytes:
    return (setup.data_dir / "store" / "data.mdb").read_bytes()


def _wait(predicate, what: str) -> None:
    assert wait_for(predicate, BOUND, what=what), f"not within {BOUND} s: {what}"


def _events(setup: NodeSetup, kind: str) -> list[dict]:
    return [e for e in setup.events() if e["type"] == kind]


@pytest.mark.parametrize("encrypt", [True, False], ids=["on", "off"])
def test_no_marker_in_the_data_file_and_a_restart_delivers_everything(tmp_path, encrypt):
    with AioSink() as sink:
        setup = NodeSetup(tmp_path, routes={"example.org": sink.address})
        if not encrypt:
            setup.extra = "\n[spool]\nencrypt = false\n"
            setup.write()
        n = 4
        node = NodeProcess(setup)
        try:
            node.start()
            _submit(setup, [_marked_job("m1", "acme", n, time.time() + 12)])
            states = setup.queue_states()
            assert states.get("queued") == n, states  # waiting: the grep below means something
            found = [m for m in _markers("m1", n) if m in _data_file(setup)]
            assert found == ([] if encrypt else _markers("m1", n))
            assert node.terminate() == 0
            key = setup.root / "keys" / "spool.master"
            if encrypt:  # made on the first start, for the owner only
                assert stat.S_IMODE(key.stat().st_mode) == 0o600
            else:
                assert not key.exists()
            node.start()  # the restart reads back the sealed records
            _wait(lambda: len(sink.snapshot()) >= n, "the 4 messages after a restart")
        finally:
            node.close()
    got = {m.rcpts[0]: m.content for m in sink.snapshot()}
    assert len(got) == n
    for i in range(n):
        message = got[f"acme{i}@example.org"]
        assert b"SUBJ-m1-5e1f n%d" % i in message
        assert f"VAR-m1-{i}-a9f2".encode() in message


def test_a_changed_byte_fails_one_recipient_and_the_node_goes_on(tmp_path):
    with AioSink() as sink:
        setup = NodeSetup(tmp_path, routes={"example.org": sink.address})
        with running_node(setup):
            _submit(setup, [_marked_job("t1", "acme", 3, time.time() + 8)])
            # while it waits, flip the last byte (the GCM tag) of recipient 1's variables
            with Store(setup.data_dir) as store:

                def flip(txn):
                    value = bytearray(txn.get(r.rcpt_key(1, 1), db=store.dbs["vars"]))
                    value[-1] ^= 0x01
                    txn.put(r.rcpt_key(1, 1), bytes(value), db=store.dbs["vars"])

                store.write(flip)
            _wait(lambda: len(_events(setup, "failed")) >= 1, "the failed event")
            _wait(lambda: len(sink.snapshot()) >= 2, "the two others delivered")
            _submit(setup, [_marked_job("t2", "acme", 2, 0)])  # and the node goes on
            _wait(lambda: len(sink.snapshot()) >= 4, "the next job delivered")
        failed = _events(setup, "failed")
        assert [e["recipient"] for e in failed] == ["acme1@example.org"]
        assert "cannot read the variables" in failed[0]["text"]
        assert "does not open" in failed[0]["text"]
        rcpts = sorted(m.rcpts[0] for m in sink.snapshot())
        # t1: acme0 and acme2 (acme1 failed); t2: acme0 and acme1
        assert rcpts == [f"acme{i}@example.org" for i in (0, 0, 1, 2)]


def test_shred_ends_the_tenant_cancelled_with_events_and_others_deliver(tmp_path):
    with AioSink() as sink:
        setup = NodeSetup(tmp_path, routes={"example.org": sink.address})
        with running_node(setup):
            due = time.time() + 10
            _submit(setup, [_marked_job("s1", "acme", 3, due), _marked_job("s2", "beta", 2, due)])
            done = setup.cli("tenant", "--data", str(setup.data_dir), "shred", "acme", "--yes")
            assert done.returncode == 0, done.stderr
            assert "1 data key(s) destroyed; 3 waiting" in done.stdout
            _wait(lambda: len(_events(setup, "cancelled")) >= 3, "3 cancelled events")
            _wait(lambda: len(sink.snapshot()) >= 2, "beta's two delivered")
            assert not [m for m in _markers("s1", 3) if m in _data_file(setup)]
            # the tenant's next job gets a new key and goes out
            _submit(setup, [_marked_job("s3", "acme", 1, 0)])
            _wait(lambda: len(sink.snapshot()) >= 3, "acme's new job delivered")
        cancelled = _events(setup, "cancelled")
        assert sorted(e["recipient"] for e in cancelled) == [
            f"acme{i}@example.org" for i in (0, 1, 2)
        ]
        assert {e["text"] for e in cancelled} == {"cancelled: the tenant's data key was shredded"}
        assert sorted(m.rcpts[0] for m in sink.snapshot()) == [
            "acme0@example.org",
            "beta0@example.org",
            "beta1@example.org",
        ]
        assert setup.queue_states().get("cancelled") == 3


# -- start-up refusals ------------------------------------------------------------------------


def _salvo_node(setup: NodeSetup, env: dict | None = None) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "salvo", "node", "--config", str(setup.config_path)],
        cwd=setup.root,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=BOUND,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    assert "Traceback" not in done.stderr, done.stderr
    own = [line for line in done.stderr.splitlines() if not LOG_LINE.match(line)]
    assert len(own) == 1, done.stderr
    return done.returncode, own[0]


def _encrypted_data_dir(setup: NodeSetup) -> bytes:
    key = os.urandom(32)
    with Spool.open(setup.data_dir, master_key=key) as spool:
        assert spool.encrypted
    return key


def test_another_master_key_refuses_the_start_with_one_line(tmp_path):
    setup = NodeSetup(tmp_path, routes={})
    _encrypted_data_dir(setup)  # made with a key the node does not have
    status, line = _salvo_node(setup)  # the node makes its own keys/spool.master
    assert status == 1
    assert line.startswith(f"salvo node: data dir {setup.data_dir}: the spool master key (id ")
    assert "is not this data dir's" in line


def test_the_key_from_a_variable_and_its_refusals(tmp_path, monkeypatch):
    setup = NodeSetup(tmp_path, routes={})
    key = _encrypted_data_dir(setup)
    setup.extra = '\n[spool]\nmaster_key_env = "SALVO_TEST_MASTER"\n'
    setup.write()
    status, line = _salvo_node(setup, {"SALVO_TEST_MASTER": ""})
    assert status == 1
    assert line == "salvo node: [spool] master_key_env: the variable SALVO_TEST_MASTER is not set"
    status, line = _salvo_node(setup, {"SALVO_TEST_MASTER": "c2hvcnQ="})
    assert status == 1
    assert line.endswith("SALVO_TEST_MASTER: the key is 5 bytes, not 32 (AES-256)")
    monkeypatch.setenv("SALVO_TEST_MASTER", base64.b64encode(key).decode())
    with running_node(setup) as node:
        assert node.proc.poll() is None  # started: the right key
    assert not (setup.root / "keys" / "spool.master").exists()


def test_encrypt_false_for_an_encrypted_dir_is_refused(tmp_path):
    setup = NodeSetup(tmp_path, routes={})
    setup.extra = "\n[spool]\nencrypt = false\n"
    setup.write()
    _encrypted_data_dir(setup)
    status, line = _salvo_node(setup)
    assert status == 1
    assert "[spool] encrypt = false, but this data dir is encrypted" in line


def test_rotate_master_rewraps_the_data_keys_under_the_new_key(tmp_path):
    setup = NodeSetup(tmp_path, routes={})
    old = _encrypted_data_dir(setup)
    key_file = setup.root / "keys" / "spool.master"
    key_file.write_text(base64.b64encode(old).decode() + "\n")
    with Spool.open(setup.data_dir, master_key=old) as spool:
        spool.submit_many([msgspec.convert(_marked_job("k1", "acme", 2, 0), Job)], time.time())
    new_file = setup.root / "keys" / "spool.master.new"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "salvo",
            "keys",
            "rotate-master",
            "--config",
            str(setup.config_path),
            "--new-key",
            str(new_file),
        ],
        capture_output=True,
        text=True,
        timeout=BOUND,
        cwd=setup.root,
    )
    assert done.returncode == 0, done.stderr
    assert "re-wrapped 1 data key(s)" in done.stdout
    assert stat.S_IMODE(new_file.stat().st_mode) == 0o600
    new = sc.parse_master_key(new_file.read_text(), "new")
    with pytest.raises(MasterKeyError):
        Spool.open(setup.data_dir, master_key=old)
    with Spool.open(setup.data_dir, master_key=new) as spool:
        claim = spool.claim_due(time.time() + 1, 10)
        assert len(claim.claimed) == 2 and not claim.finished
