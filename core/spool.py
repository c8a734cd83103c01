"""The spool: jobs and per-recipient delivery state in LMDB, crash-safe.

Synchronous and transaction-level: the node calls these methods from one writer thread
(see :mod:`salvo.actors.spool_writer`); every write method is one durable transaction.
Time is always passed in (``now``, seconds since the epoch). Layout, states and the
durability promise: docs/spool.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import msgspec

from salvo.core import spool_records as r
from salvo.core.address import bare_address, domain_of_mailbox, parse_address, parse_mailbox
from salvo.core.errors import InvalidAddressError
from salvo.core.protocol import Accepted, Job, Rejected, Reply
from salvo.core.spool_env import Store
from salvo.core.spool_records import (
    DEC_HEAD,
    DEC_JOB,
    DEC_RCPT,
    ENC,
    FINAL_STATES,
    WAITING_STATES,
    Attempt,
    JobHead,
    JobRecord,
    RcptRecord,
)
from salvo.core.spool_summary import Summary, summarize
from salvo.core.suppression import SuppressionStore

__all__ = [
    "Change",
    "Claim",
    "Claimed",
    "Outcome",
    "RecoveryReport",
    "Spool",
    "SpoolConfig",
    "Submitted",
]

DAY = 86400.0
OUTCOME_STATES = frozenset({r.QUEUED, r.DELIVERED, r.DEFERRED, r.BOUNCED, r.EXPIRED, r.SUPPRESSED})


class SpoolConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Policy knobs (seconds): retention after finishing, idempotency window, max age."""

    retention: float = 3 * DAY
    idempotency_window: float = 7 * DAY
    max_age: float = 5 * DAY
    max_recipients: int = 10_000
    history: int = 8
    check_suppression: bool = True


class Submitted(NamedTuple):
    """The result of one submission: the producer's reply, sent only after the commit.

    ``duplicate`` is True when the id was already known for its tenant: ``reply`` is then
    the original reply (rebuilt from the records) and nothing was written.
    """

    reply: Reply
    duplicate: bool = False


class Claimed(msgspec.Struct, frozen=True):
    """A recipient handed to delivery (now in-flight), with its variables (msgpack).

    ``to`` is the recipient as the producer gave it (``addr`` or ``Name <addr>``: the To
    header); ``rcpt`` the bare envelope address for RCPT TO (local part as given, A-label
    domain); ``domain`` that A-label domain.
    """

    seq: int
    idx: int
    job_id: str
    tenant: str
    to: str
    rcpt: str
    domain: str
    message_id: str
    attempts: int
    vars: bytes


class Change(msgspec.Struct, frozen=True):
    """A state change written by the spool (for events): the recipient after it."""

    seq: int
    idx: int
    record: RcptRecord


class Claim(msgspec.Struct, frozen=True):
    """What :meth:`Spool.claim_due` returns: claimed recipients, their jobs (bodies read
    once per job), and recipients finished instead of claimed (suppressed or expired)."""

    claimed: list[Claimed]
    jobs: dict[int, JobRecord]
    finished: list[Change]


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """The result of one delivery attempt, as delivery reports it.

    ``state``: delivered, deferred (``next_attempt`` required), bounced, expired,
    suppressed, or queued (handed back unattempted, e.g. at shutdown).
    """

    seq: int
    idx: int
    state: str
    code: int = 0
    enhanced: str = ""
    text: str = ""
    host: str = ""
    next_attempt: float | None = None


class RecoveryReport(msgspec.Struct, frozen=True):
    """What :meth:`Spool.recover` repaired."""

    stale_readers: int
    requeued: int
    due_added: int
    due_removed: int


class Spool:
    """Jobs and recipients in a :class:`Store`; see the module docstring."""

    def __init__(self, store: Store, config: SpoolConfig | None = None) -> None:
        self.store = store
        self.config = config or SpoolConfig()
        self.suppression = SuppressionStore(store)
        self._db = store.dbs

    @classmethod
    def open(
        cls, data_dir: str | os.PathLike[str], config: SpoolConfig | None = None, **store_kw: Any
    ) -> Spool:
        """Open (or create) the store in ``data_dir`` and run :meth:`recover`."""
        spool = cls(Store(data_dir, **store_kw), config)
        try:
            spool.recover()
        except BaseException:
            spool.close()
            raise
        return spool

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    # ---- submit ------------------------------------------------------------------------

    def submit_many(self, jobs: Sequence[Job], now: float) -> list[Submitted]:
        """Queue jobs in ONE durable transaction; a result per job, in order.

        A job id already known for its tenant returns the original reply (``duplicate``)
        and writes nothing. Invalid or suppressed recipients are rejected individually.
        Raises SpoolFullError (temporary) with nothing written.
        """
        return self.store.write(lambda txn: self._submit_in(txn, jobs, now), submit=True)

    def _submit_in(self, txn: Any, jobs: Sequence[Job], now: float) -> list[Submitted]:
        db = self._db
        next_seq = int(txn.get(b"next_seq", b"1", db=db["meta"]))
        results = []
        for job in jobs:
            problem, from_domain = _job_problem(job, self.config)
            if problem:
                results.append(Submitted(Reply(id=job.id, status="rejected", error=problem)))
                continue
            ikey = r.idem_key(job.id, job.tenant)
            known = txn.get(ikey, db=db["idem"])
            if known is not None:
                results.append(self._replay_in(txn, r.seq_of(known)))
                continue
            keep, rejected = self._screen(txn, job, now)
            seq, next_seq = next_seq, next_seq + 1
            results.append(self._queue_in(txn, seq, job, keep, rejected, from_domain, now))
            txn.put(ikey, r.seq_key(seq), db=db["idem"])
        txn.put(b"next_seq", str(next_seq).encode(), db=db["meta"])
        return results

    def _screen(self, txn: Any, job: Job, now: float) -> tuple[list, list[Rejected]]:
        """Split recipients into (recipient, address) to queue and rejections."""
        keep, rejected, seen = [], [], set()
        for rcpt in job.recipients:
            try:
                address = parse_mailbox(rcpt.to)
            except InvalidAddressError:
                rejected.append(Rejected(rcpt.to, "invalid-address"))
                continue
            if rcpt.message_id is not None and not _valid_message_id(rcpt.message_id):
                rejected.append(Rejected(rcpt.to, "invalid-message-id"))
            elif address.key in seen:
                rejected.append(Rejected(rcpt.to, "duplicate"))
            else:
                seen.add(address.key)
                keep.append((rcpt, address))
        if keep and self.config.check_suppression:
            keys = [a.key for _, a in keep]
            hits = self.suppression.check_in(txn, keys, job.tenant, now)
            if any(hits):
                rejected += [
                    Rejected(rc.to, "suppressed")
                    for (rc, _), h in zip(keep, hits, strict=True)
                    if h
                ]
                keep = [item for item, h in zip(keep, hits, strict=True) if not h]
        return keep, rejected

    def _queue_in(
        self,
        txn: Any,
        seq: int,
        job: Job,
        keep: list,
        rejected: list[Rejected],
        from_domain: str,
        now: float,
    ) -> Submitted:
        db = self._db
        put = txn.put
        send_after = job.not_before()
        start = max(now, send_after or 0.0)
        expires_at = now + (job.expires_in if job.expires_in is not None else self.config.max_age)
        accepted = []
        ids = os.urandom(16 * len(keep)).hex()
        for idx, (rcpt, address) in enumerate(keep):
            mid = rcpt.message_id or f"<{ids[32 * idx : 32 * idx + 32]}@{from_domain}>"
            rec = RcptRecord(rcpt.to, address.key, mid, r.QUEUED, 0, start, expires_at)
            rkey = r.rcpt_key(seq, idx)
            put(rkey, ENC.encode(rec), db=db["rcpts"])
            put(rkey, ENC.encode(rcpt.vars), db=db["vars"])
            put(r.due_key(start, seq, idx), b"", db=db["due"])
            put(r.dom_key(address.domain, seq, idx), b"", db=db["dom"])
            accepted.append(Accepted(rcpt.to, mid))
        status = "partial" if rejected else "accepted"
        if not keep:
            status = "rejected"
        campaign = job.campaign or ""
        record = JobRecord(
            job.id,
            job.tenant,
            campaign,
            job.traffic,
            job.from_,
            job.return_path or "",
            now,
            send_after,
            expires_at,
            len(keep),
            status,
            rejected,
            None,
            None if keep else now,
            *((job.subject, job.text, job.html, job.headers, job.raw) if keep else ()),
        )
        skey = r.seq_key(seq)
        put(skey, ENC.encode(record), db=db["jobs"])
        put(r.tc_key(job.tenant, campaign, seq), b"", db=db["tc"])
        if keep:
            put(skey, r.U32.pack(len(keep)), db=db["left"])
            put(r.time_seq_key(expires_at, seq), b"", db=db["exp"])
        else:
            put(r.time_seq_key(self._purge_at(now, now), seq), b"", db=db["purge"])
        return Submitted(Reply(id=job.id, status=status, accepted=accepted, rejected=rejected))

    def _replay_in(self, txn: Any, seq: int) -> Submitted:
        head = DEC_HEAD.decode(txn.get(r.seq_key(seq), db=self._db["jobs"]))
        accepted = [Accepted(rec.to, rec.message_id) for _, rec in self._rcpts_in(txn, seq)]
        reply = Reply(
            id=head.id,
            status=head.status,  # type: ignore[arg-type]
            accepted=accepted,
            rejected=head.rejected,
            error=head.error,
        )
        return Submitted(reply, duplicate=True)

    def _purge_at(self, submitted: float, finished: float) -> float:
        # The small record also carries the idempotency entry: keep it for the window.
        return max(finished + self.config.retention, submitted + self.config.idempotency_window)

    # ---- claim and outcomes ------------------------------------------------------------

    def claim_due(self, now: float, limit: int, *, with_bodies: bool = True) -> Claim:
        """Move up to ``limit`` due recipients (oldest first) to in-flight, durably.

        Recipients found suppressed or past expiry are finished instead (``finished``).
        Job bodies are read once per job, and only with ``with_bodies``.
        """
        return self.store.write(lambda txn: self._claim_in(txn, now, limit, with_bodies))

    def _claim_in(self, txn: Any, now: float, limit: int, with_bodies: bool) -> Claim:
        db = self._db
        now_ms = r.ms(now)
        due = []
        for key in txn.cursor(db=db["due"]).iternext(values=False):
            t, seq, idx = r.due_of(key)
            if t > now_ms or len(due) >= limit:
                break
            due.append((key, seq, idx))
        heads: dict[int, JobHead] = {}
        candidates = []
        for key, seq, idx in due:
            txn.delete(key, db=db["due"])
            raw = txn.get(r.rcpt_key(seq, idx), db=db["rcpts"])
            rec = DEC_RCPT.decode(raw) if raw is not None else None
            if rec is None or rec.state not in WAITING_STATES:
                continue  # a stale index entry: the recipient moved on
            if seq not in heads:
                heads[seq] = DEC_HEAD.decode(txn.get(r.seq_key(seq), db=db["jobs"]))
            candidates.append((seq, idx, rec))
        finished: list[Change] = []
        suppressed = self._suppressed_in(txn, candidates, heads, now)
        claimed = []
        for (seq, idx, rec), entry in zip(candidates, suppressed, strict=True):
            if now >= rec.expires_at:
                att = Attempt(now, r.EXPIRED, text="expired before delivery")
                finished.append(self._finish_in(txn, seq, idx, rec, att, now, was_due=False))
            elif entry is not None:
                att = Attempt(now, r.SUPPRESSED, text=f"suppressed: {entry.reason}")
                finished.append(self._finish_in(txn, seq, idx, rec, att, now, was_due=False))
            else:
                rkey = r.rcpt_key(seq, idx)
                rec = msgspec.structs.replace(rec, state=r.IN_FLIGHT)
                txn.put(rkey, ENC.encode(rec), db=db["rcpts"])
                head = heads[seq]
                domain = rec.key[rec.key.rindex("@") + 1 :]
                claimed.append(
                    Claimed(
                        seq,
                        idx,
                        head.id,
                        head.tenant,
                        rec.to,
                        f"{bare_address(rec.to).rpartition('@')[0]}@{domain}",
                        domain,
                        rec.message_id,
                        rec.attempts,
                        txn.get(rkey, b"\x80", db=db["vars"]),  # \x80: {}
                    )
                )
        jobs = {}
        if with_bodies:
            for seq in {c.seq for c in claimed}:
                jobs[seq] = DEC_JOB.decode(txn.get(r.seq_key(seq), db=db["jobs"]))
        return Claim(claimed, jobs, finished)

    def _suppressed_in(self, txn: Any, candidates: list, heads: dict, now: float) -> list:
        if not self.config.check_suppression:
            return [None] * len(candidates)
        by_tenant: dict[str, list[int]] = {}
        for i, (seq, _, _) in enumerate(candidates):
            by_tenant.setdefault(heads[seq].tenant, []).append(i)
        out: list = [None] * len(candidates)
        for tenant, positions in by_tenant.items():
            keys = [candidates[i][2].key for i in positions]
            for i, hit in zip(
                positions, self.suppression.check_in(txn, keys, tenant, now), strict=True
            ):
                out[i] = hit
        return out

    def record_outcomes(self, outcomes: Iterable[Outcome], now: float) -> list[Change]:
        """Write delivery outcomes in one durable transaction; return the changes made.

        A final state is never changed again (late or repeated outcomes are ignored). A
        deferral past the recipient's expiry becomes ``expired``.
        """
        outcomes = list(outcomes)
        for o in outcomes:
            if o.state not in OUTCOME_STATES:
                raise ValueError(f"unknown outcome state {o.state!r}")
            if o.state == r.DEFERRED and o.next_attempt is None:
                raise ValueError("a deferred outcome needs next_attempt")
        return self.store.write(lambda txn: self._record_in(txn, outcomes, now))

    def _record_in(self, txn: Any, outcomes: list[Outcome], now: float) -> list[Change]:
        db = self._db
        changes = []
        for o in outcomes:
            rkey = r.rcpt_key(o.seq, o.idx)
            raw = txn.get(rkey, db=db["rcpts"])
            if raw is None:
                continue
            rec = DEC_RCPT.decode(raw)
            if rec.state in FINAL_STATES:
                continue
            tried = o.state in (r.DELIVERED, r.DEFERRED, r.BOUNCED)
            if tried:
                rec = msgspec.structs.replace(rec, attempts=rec.attempts + 1)
            att = Attempt(now, o.state, o.code, o.enhanced, o.text, o.host)
            was_due = rec.state in WAITING_STATES
            if o.state in (r.DEFERRED, r.QUEUED):
                nxt = o.next_attempt if o.next_attempt is not None else now
                if nxt >= rec.expires_at:
                    att = Attempt(now, r.EXPIRED, o.code, o.enhanced, o.text, o.host)
                    changes.append(self._finish_in(txn, o.seq, o.idx, rec, att, now, was_due))
                    continue
                if was_due:
                    txn.delete(r.due_key(rec.next_attempt, o.seq, o.idx), db=db["due"])
                rec = self._noted(rec, att, state=o.state, next_attempt=nxt)
                txn.put(rkey, ENC.encode(rec), db=db["rcpts"])
                txn.put(r.due_key(nxt, o.seq, o.idx), b"", db=db["due"])
                changes.append(Change(o.seq, o.idx, rec))
            else:
                changes.append(self._finish_in(txn, o.seq, o.idx, rec, att, now, was_due))
        return changes

    def _noted(self, rec: RcptRecord, att: Attempt, **fields: Any) -> RcptRecord:
        history = (*rec.history, att)[-self.config.history :]
        return msgspec.structs.replace(rec, last=att, history=history, **fields)

    def _finish_in(
        self,
        txn: Any,
        seq: int,
        idx: int,
        rec: RcptRecord,
        att: Attempt,
        now: float,
        was_due: bool,
    ) -> Change:
        """Write a final state; drop the recipient's variables and indexes; and when it
        was the job's last open recipient, shrink the job and schedule its purge."""
        db = self._db
        rkey = r.rcpt_key(seq, idx)
        if was_due:
            txn.delete(r.due_key(rec.next_attempt, seq, idx), db=db["due"])
        rec = self._noted(rec, att, state=att.state)
        txn.put(rkey, ENC.encode(rec), db=db["rcpts"])
        txn.delete(rkey, db=db["vars"])
        txn.delete(r.dom_key(rec.key[rec.key.rindex("@") + 1 :], seq, idx), db=db["dom"])
        skey = r.seq_key(seq)
        left = r.U32.unpack(txn.get(skey, db=db["left"]))[0] - 1
        if left:
            txn.put(skey, r.U32.pack(left), db=db["left"])
        else:
            txn.delete(skey, db=db["left"])
            job = DEC_HEAD.decode(txn.get(skey, db=db["jobs"]))
            small = JobRecord(*msgspec.structs.astuple(job)[:-1], finished=now)
            txn.put(skey, ENC.encode(small), db=db["jobs"])
            txn.delete(r.time_seq_key(job.expires_at, seq), db=db["exp"])
            purge_at = self._purge_at(job.submitted, now)
            txn.put(r.time_seq_key(purge_at, seq), b"", db=db["purge"])
        return Change(seq, idx, rec)

    def expire_due(self, now: float, limit: int = 1000) -> list[Change]:
        """Expire waiting recipients of up to ``limit`` jobs whose expiry has passed.

        In-flight recipients are left to their outcome (a deferral then expires them).
        """
        return self.store.write(lambda txn: self._expire_in(txn, now, limit))

    def _expire_in(self, txn: Any, now: float, limit: int) -> list[Change]:
        db = self._db
        end = r.ms(now)
        keys = []
        for key in txn.cursor(db=db["exp"]).iternext(values=False):
            if r.time_seq_of(key)[0] > end or len(keys) >= limit:
                break
            keys.append(key)
        changes = []
        for key in keys:
            seq = r.time_seq_of(key)[1]
            flying = False
            for idx, rec in self._rcpts_in(txn, seq):
                if rec.state in WAITING_STATES:
                    att = Attempt(now, r.EXPIRED, text="expired before delivery")
                    changes.append(self._finish_in(txn, seq, idx, rec, att, now, True))
                flying |= rec.state == r.IN_FLIGHT
            if not flying:  # else keep the entry: a crash may return them to queued
                txn.delete(key, db=db["exp"])
        return changes

    # ---- retention and recovery --------------------------------------------------------

    def purge(self, now: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` finished jobs whose retention has passed, and expired
        suppression entries; return the number of jobs deleted."""
        return self.store.write(lambda txn: self._purge_in(txn, now, limit))

    def _purge_in(self, txn: Any, now: float, limit: int) -> int:
        db = self._db
        end = r.ms(now)
        keys = []
        for key in txn.cursor(db=db["purge"]).iternext(values=False):
            if r.time_seq_of(key)[0] > end or len(keys) >= limit:
                break
            keys.append(key)
        for key in keys:
            seq = r.time_seq_of(key)[1]
            skey = r.seq_key(seq)
            raw = txn.get(skey, db=db["jobs"])
            if raw is not None:
                head = DEC_HEAD.decode(raw)
                txn.delete(r.idem_key(head.id, head.tenant), db=db["idem"])
                txn.delete(r.tc_key(head.tenant, head.campaign, seq), db=db["tc"])
                txn.delete(skey, db=db["jobs"])
            cur = txn.cursor(db=db["rcpts"])
            if cur.set_range(skey):
                while cur.key()[:8] == skey and cur.delete():
                    pass
            txn.delete(key, db=db["purge"])
        self.suppression.purge_expired_in(txn, now)
        return len(keys)

    def recover(self) -> RecoveryReport:
        """After a crash or restart: clear dead readers, return every in-flight recipient
        to queued, and make the due index match the recipients (bodies are not read)."""
        stale = self.store.reader_check()
        requeued, added, removed = self.store.write(self._recover_in)
        return RecoveryReport(stale, requeued, added, removed)

    def _recover_in(self, txn: Any) -> tuple[int, int, int]:
        db = self._db
        fixes = []
        for key, raw in txn.cursor(db=db["rcpts"]):
            rec = DEC_RCPT.decode(raw)
            if rec.state == r.IN_FLIGHT:
                fixes.append((key, msgspec.structs.replace(rec, state=r.QUEUED)))
            elif rec.state in WAITING_STATES:
                fixes.append((key, None))
        requeued = added = 0
        expected = set()
        for key, rec in fixes:
            seq, idx = r.rcpt_of(key)
            if rec is not None:
                txn.put(key, ENC.encode(rec), db=db["rcpts"])
                requeued += 1
            else:
                rec = DEC_RCPT.decode(txn.get(key, db=db["rcpts"]))
            dkey = r.due_key(rec.next_attempt, seq, idx)
            expected.add(dkey)
            added += txn.put(dkey, b"", db=db["due"], overwrite=False)
        stale = [k for k in txn.cursor(db=db["due"]).iternext(values=False) if k not in expected]
        for key in stale:
            txn.delete(key, db=db["due"])
        return requeued, added, len(stale)

    # ---- queries (read transactions) ---------------------------------------------------

    def _rcpts_in(self, txn: Any, seq: int) -> list[tuple[int, RcptRecord]]:
        prefix = r.seq_key(seq)
        cur = txn.cursor(db=self._db["rcpts"])
        out = []
        if cur.set_range(prefix):
            for key, raw in cur:
                if key[:8] != prefix:
                    break
                out.append((r.rcpt_of(key)[1], DEC_RCPT.decode(raw)))
        return out

    def find_jobs(self, job_id: str, tenant: str | None = None) -> list[int]:
        """Sequence numbers of jobs with this id (in every tenant unless one is given)."""
        if tenant is not None:
            key = r.idem_key(job_id, tenant)
            found = self.store.read(lambda txn: txn.get(key, db=self._db["idem"]))
            return [] if found is None else [r.seq_of(found)]
        prefix = f"{job_id}\0".encode()

        def fn(txn: Any) -> list[int]:
            cur = txn.cursor(db=self._db["idem"])
            out = []
            if cur.set_range(prefix):
                for key, val in cur:
                    if not key.startswith(prefix):
                        break
                    out.append(r.seq_of(val))
            return out

        return self.store.read(fn)

    def get_job(self, seq: int) -> JobRecord | None:
        """A job record by sequence number."""
        raw = self.store.read(lambda txn: txn.get(r.seq_key(seq), db=self._db["jobs"]))
        return None if raw is None else DEC_JOB.decode(raw)

    def recipients(self, seq: int) -> list[tuple[int, RcptRecord]]:
        """A job's recipients as ``(idx, record)``."""
        return self.store.read(lambda txn: self._rcpts_in(txn, seq))

    def get_recipient(self, seq: int, idx: int) -> RcptRecord | None:
        """One recipient's record."""
        key = r.rcpt_key(seq, idx)
        raw = self.store.read(lambda txn: txn.get(key, db=self._db["rcpts"]))
        return None if raw is None else DEC_RCPT.decode(raw)

    def find_message(self, message_id: str) -> tuple[int, int, RcptRecord] | None:
        """The recipient with this Message-ID (a full scan of the small records)."""

        def fn(txn: Any) -> tuple[int, int, RcptRecord] | None:
            needle = message_id.encode()
            for key, raw in txn.cursor(db=self._db["rcpts"]):
                if needle in raw and (rec := DEC_RCPT.decode(raw)).message_id == message_id:
                    return (*r.rcpt_of(key), rec)
            return None

        return self.store.read(fn)

    def next_due(self) -> float | None:
        """When the earliest waiting recipient is due (seconds), or None."""

        def fn(txn: Any) -> float | None:
            cur = txn.cursor(db=self._db["due"])
            return r.due_of(cur.key())[0] / 1000 if cur.first() else None

        return self.store.read(fn)

    def summary(self, now: float) -> Summary:
        """Counts by state, tenant, campaign, destination domain and age (one read txn)."""
        return self.store.read(lambda txn: summarize(self.store, txn, now))


def _job_problem(job: Job, config: SpoolConfig) -> tuple[str | None, str]:
    """Why a job cannot be queued at all (None when it can), and its From domain."""
    for name in ("id", "tenant", "campaign", "traffic"):
        value = getattr(job, name) or ""
        if len(value) > 200 or not value.isprintable():
            return f"{name} must be at most 200 printable characters", ""
    if not job.id:
        return "id is required", ""
    if not job.recipients:
        return "no recipients", ""
    if len(job.recipients) > config.max_recipients:
        return f"more than {config.max_recipients} recipients", ""
    if job.raw is not None and any((job.subject, job.text, job.html, job.headers)):
        return "raw excludes subject, text, html and headers", ""
    for name, value in job.headers.items():
        if any(c in name + value for c in "\r\n\0"):
            return f"header {name!r} contains CR, LF or NUL", ""
    try:
        if job.return_path:
            parse_address(job.return_path)
        return None, domain_of_mailbox(job.from_)
    except InvalidAddressError as exc:
        return f"bad sender: {exc}", ""


def _valid_message_id(value: str) -> bool:
    return (
        len(value) <= 250 and value.startswith("<") and value.endswith(">") and value.isprintable()
    ) and " " not in value
