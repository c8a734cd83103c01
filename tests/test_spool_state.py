"""The spool against a simple model, driven by hypothesis (every loop is bounded)."""

from __future__ import annotations

import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from salvo.core.protocol import Job, Recipient
from salvo.core.spool import Outcome, Spool, SpoolConfig
from salvo.core.spool_records import FINAL_STATES

CONFIG = SpoolConfig(retention=100, idempotency_window=200, max_age=500)


def make_job(job_id: str, n: int) -> Job:
    rcpts = [Recipient(to=f"User{i}@Dest{i % 2}.example", vars={"i": i}) for i in range(n)]
    return Job(id=job_id, from_="Acme <news@acme.example>", recipients=rcpts, text="hi")


class SpoolModel(RuleBasedStateMachine):
    KEY: bytes | None = None  # a master key: the same model on an encrypted spool

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="salvo-spool-")
        self.spool = Spool.open(self.dir, CONFIG, map_size=1 << 20, master_key=self.KEY)
        self.now = 1000
        self.counter = 0
        # id -> {"seq", "result", "submitted", "expires", "finished", "rcpts": [model rcpt]}
        self.jobs: dict[str, dict] = {}

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _rcpts(self):
        for job in self.jobs.values():
            for idx, rc in enumerate(job["rcpts"]):
                yield job, idx, rc

    def _finish(self, job: dict, rc: dict, state: str) -> None:
        rc["state"] = state
        if all(x["state"] in FINAL_STATES for x in job["rcpts"]):
            job["finished"] = self.now

    @rule(n=st.integers(1, 4))
    def submit(self, n: int) -> None:
        self.counter += 1
        job_id = f"job-{self.counter}"
        (res,) = self.spool.submit_many([make_job(job_id, n)], self.now)
        assert res.reply.status == "accepted" and not res.duplicate
        assert len(res.reply.accepted) == n
        (seq,) = self.spool.find_jobs(job_id)
        rcpts = [{"state": "queued", "next": self.now} for _ in range(n)]
        self.jobs[job_id] = dict(
            seq=seq, result=res, submitted=self.now, expires=self.now + 500, finished=None
        )
        self.jobs[job_id]["rcpts"] = rcpts

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def resubmit(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.jobs)))
        n = len(self.jobs[job_id]["rcpts"])
        (res,) = self.spool.submit_many([make_job(job_id, n + 1)], self.now)
        assert res.duplicate
        assert res.reply == self.jobs[job_id]["result"].reply

    @rule(limit=st.integers(1, 6))
    def claim(self, limit: int) -> None:
        due = sorted(
            (rc["next"], job["seq"], idx, rc)
            for job, idx, rc in self._rcpts()
            if rc["state"] in ("queued", "deferred") and rc["next"] <= self.now
        )[:limit]
        claim = self.spool.claim_due(self.now, limit)
        expected_claimed, expected_expired = set(), set()
        for _, seq, idx, rc in due:
            job = next(j for j in self.jobs.values() if j["seq"] == seq)
            if self.now >= job["expires"]:
                self._finish(job, rc, "expired")
                expected_expired.add((seq, idx))
            else:
                rc["state"] = "in-flight"
                expected_claimed.add((seq, idx))
        assert {(c.seq, c.idx) for c in claim.claimed} == expected_claimed
        assert {(c.seq, c.idx) for c in claim.finished} == expected_expired
        assert set(claim.jobs) == {seq for seq, _ in expected_claimed}

    @precondition(lambda self: any(rc["state"] == "in-flight" for _, _, rc in self._rcpts()))
    @rule(data=st.data(), kind=st.sampled_from(["delivered", "bounced", "deferred", "queued"]))
    def outcome(self, data: st.DataObject, kind: str) -> None:
        flying = [(j, i, rc) for j, i, rc in self._rcpts() if rc["state"] == "in-flight"]
        job, idx, rc = data.draw(st.sampled_from(flying))
        delay = data.draw(st.integers(0, 600)) if kind == "deferred" else 0
        nxt = self.now + delay
        outcome = Outcome(seq=job["seq"], idx=idx, state=kind, code=250, next_attempt=nxt)
        (change,) = self.spool.record_outcomes([outcome], self.now)
        if kind in ("deferred", "queued") and nxt >= job["expires"]:
            self._finish(job, rc, "expired")
        elif kind in ("deferred", "queued"):
            rc.update(state=kind, next=nxt)
        else:
            self._finish(job, rc, kind)
        assert change.record.state == rc["state"]
        # A final state never changes again.
        assert self.spool.record_outcomes([outcome], self.now) == [] or kind not in (
            "delivered",
            "bounced",
        )

    @rule(seconds=st.integers(1, 400))
    def advance(self, seconds: int) -> None:
        self.now += seconds

    @rule()
    def expire(self) -> None:
        self.spool.expire_due(self.now)
        for job, _, rc in self._rcpts():
            if rc["state"] in ("queued", "deferred") and job["expires"] <= self.now:
                self._finish(job, rc, "expired")

    @rule()
    def reopen(self) -> None:
        self.spool.close()
        self.spool = Spool.open(self.dir, CONFIG, map_size=1 << 20, master_key=self.KEY)
        for _, _, rc in self._rcpts():
            if rc["state"] == "in-flight":
                rc["state"] = "queued"

    @rule()
    def purge(self) -> None:
        self.spool.purge(self.now)
        gone = [
            job_id
            for job_id, job in self.jobs.items()
            if job["finished"] is not None
            and max(job["finished"] + 100, job["submitted"] + 200) <= self.now
        ]
        for job_id in gone:
            del self.jobs[job_id]
            assert self.spool.find_jobs(job_id) == []

    @invariant()
    def states_match(self) -> None:
        for job_id, job in self.jobs.items():
            assert self.spool.find_jobs(job_id) == [job["seq"]]
            got = [rec.state for _, rec in self.spool.recipients(job["seq"])]
            assert got == [rc["state"] for rc in job["rcpts"]], job_id
            record = self.spool.get_job(job["seq"])
            assert (record.finished is not None) == (job["finished"] is not None)
            content = record.text if self.KEY is None else record.sealed
            assert (content is None) == (job["finished"] is not None)  # shrunk when done
        summary = self.spool.summary(self.now)
        counts = {}
        for _, _, rc in self._rcpts():
            counts[rc["state"]] = counts.get(rc["state"], 0) + 1
        assert {k: v for k, v in summary.states.items() if v} == counts
        assert summary.jobs == len(self.jobs)


SpoolModel.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSpoolModel = SpoolModel.TestCase


class EncryptedSpoolModel(SpoolModel):
    KEY = bytes(range(32))


EncryptedSpoolModel.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEncryptedSpoolModel = EncryptedSpoolModel.TestCase
