"""Producers against a scripted ROUTER server: replies, retries, lost replies, order, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import trio
import zmq

from salvo.client import Producer, SubmitTimeout, open_trio_producer
from salvo.core.protocol import (
    Accepted,
    InvalidJob,
    ProtocolError,
    Rejected,
    Reply,
    decode_job,
    encode_reply,
    error_reply,
)
from salvo.ext.errors import SalvoError
from salvo.testing.terminal import run_on_terminal

HANG_GUARD = 60  # seconds; a guard against hangs, not a timing assertion


class Server:
    """A ROUTER that answers like a node, with scripted misbehaviour.

    ``retries``: answer "retry" to the first N submissions of each id. ``drop_first``:
    swallow the first reply to each id. ``silent``: never answer. ``reverse``: answer
    each batch of ``reverse`` jobs (fewer when no job comes for a moment) in reverse
    order. Recipients starting with "bad" are rejected. Like the node, a known id gets its
    first final reply again.
    """

    def __init__(self, *, retries=0, drop_first=False, silent=False, reverse=0):
        self.retries, self.drop_first, self.silent, self.reverse = (
            retries,
            drop_first,
            silent,
            reverse,
        )
        self.seen: Counter[str] = Counter()
        self.jobs = []
        self._final: dict[str, Reply] = {}
        self._held = []
        self._stop = threading.Event()
        self._sock = zmq.Context.instance().socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(HANG_GUARD)
        if not self._thread.is_alive():
            self._sock.close(0)

    def _serve(self):
        while not self._stop.is_set():
            if not self._sock.poll(20):
                self._flush()  # a quiet moment: answer what is held back
                continue
            while True:
                try:
                    frames = self._sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                envelope, frame = frames[:-1], frames[-1]
                reply = self._answer(frame)
                if reply is None:
                    continue
                self._held.append([*envelope, encode_reply(reply)])
                if len(self._held) >= self.reverse:
                    self._flush()

    def _flush(self):
        for out in reversed(self._held):
            self._sock.send_multipart(out)
        self._held.clear()

    def _answer(self, frame):
        try:
            job = decode_job(frame)
        except ProtocolError as exc:
            return error_reply(frame, exc)
        self.seen[job.id] += 1
        self.jobs.append(job)
        if self.silent or (self.drop_first and self.seen[job.id] == 1):
            return None
        if job.id in self._final:
            return self._final[job.id]
        if self.seen[job.id] <= self.retries:
            return Reply(id=job.id, status="retry", error="spool full")
        good = [
            Accepted(r.to, f"<{job.id}.{i}@test>")
            for i, r in enumerate(job.recipients)
            if not r.to.startswith("bad")
        ]
        bad = [Rejected(r.to, "invalid-address") for r in job.recipients if r.to.startswith("bad")]
        status = "rejected" if not good else "partial" if bad else "accepted"
        self._final[job.id] = Reply(id=job.id, status=status, accepted=good, rejected=bad)
        return self._final[job.id]


def make_job(n, **changes):
    job = {
        "id": f"job-{n}",
        "from": "a@acme.example",
        "subject": "s",
        "text": "t",
        "recipients": [{"to": f"r{n}@example.org"}],
    }
    job.update(changes)
    return job


# Short timeouts only where a test needs a resend; elsewhere a slow machine must not cause one.
FAST = {"timeout": 10.0, "backoff": 0.01, "max_backoff": 0.05}
LOSSY = {**FAST, "timeout": 0.5}


def test_submit_gets_the_reply_and_generates_missing_ids():
    with Server() as server, Producer(server.endpoint, **FAST) as producer:
        reply = producer.submit(make_job(1))
        assert reply == Reply(
            id="job-1", status="accepted", accepted=[Accepted("r1@example.org", "<job-1.0@test>")]
        )
        no_id = make_job(2)
        del no_id["id"]
        generated = producer.submit(no_id)
    assert generated.status == "accepted" and len(generated.id) == 32 and "id" not in no_id
    assert server.seen == {"job-1": 1, generated.id: 1}


def test_many_in_flight_replies_out_of_order():
    jobs = [make_job(n) for n in range(500)]
    with Server(reverse=10) as server, Producer(server.endpoint, **FAST) as producer:
        replies = list(producer.submit_many(jobs, window=100))
    ids = [r.id for r in replies]
    assert sorted(ids) == sorted(j["id"] for j in jobs) and ids != [j["id"] for j in jobs]
    assert all(r.status == "accepted" for r in replies)
    assert set(server.seen.values()) == {1}


def test_retry_replies_are_resubmitted_with_the_same_id():
    with Server(retries=2) as server, Producer(server.endpoint, attempts=3, **FAST) as producer:
        assert producer.submit(make_job(1)).status == "accepted"
        replies = list(producer.submit_many([make_job(n) for n in range(2, 22)]))
    assert {r.status for r in replies} == {"accepted"}
    assert set(server.seen.values()) == {3}


def test_retry_until_attempts_run_out_returns_the_retry_reply():
    with Server(retries=99) as server, Producer(server.endpoint, attempts=3, **FAST) as producer:
        reply = producer.submit(make_job(1))
    assert reply.status == "retry" and reply.error == "spool full"
    assert server.seen["job-1"] == 3


def test_lost_reply_is_resubmitted_and_the_node_answers_once():
    with Server(drop_first=True) as server, Producer(server.endpoint, **LOSSY) as producer:
        assert producer.submit(make_job(1)).status == "accepted"
        replies = list(producer.submit_many([make_job(n) for n in range(2, 52)]))
    assert len(replies) == 50 and {r.status for r in replies} == {"accepted"}
    assert len(server.seen) == 51 and min(server.seen.values()) >= 2  # resent, same ids


def test_no_reply_at_all_is_a_typed_timeout():
    options = {**FAST, "timeout": 0.2, "attempts": 2}
    with Server(silent=True) as server, Producer(server.endpoint, **options) as producer:
        with pytest.raises(SubmitTimeout) as info:
            producer.submit(make_job(1))
        [as_reply] = producer.submit_many([make_job(2)])
    assert info.value.job_id == "job-1" and info.value.attempts == 2 and info.value.temporary
    assert as_reply.status == "error" and as_reply.error.startswith(
        "timeout: no reply for job 'job-2'"
    )
    assert server.seen == {"job-1": 2, "job-2": 2}


def test_producer_is_shared_by_threads():
    with (
        Server(reverse=4) as server,
        Producer(server.endpoint, **FAST) as producer,
        ThreadPoolExecutor(8) as pool,
    ):
        replies = list(
            pool.map(producer.submit, [make_job(n) for n in range(200)], timeout=HANG_GUARD)
        )
    assert [r.id for r in replies] == [f"job-{n}" for n in range(200)]
    assert sum(server.seen.values()) == 200


def test_error_and_rejection_replies_are_returned():
    with Server() as server, Producer(server.endpoint, **FAST) as producer:
        partial = producer.submit(
            make_job(1, recipients=[{"to": "ok@x.example"}, {"to": "bad@x.example"}])
        )
        error = producer.submit(make_job(2, recipients=[]))
    assert partial.status == "partial" and partial.rejected == [
        Rejected("bad@x.example", "invalid-address")
    ]
    assert error == Reply(
        id="job-2", status="error", error="recipients: at least one recipient is required"
    )


def test_trio_producer_concurrent_submits_lost_replies_and_retries():
    async def main():
        with Server(drop_first=True, reverse=5) as server:
            async with open_trio_producer(server.endpoint, **LOSSY) as producer:
                replies = {}

                async def one(n):
                    replies[n] = await producer.submit(make_job(n))

                with trio.fail_after(HANG_GUARD):
                    async with trio.open_nursery() as nursery:
                        for n in range(50):
                            nursery.start_soon(one, n)
                    many = [
                        r async for r in producer.submit_many(make_job(n) for n in range(50, 300))
                    ]
            assert {r.status for r in replies.values()} == {"accepted"} and len(replies) == 50
            assert sorted(r.id for r in many) == sorted(f"job-{n}" for n in range(50, 300))
            assert len(server.seen) == 300 and min(server.seen.values()) >= 2
        with Server(retries=1) as server:
            async with open_trio_producer(server.endpoint, **FAST) as producer:
                with trio.fail_after(HANG_GUARD):
                    assert (await producer.submit(make_job(1))).status == "accepted"
            assert server.seen["job-1"] == 2

    trio.run(main)


def _salvo(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "salvo", "submit", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )


def test_cli_submits_a_jsonl_file_and_reports_malformed_lines(tmp_path):
    lines = [
        json.dumps(make_job(1)),
        "{not json",
        json.dumps(make_job(2, recipients=[{"to": "ok@x.example"}, {"to": "bad@x.example"}])),
        "",
        "[1, 2]",
        json.dumps({k: v for k, v in make_job(3).items() if k != "id"}),
    ]
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with Server() as server:
        done = _salvo("--endpoint", server.endpoint, "--jobs", str(path), "--timeout", "5")
    assert done.returncode == 2, done.stderr
    out = {r["line"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert sorted(out) == [1, 2, 3, 5, 6]
    assert out[1]["status"] == "accepted" and out[1]["id"] == "job-1"
    assert out[1]["accepted"] == [{"to": "r1@example.org", "message_id": "<job-1.0@test>"}]
    assert out[2]["status"] == "error" and out[2]["error"].startswith("line 2: not valid JSON")
    assert out[3]["status"] == "partial" and out[3]["rejected"] == [
        {"to": "bad@x.example", "reason": "invalid-address"}
    ]
    assert out[5]["status"] == "error" and "line 5: a job is a JSON object" in out[5]["error"]
    assert out[6]["status"] == "accepted" and len(out[6]["id"]) == 32
    assert sum(server.seen.values()) == 3  # the malformed lines went nowhere


def test_cli_exit_status_follows_the_replies(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(make_job(n)) + "\n" for n in range(20)))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(make_job(100, recipients=[{"to": "bad@x.example"}])) + "\n")
    with Server() as server:
        all_good = _salvo("--endpoint", server.endpoint, "--jobs", str(good))
        rejected = _salvo("--endpoint", server.endpoint, "--jobs", "-", stdin=bad.read_text())
    assert all_good.returncode == 0, all_good.stderr
    assert len(all_good.stdout.splitlines()) == 20
    assert rejected.returncode == 1 and json.loads(rejected.stdout)["status"] == "rejected"


def test_cli_single_message_from_flags(tmp_path):
    (tmp_path / "body.txt").write_text("Hello\n")
    (tmp_path / "body.html").write_text("<p>Hello</p>\n")
    with Server() as server:
        done = _salvo(
            "--endpoint", server.endpoint, "--from", "Acme <news@acme.example>",
            "--to", "ann@example.org", "--to", "bob@example.org", "--subject", "Hi",
            "--text", str(tmp_path / "body.txt"), "--html", str(tmp_path / "body.html"),
            "--header", "Reply-To: help@acme.example", "--id", "flag-job",
        )  # fmt: skip
        missing = _salvo(
            "--endpoint", server.endpoint, "--from", "a@x.example", "--to", "b@y.example"
        )
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["id"] == "flag-job" and reply["line"] == 1
    assert [a["to"] for a in reply["accepted"]] == ["ann@example.org", "bob@example.org"]
    [job] = server.jobs
    assert job.from_ == "Acme <news@acme.example>" and job.subject == "Hi"
    assert (job.text, job.html) == ("Hello\n", "<p>Hello</p>\n")
    assert job.headers == {"Reply-To": "help@acme.example"}
    assert missing.returncode == 2 and "missing --subject" in missing.stderr


def test_same_id_twice_in_flight_is_sent_once_and_both_get_the_reply():
    jobs = [make_job(1), make_job(1), make_job(2)]
    with Server(reverse=2) as server, Producer(server.endpoint, **FAST) as producer:
        replies = list(producer.submit_many(jobs))
    assert sorted(r.id for r in replies) == ["job-1", "job-1", "job-2"]
    assert server.seen == {"job-1": 1, "job-2": 1}


def test_bad_endpoint_and_bad_ids_fail_at_once():
    with pytest.raises(SalvoError, match="cannot connect to 'nonsense://x'"):
        Producer("nonsense://x")
    with Server() as server, Producer(server.endpoint, **FAST) as producer:
        with pytest.raises(InvalidJob, match="id: must be a non-empty string"):
            producer.submit(make_job(1, id=""))
        with pytest.raises(TypeError):
            producer.submit(["not", "a", "job"])
    assert not server.seen


def test_cli_progress_is_on_the_terminal_and_quiet_when_piped(tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps(make_job(n)) + "\n" for n in range(200)))
    args = [sys.executable, "-m", "salvo", "submit", "--jobs", str(jobs)]
    with Server() as server:
        tty = run_on_terminal([*args, "--endpoint", server.endpoint], timeout=HANG_GUARD)
        piped = _salvo("--endpoint", server.endpoint, "--jobs", str(jobs))
    assert tty.returncode == piped.returncode == 0, tty.terminal
    assert len(tty.stdout.splitlines()) == len(piped.stdout.splitlines()) == 200
    assert "jobs read" in tty.terminal and "100%" in tty.terminal
    assert "200 accepted" in tty.terminal
    assert piped.stderr == ""
