"""The spool: jobs and per-recipient delivery state in LMDB, crash-safe.

Synchronous and transaction-level: the node calls these methods from one writer thread
(see :mod:`salvo.actors.spool_writer`); every write method is one durable transaction.
Time is always passed in (``now``, seconds since the epoch). Layout, states and the
durability promise: docs/spool.md.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec

from salvo.core import host, kpis
from salvo.core import pauses as pz
from salvo.core import spool_crypto as sc
from salvo.core import spool_keys as sk
from salvo.core import spool_records as r
from salvo.core.address import bare_address, domain_of_mailbox, mailbox_key, parse_address
from salvo.core.bulk import BulkRules, job_problem
from salvo.core.errors import InvalidAddressError
from salvo.core.events import change_event, submit_events
from salvo.core.feedback.store import FeedbackStore
from salvo.core.outbox import Outbox
from salvo.core.protocol import MAX_ID_CHARS, Accepted, Job, Rejected, Reply
from salvo.core.spool_env import Store
from salvo.core.spool_records import (
    DEC_BODY,
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
from salvo.core.suppression import ERASED_TARGET, SuppressionStore
from salvo.core.templates import job_template
from salvo.core.warmup_store import WarmupStore
from salvo.core.webhooks import Subscriptions
from salvo.ext.errors import TemplateError

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
NO_BODY = (None, None, None, {}, None)  # JobRecord's subject, text, html, headers, raw
MID_POOL = 4096  # Message-IDs made from one call of the random source
# A Message-ID the spool makes is <RANDOM.SEQ.IDX@from-domain>: 96 random bits, and the
# recipient's key, so that a report quoting it finds the recipient without an index.
MID_HEX = 24
_OWN_MID = re.compile(r"<[0-9a-f]{24}\.([0-9a-f]{1,16})\.([0-9a-f]{1,8})@")
MISSING_VARIABLE = "missing-variable"  # a rejection's reason (docs/protocol.md)
TEMPLATE_ERROR = "template-error"  # likewise: the render would fail (a limit, a wrong type)
_UNRENDERABLE = (MISSING_VARIABLE, TEMPLATE_ERROR)
OUTCOME_STATES = frozenset(
    {r.QUEUED, r.DELIVERED, r.DEFERRED, r.BOUNCED, r.FAILED, r.EXPIRED, r.SUPPRESSED, r.CANCELLED}
)


class SpoolConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Policy knobs (seconds): retention after finishing, idempotency window, max age.

    A job without ``expires_in`` expires ``max_age_by_traffic[job.traffic]`` after its
    start (``send_after``, or acceptance when that is later), or ``max_age`` for a traffic
    class not in the mapping (the node's config does the same: an unknown class is
    ``default``).
    """

    retention: float = 3 * DAY
    idempotency_window: float = 7 * DAY
    max_age: float = 5 * DAY
    max_age_by_traffic: dict[str, float] = {}
    max_recipients: int = 10_000
    history: int = 8
    check_suppression: bool = True
    bulk: BulkRules | None = None  # the bulk-sender rules of the traffic classes
    template_limits: tuple[int, int] | None = None  # ([templates] max_loop_items, max_output)


class Submitted(msgspec.Struct, frozen=True, gc=False):
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
    source: str = ""  # the address the node connected from
    provider: str = ""  # the destination's provider (salvo.core.providers)


class RecoveryReport(msgspec.Struct, frozen=True):
    """What :meth:`Spool.recover` repaired."""

    stale_readers: int
    requeued: int
    due_added: int
    due_removed: int


class Spool:
    """Jobs and recipients in a :class:`Store`; see the module docstring.

    ``random_bytes(n)`` gives ``n`` random bytes, drawn for the Message-IDs of submitted
    recipients, data keys and nonces; a spool without it (opened only to read) refuses
    submissions.

    ``webhooks``: the configured webhooks' subscriptions. Every write that changes a
    recipient also queues, in the same transaction, the events the webhooks take
    (:mod:`salvo.core.outbox`); with none configured nothing is built or written.

    Encryption at rest (docs/spool.md): ``encrypt`` True or False asks for it, None keeps
    the data dir's recorded mode (a new data dir encrypts). ``master_key`` is the key, or a
    function that gives it, called only when the data dir encrypts. With neither, the
    spool only reads: an encrypted one then refuses to submit or claim
    (:class:`~salvo.core.spool_keys.MasterKeyError`).
    """

    def __init__(
        self,
        store: Store,
        config: SpoolConfig | None = None,
        *,
        random_bytes: Callable[[int], bytes] | None = None,
        webhooks: Subscriptions | None = None,
        master_key: bytes | Callable[[], bytes] | None = None,
        encrypt: bool | None = None,
    ) -> None:
        self.store = store
        self.config = config or SpoolConfig()
        self._random_bytes = random_bytes
        self.suppression = SuppressionStore(store)
        self.feedback = FeedbackStore(store)
        self.outbox = Outbox(store, webhooks, random_bytes)
        self.warmup = WarmupStore(store)
        self._db = store.dbs
        self.keys: sk.DataKeys | None = None
        self._sweep = True  # shreds made while no node ran are swept at the first claim
        if master_key is None and encrypt is None:
            self.encrypted = store.read(lambda txn: sk.recorded_mode(txn, self._db["meta"]))
        else:
            self.keys = self._open_keys(master_key, encrypt)
            self.encrypted = self.keys is not None
        # Told the bucket keys of every KPI increment written (the alerts actor: which
        # campaigns, tenants, ... to evaluate again); runs on the writer's thread.
        self.on_kpis: Callable[[list[bytes]], None] | None = None

    def _open_keys(
        self, master_key: bytes | Callable[[], bytes] | None, encrypt: bool | None
    ) -> sk.DataKeys | None:
        # A data dir whose mode and key are recorded needs no write (no fsync) to open.
        meta = self._db["meta"]
        recorded, known = self.store.read(
            lambda txn: (txn.get(b"encrypt", db=meta), txn.get(b"master_id", db=meta))
        )
        if recorded == b"0" and not encrypt:
            return None
        if recorded == b"1" and known is not None and encrypt is not False and master_key:
            key = master_key() if callable(master_key) else master_key
            keys = sk.DataKeys(self._db, key, self._random_bytes or _no_random)
            self.store.read(keys.check_in)
            return keys
        return self.store.write(lambda txn: self._keys_in(txn, master_key, encrypt))

    def _keys_in(
        self, txn: Any, master_key: bytes | Callable[[], bytes] | None, encrypt: bool | None
    ) -> sk.DataKeys | None:
        meta = self._db["meta"]
        new = txn.get(b"next_seq", db=meta) is None  # no job was ever written
        if not sk.resolve_mode(txn, meta, new, encrypt):
            return None
        if master_key is None:
            raise sk.MasterKeyError("this data dir is encrypted: give its spool master key")
        key = master_key() if callable(master_key) else master_key
        keys = sk.DataKeys(self._db, key, self._random_bytes or _no_random)
        keys.check_in(txn)
        return keys

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        config: SpoolConfig | None = None,
        *,
        random_bytes: Callable[[int], bytes] = host.random_bytes,
        webhooks: Subscriptions | None = None,
        master_key: bytes | Callable[[], bytes] | None = None,
        encrypt: bool | None = None,
        **store_kw: Any,
    ) -> Spool:
        """Open (or create) the store in ``data_dir`` and run :meth:`recover`; Message-IDs,
        data keys and nonces come from ``random_bytes`` (by default the operating
        system's). ``webhooks``, ``master_key`` and ``encrypt``: see the class."""
        store = Store(data_dir, **store_kw)
        try:
            spool = cls(
                store,
                config,
                random_bytes=random_bytes,
                webhooks=webhooks,
                master_key=master_key,
                encrypt=encrypt,
            )
        except BaseException:
            store.close()
            raise
        try:
            spool.recover()
        except BaseException:
            spool.close()
            raise
        return spool

    def _unlocked(self) -> sk.DataKeys | None:
        """The data keys (None for a spool in clear); refuses a locked encrypted one."""
        if self.encrypted and self.keys is None:
            raise sk.MasterKeyError(
                "this data dir is encrypted and was opened without its master key"
            )
        return self.keys

    def rotate_master(self, new_master_key: bytes) -> int:
        """Wrap every live data key under ``new_master_key`` in one durable transaction;
        returns how many. This spool keeps using the old key: reopen it with the new one."""
        keys = self._unlocked()
        if keys is None:
            raise sk.MasterKeyError("this data dir is not encrypted: it has no data keys")
        return self.store.write(lambda txn: keys.rewrap_in(txn, new_master_key))

    def shred(self, tenant: str, now: float) -> tuple[int, int]:
        """Destroy ``tenant``'s data keys (no master key needed): what they sealed can no
        longer be read. Returns (keys destroyed, recipients waiting under them). The node
        ends those recipients ``cancelled`` at its next claim (with events)."""
        if not self.encrypted:
            raise sk.MasterKeyError(
                "this data dir is not encrypted: there is no data key to shred "
                "(salvo cancel --tenant ends the tenant's queue)"
            )

        def fn(txn: Any) -> tuple[int, int]:
            destroyed = sk.shred_in(txn, self._db, tenant, now)
            waiting = 0
            for seq, _ in self._jobs_of_in(txn, "tenant", tenant):
                waiting += sum(rec.state in WAITING_STATES for _, rec in self._rcpts_in(txn, seq))
            return destroyed, waiting

        return self.store.write(fn)

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- submit ------------------------------------------------------------------------

    def submit_many(self, jobs: Sequence[Job], now: float) -> list[Submitted]:
        """Queue jobs in ONE durable transaction; a result per job, in order.

        A job id already known for its tenant returns the original reply (``duplicate``)
        and writes nothing. Invalid or suppressed recipients are rejected individually.
        Raises SpoolFullError (temporary) with nothing written.
        """
        if self._random_bytes is None:
            raise ValueError("this spool was opened to read: it has no Message-ID source")
        keys = self.keys
        if keys is None and not self.outbox.active:
            return self.store.write(lambda txn: self._submit_in(txn, jobs, now), submit=True)

        def fn(txn: Any) -> list[Submitted]:
            if keys is not None:
                keys.begin()  # forget keys made by an attempt that did not commit
            results = self._submit_in(txn, jobs, now)
            if self.outbox.active and (
                self.outbox.wants("accepted") or self.outbox.wants(r.SUPPRESSED)
            ):
                events = []
                for job, result in zip(jobs, results, strict=True):
                    if not result.duplicate:
                        events += submit_events(job, result.reply, now)
                self.outbox.add_in(txn, events)
            return results

        results = self.store.write(fn, submit=True)
        if keys is not None:
            keys.commit()
        return results

    def _submit_in(self, txn: Any, jobs: Sequence[Job], now: float) -> list[Submitted]:
        """Three passes over the batch: check and screen every job (parsing only), check
        all new recipients against the suppression list (one lookup per tenant), then
        queue, collecting the puts of the whole batch per sub-database (``putmulti``)."""
        db = self._db
        config = self.config
        idem_get = txn.get
        idem_db = db["idem"]
        results: list[Submitted | None] = [None] * len(jobs)
        pending = []  # (pos, job, ikey, keep, rejected, from_domain)
        firsts: dict[bytes, int] = {}  # idempotency key -> position of its job in this batch
        dups = []  # (position, position of the first job with that key)
        for pos, job in enumerate(jobs):
            problem, from_domain = _job_problem(job, config)
            if problem:
                results[pos] = Submitted(Reply(id=job.id, status="rejected", error=problem))
                continue
            ikey = f"{job.id}\0{job.tenant}".encode()  # r.idem_key
            if ikey in firsts:
                dups.append((pos, firsts[ikey]))
                continue
            known = idem_get(ikey, db=idem_db)
            if known is not None:
                results[pos] = self._replay_in(txn, r.seq_of(known))
                continue
            firsts[ikey] = pos
            try:
                keep, rejected = _screen(job, config.template_limits)
            except TemplateError as exc:  # no recipient could be rendered: nothing written
                results[pos] = Submitted(Reply(id=job.id, status="error", error=str(exc)))
                continue
            except Exception as exc:  # a renderer bug must not abort the batch's other jobs
                error = f"cannot screen the recipients: {type(exc).__name__}: {exc}"
                results[pos] = Submitted(Reply(id=job.id, status="error", error=error))
                continue
            if not keep and any(x.reason in _UNRENDERABLE for x in rejected):
                results[pos] = Submitted(_unrenderable(job.id, rejected))
                continue
            pending.append((pos, job, ikey, keep, rejected, from_domain))
        if config.check_suppression and pending:
            self._drop_suppressed(txn, pending, now)
        if pending:
            self._queue_in(txn, pending, results, now)
        for pos, first in dups:  # the same id twice in one batch: the first one's reply
            results[pos] = Submitted(results[first].reply, True)  # type: ignore[union-attr]
        return results  # type: ignore[return-value]

    def _drop_suppressed(self, txn: Any, pending: list, now: float) -> None:
        """Move suppressed recipients of ``pending`` jobs from keep to rejected."""
        by_tenant: dict[str, list[str]] = {}
        for _, job, _, keep, _, _ in pending:
            keys = by_tenant.setdefault(job.tenant, [])
            keys += [key for _, key, _ in keep]
        hit: dict[str, dict[str, Any]] = {}
        for tenant, keys in by_tenant.items():
            found = self.suppression.check_in(txn, keys, tenant, now)
            if any(found):
                hit[tenant] = {k: e for k, e in zip(keys, found, strict=True) if e is not None}
        if not hit:
            return
        for i, (pos, job, ikey, keep, rejected, from_domain) in enumerate(pending):
            bad = hit.get(job.tenant)
            if bad and any(item[1] in bad for item in keep):
                rejected += [
                    # An erased address: the producer is told, the spool keeps no trace.
                    Rejected(item[0].to, "suppressed", r.ERASED_TEXT)
                    if bad[item[1]].target == ERASED_TARGET
                    else Rejected(item[0].to, "suppressed")
                    for item in keep
                    if item[1] in bad
                ]
                keep = [item for item in keep if item[1] not in bad]
                pending[i] = (pos, job, ikey, keep, rejected, from_domain)

    def _queue_in(self, txn: Any, pending: list, results: list, now: float) -> None:
        """Write the records of ``pending`` jobs; their replies go to ``results``.

        Keys and values are gathered per sub-database in plain lists (bytes: nothing for
        the garbage collector to track) and written with one ``putmulti`` each.
        """
        db = self._db
        meta = db["meta"]
        next_seq = int(txn.get(b"next_seq", b"1", db=meta))
        keys = self._unlocked()
        if keys is not None and keys.sync_in(txn):
            self._sweep = True
        seal = sc.seal
        vars_ad, job_ad = sc.vars_ad, sc.job_ad
        max_age = self.config.max_age
        max_age_of = self.config.max_age_by_traffic.get
        encode = ENC.encode
        pack_rcpt = r.RCPT.pack
        pack_due = r.TIME_RCPT.pack
        pack_seq = r.SEQ.pack
        pack_time_seq = r.TIME_SEQ.pack
        pack_u32 = r.U32.pack
        queued = r.QUEUED
        rkeys, rvals, vvals, dkeys, okeys = [], [], [], [], []
        jkeys, jvals, tkeys, lvals, ekeys, pkeys, ikeys = [], [], [], [], [], [], []
        n_ids = sum(len(p[3]) for p in pending)
        random_bytes = self._random_bytes
        hexes = random_bytes(MID_HEX // 2 * min(n_ids, MID_POOL)).hex()
        used = 0
        if keys is not None:  # a nonce per recipient and per job, drawn at once
            nonces = random_bytes(sc.NONCE_BYTES * (n_ids + len(pending)))
            nonce_at = 0
        for pos, job, ikey, keep, rejected, from_domain in pending:
            seq = next_seq
            next_seq += 1
            skey = pack_seq(seq)
            send_after = job.not_before()
            start = now if send_after is None or send_after < now else send_after
            lifetime = job.expires_in
            if lifetime is None:
                lifetime = max_age_of(job.traffic, max_age)
            expires_at = start + lifetime
            start_ms = r.ms(start)
            accepted = []
            if keys is not None and keep:
                generation, cipher = keys.current_in(txn, job.tenant, now)
            for idx, (rcpt, key, domain) in enumerate(keep):
                mid = rcpt.message_id
                if mid is None:
                    if used == len(hexes):
                        hexes = random_bytes(MID_HEX // 2 * min(n_ids, MID_POOL)).hex()
                        used = 0
                    mid = f"<{hexes[used : used + MID_HEX]}.{seq:x}.{idx:x}@{from_domain}>"
                    used += MID_HEX
                rkey = pack_rcpt(seq, idx)
                rkeys.append(rkey)
                # RcptRecord(to, key, message_id, QUEUED, 0, start, expires_at) as a tuple:
                # an array_like Struct and a tuple encode to the same msgpack array.
                rvals.append(encode((rcpt.to, key, mid, queued, 0, start, expires_at, None, ())))
                if keys is None:
                    vvals.append(encode(rcpt.vars))
                else:
                    nonce = nonces[nonce_at : nonce_at + sc.NONCE_BYTES]
                    nonce_at += sc.NONCE_BYTES
                    plain = encode(rcpt.vars)
                    vvals.append(seal(cipher, generation, nonce, plain, vars_ad(seq, idx)))
                dkeys.append(pack_due(start_ms, seq, idx))
                okeys.append(f"{domain}\0".encode() + rkey)
                accepted.append(Accepted(rcpt.to, mid))
            n_ids -= len(keep)
            status = ("partial" if rejected else "accepted") if keep else "rejected"
            campaign = job.campaign or ""
            body = (job.subject, job.text, job.html, job.headers, job.raw) if keep else NO_BODY
            sealed = None
            if keys is not None and keep:
                nonce = nonces[nonce_at : nonce_at + sc.NONCE_BYTES]
                nonce_at += sc.NONCE_BYTES
                sealed = seal(cipher, generation, nonce, encode(body), job_ad(seq))
                body = NO_BODY
            jkeys.append(skey)
            jvals.append(
                encode(
                    (  # JobRecord, field by field
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
                        [_stored(x) for x in rejected] if rejected else rejected,
                        None,
                        None if keep else now,
                        *body,
                        sealed,
                    )
                )
            )
            tkeys.append(f"{job.tenant}\0{campaign}\0".encode() + skey)
            if keep:
                lvals.append(pack_u32(len(keep)))
                ekeys.append(pack_time_seq(r.ms(expires_at), seq))
            else:
                lvals.append(None)
                pkeys.append(pack_time_seq(r.ms(self._purge_at(now, now)), seq))
            ikeys.append(ikey)
            results[pos] = Submitted(
                Reply(id=job.id, status=status, accepted=accepted, rejected=rejected)
            )
        if None in lvals:
            lkeys = [k for k, v in zip(jkeys, lvals, strict=True) if v is not None]
            lvals = [v for v in lvals if v is not None]
        else:
            lkeys = jkeys
        # Keys of these three start with the new job numbers, above every key stored:
        # appending fills pages (a 2 KB value and its neighbour share a page) and writes
        # about half the bytes of a B-tree insert. Should a key not be above the last one
        # (it cannot, next_seq only grows), LMDB refuses it and a plain put follows.
        # Not for ``rcpts``: its records grow with each attempt, and half-full pages take
        # that growth without splitting.
        for name, keys, values in (
            ("vars", rkeys, vvals),
            ("jobs", jkeys, jvals),
            ("left", lkeys, lvals),
        ):
            if keys:
                cursor = txn.cursor(db=db[name])
                if cursor.putmulti(zip(keys, values, strict=True), append=True)[1] != len(keys):
                    cursor.putmulti(zip(keys, values, strict=True))
        empty = itertools.repeat(b"")
        for name, keys, values in (
            ("rcpts", rkeys, rvals),
            ("due", dkeys, empty),
            ("dom", okeys, empty),
            ("tc", tkeys, empty),
            ("exp", ekeys, empty),
            ("purge", pkeys, empty),
            ("idem", ikeys, jkeys),
        ):
            if keys:
                txn.cursor(db=db[name]).putmulti(zip(keys, values, strict=False))
        txn.put(b"next_seq", str(next_seq).encode(), db=meta)

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
        claim = self.store.write(lambda txn: self._claim_in(txn, now, limit, with_bodies))
        self._sweep = False
        return claim

    def _claim_in(self, txn: Any, now: float, limit: int, with_bodies: bool) -> Claim:
        db = self._db
        now_ms = r.ms(now)
        keys = self._unlocked()
        swept: list[Change] = []
        if keys is not None:
            if keys.sync_in(txn):
                self._sweep = True
            if self._sweep:  # before the due index is read: these are final now
                swept = self._sweep_in(txn, now)  # claim_due clears _sweep after the commit
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
        finished: list[Change] = swept
        suppressed = self._suppressed_in(txn, candidates, heads, now)
        ready = []
        for (seq, idx, rec), entry in zip(candidates, suppressed, strict=True):
            if now >= rec.expires_at:
                att = Attempt(now, r.EXPIRED, text="expired before delivery")
                finished.append(self._finish_in(txn, seq, idx, rec, att, now, was_due=False))
            elif entry is not None:
                att = Attempt(now, r.SUPPRESSED, text=f"suppressed: {entry.reason}")
                finished.append(self._finish_in(txn, seq, idx, rec, att, now, was_due=False))
            else:
                ready.append((seq, idx, rec))
        jobs: dict[int, JobRecord] = {}
        unreadable: dict[int, Attempt] = {}  # seq -> why its content cannot be opened
        if with_bodies:
            for seq in {seq for seq, _, _ in ready}:
                job = DEC_JOB.decode(txn.get(r.seq_key(seq), db=db["jobs"]))
                if job.sealed is not None:
                    job, why = self._open_job(txn, keys, seq, job, now)
                    if why is not None:
                        unreadable[seq] = why
                        continue
                jobs[seq] = job
        claimed = []
        for seq, idx, rec in ready:
            rkey = r.rcpt_key(seq, idx)
            head = heads[seq]
            variables = txn.get(rkey, b"\x80", db=db["vars"])  # \x80: {}
            why = unreadable.get(seq)
            if why is None and sc.is_sealed(variables):
                variables, why = self._open_vars(txn, keys, head.tenant, seq, idx, variables, now)
            if why is not None:
                finished.append(self._finish_in(txn, seq, idx, rec, why, now, was_due=False))
                continue
            rec = msgspec.structs.replace(rec, state=r.IN_FLIGHT)
            txn.put(rkey, ENC.encode(rec), db=db["rcpts"])
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
                    variables,
                )
            )
        if finished and self.outbox.active:
            self.outbox_changes_in(txn, finished, now)
        return Claim(claimed, jobs, finished)

    def _open_job(
        self, txn: Any, keys: sk.DataKeys | None, seq: int, job: JobRecord, now: float
    ) -> tuple[JobRecord, Attempt | None]:
        """A job with its sealed content opened, or why it cannot be (the final attempt
        of its recipients: cancelled when its key was shredded, else failed)."""
        sealed = job.sealed
        assert keys is not None and sealed is not None
        try:
            cipher = keys.cipher_in(txn, job.tenant, sc.generation_of(sealed))
            if cipher is None:
                return job, _shredded(now)
            body = DEC_BODY.decode(sc.open_sealed(cipher, sealed, sc.job_ad(seq)))
        except (sc.SealError, msgspec.DecodeError) as exc:
            return job, Attempt(now, r.FAILED, text=f"cannot read the job's content: {exc}")
        subject, text, html, headers, raw = body
        opened = msgspec.structs.replace(
            job, subject=subject, text=text, html=html, headers=headers, raw=raw, sealed=None
        )
        return opened, None

    def _open_vars(
        self,
        txn: Any,
        keys: sk.DataKeys | None,
        tenant: str,
        seq: int,
        idx: int,
        sealed: bytes,
        now: float,
    ) -> tuple[bytes, Attempt | None]:
        """A recipient's variables opened (msgpack), or why they cannot be."""
        if keys is None:
            why = "sealed variables in a data dir in clear"
            return b"", Attempt(now, r.FAILED, text=f"cannot read the variables: {why}")
        try:
            cipher = keys.cipher_in(txn, tenant, sc.generation_of(sealed))
            if cipher is None:
                return b"", _shredded(now)
            return sc.open_sealed(cipher, sealed, sc.vars_ad(seq, idx)), None
        except sc.SealError as exc:
            return b"", Attempt(now, r.FAILED, text=f"cannot read the variables: {exc}")

    def _sweep_in(self, txn: Any, now: float) -> list[Change]:
        """End ``cancelled`` every waiting recipient of a shredded tenant's key (or, for a
        job written in clear, submitted before the shred); mark the shreds swept."""
        changes: list[Change] = []
        for tenant, (when, generations) in sk.unswept_in(txn, self._db).items():
            for seq, head in self._jobs_of_in(txn, "tenant", tenant):
                sealed = DEC_JOB.decode(txn.get(r.seq_key(seq), db=self._db["jobs"])).sealed
                if sealed is None and head.submitted > when:
                    continue
                if sealed is not None and sc.generation_of(sealed) not in generations:
                    continue
                for idx, rec in self._rcpts_in(txn, seq):
                    if rec.state in WAITING_STATES:
                        changes.append(
                            self._finish_in(txn, seq, idx, rec, _shredded(now), now, True)
                        )
            sk.mark_swept_in(txn, self._db, tenant)
        return changes

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

    def record_outcomes(
        self,
        outcomes: Iterable[Outcome],
        now: float,
        then: Callable[[Any, list[Change]], None] | None = None,
    ) -> list[Change]:
        """Write delivery outcomes in one durable transaction; return the changes made.

        A final state is never changed again (late or repeated outcomes are ignored). A
        deferral past the recipient's expiry becomes ``expired``. ``then(txn, changes)``
        runs in the same transaction after them (the KPI buckets that count them).
        """
        outcomes = list(outcomes)
        for o in outcomes:
            if o.state not in OUTCOME_STATES:
                raise ValueError(f"unknown outcome state {o.state!r}")
            if o.state == r.DEFERRED and o.next_attempt is None:
                raise ValueError("a deferred outcome needs next_attempt")
        if then is None and not self.outbox.active:
            return self.store.write(lambda txn: self._record_in(txn, outcomes, now))

        def fn(txn: Any) -> list[Change]:
            changes = self._record_in(txn, outcomes, now)
            if then is not None:
                then(txn, changes)
            if self.outbox.active:
                sources = {(o.seq, o.idx): o.source for o in outcomes if o.source}
                self.outbox_changes_in(txn, changes, now, sources)
            return changes

        return self.store.write(fn)

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
            att = Attempt(now, o.state, o.code, o.enhanced, o.text, o.host, o.source, o.provider)
            was_due = rec.state in WAITING_STATES
            if o.state in (r.DEFERRED, r.QUEUED):
                nxt = o.next_attempt if o.next_attempt is not None else now
                if nxt >= rec.expires_at:
                    att = Attempt(
                        now, r.EXPIRED, o.code, o.enhanced, o.text, o.host, o.source, o.provider
                    )
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
        if changes and self.outbox.active:
            self.outbox_changes_in(txn, changes, now)
        return changes

    # ---- operator pauses and cancels (salvo.core.pauses) ---------------------------------

    def pause_entries(self) -> list[pz.Pause]:
        """Every stored pause and cancel."""

        def fn(txn: Any) -> list[pz.Pause]:
            return [pz.DEC.decode(v) for _, v in txn.cursor(db=self._db["pause"])]

        return self.store.read(fn)

    def set_pause(self, entry: pz.Pause) -> None:
        """Store a pause (replacing one of the same scope and name), durably."""
        key = pz.pause_key(entry.kind, entry.scope, entry.name)
        self.store.write(lambda txn: txn.put(key, pz.ENC.encode(entry), db=self._db["pause"]))

    def clear_pause(self, scope: str, name: str) -> bool:
        """Drop a pause; False when there was none."""
        key = pz.pause_key(pz.PAUSE, scope, name)
        return self.store.write(lambda txn: txn.delete(key, db=self._db["pause"]))

    def _jobs_of_in(self, txn: Any, scope: str, name: str) -> list[tuple[int, JobHead]]:
        """The unfinished jobs of a tenant or a campaign (by name, in every tenant)."""
        cur = txn.cursor(db=self._db["tc"])
        seqs = []
        if scope == "tenant":
            prefix = f"{name}\0".encode()
            if cur.set_range(prefix):
                for key in cur.iternext(values=False):
                    if not key.startswith(prefix):
                        break
                    seqs.append(r.seq_of(key[-8:]))
        else:
            needle = f"\0{name}\0".encode()
            seqs = [r.seq_of(k[-8:]) for k in cur.iternext(values=False) if k[:-8].endswith(needle)]
        out = []
        for seq in seqs:
            skey = r.seq_key(seq)
            if txn.get(skey, db=self._db["left"]) is None:
                continue  # finished
            out.append((seq, DEC_HEAD.decode(txn.get(skey, db=self._db["jobs"]))))
        return out

    def cancel(self, entry: pz.Pause, now: float) -> list[Change]:
        """Store a cancel and end every waiting recipient of its campaign or tenant
        ``cancelled`` (in-flight ones finish their attempt; the scheduler cancels them when
        they come back to the queue). One durable transaction."""

        def fn(txn: Any) -> list[Change]:
            key = pz.pause_key(pz.CANCEL, entry.scope, entry.name)
            txn.put(key, pz.ENC.encode(entry), db=self._db["pause"])
            changes = []
            for seq, head in self._jobs_of_in(txn, entry.scope, entry.name):
                if head.submitted > entry.when:
                    continue
                for idx, rec in self._rcpts_in(txn, seq):
                    if rec.state in WAITING_STATES:
                        att = Attempt(
                            now, r.CANCELLED, text=f"cancelled: {entry.scope} {entry.name}"
                        )
                        changes.append(self._finish_in(txn, seq, idx, rec, att, now, True))
            if changes and self.outbox.active:
                self.outbox_changes_in(txn, changes, now)
            return changes

        return self.store.write(fn)

    def make_due(
        self,
        scope: str,
        name: str,
        now: float,
        window: Callable[[int], float],
        rng: Any,
    ) -> int:
        """After a resume: the waiting recipients that a pause of ``scope`` ``name`` held
        back (their last entry says so) are due again, spread over ``window(n)`` seconds
        from ``now`` with ``rng``. Returns how many."""
        text = f"paused by the operator: {scope} {name}"

        def fn(txn: Any) -> int:
            db = self._db
            found = []
            if scope in ("tenant", "campaign"):
                for seq, _ in self._jobs_of_in(txn, scope, name):
                    for idx, rec in self._rcpts_in(txn, seq):
                        if rec.state in WAITING_STATES and rec.last and rec.last.text == text:
                            found.append((seq, idx, rec))
            else:
                start = r.due_key(now, 0, 0)
                cur = txn.cursor(db=db["due"])
                if cur.set_range(start):
                    for key in cur.iternext(values=False):
                        _, seq, idx = r.due_of(key)
                        rec = DEC_RCPT.decode(txn.get(r.rcpt_key(seq, idx), db=db["rcpts"]))
                        if rec.state in WAITING_STATES and rec.last and rec.last.text == text:
                            found.append((seq, idx, rec))
            spread = window(len(found))
            for seq, idx, rec in found:
                when = now + rng.uniform(0.0, spread)
                if when >= rec.next_attempt:
                    continue
                txn.delete(r.due_key(rec.next_attempt, seq, idx), db=db["due"])
                rec = msgspec.structs.replace(rec, next_attempt=when)
                txn.put(r.rcpt_key(seq, idx), ENC.encode(rec), db=db["rcpts"])
                txn.put(r.due_key(when, seq, idx), b"", db=db["due"])
            return len(found)

        return self.store.write(fn)

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
        self.purge_kpis_in(txn, now - kpis.RETENTION, limit)
        return len(keys)

    # ---- webhook events (salvo.core.outbox) ------------------------------------------------

    def add_webhook_events_in(self, txn: Any, events: Iterable[Any]) -> int:
        """Queue events (salvo.core.events.Event, or any event with ``type``, ``ts`` and
        ``tenant``) for the webhooks that take them, inside the writer's transaction that
        made them true; nothing when no webhook is configured. Returns the puts made."""
        if not self.outbox.active:
            return 0
        return self.outbox.add_in(txn, events)

    def add_webhook_events(self, events: Iterable[Any]) -> int:
        """:meth:`add_webhook_events_in` in a durable transaction of its own (an event
        that reports no spool change, such as an alert)."""
        if not self.outbox.active:
            return 0
        events = list(events)
        return self.store.write(lambda txn: self.outbox.add_in(txn, events))

    def outbox_changes_in(
        self, txn: Any, changes: Sequence[Change], now: float, sources: dict | None = None
    ) -> None:
        """Queue the events of recorded changes that some webhook takes: the same events
        the scheduler publishes (salvo.core.events.change_event), built from the job's
        head in this transaction; ``sources``: (seq, idx) -> the attempt's source."""
        wanted = self.outbox.subscriptions.types
        picked = [c for c in changes if c.record.state in wanted]
        if not picked:
            return
        heads: dict[int, JobHead | None] = {}
        jobs = self._db["jobs"]
        events = []
        for c in picked:
            if c.seq not in heads:
                raw = txn.get(r.seq_key(c.seq), db=jobs)
                heads[c.seq] = DEC_HEAD.decode(raw) if raw is not None else None
            source = sources.get((c.seq, c.idx), "") if sources else ""
            events.append(change_event(c, heads[c.seq], now, "", source))
        self.outbox.add_in(txn, events)

    # ---- KPI buckets (salvo.core.kpis) ---------------------------------------------------

    def add_kpis_in(self, txn: Any, delta: kpis.Delta) -> None:
        """Add per-minute counter increments (one read and one write per bucket)."""
        db = self._db["kpi"]
        get, put = txn.get, txn.put
        for key, counts in delta.items():
            old = get(key, db=db)
            if old is not None:
                counts = kpis.merge(kpis.decode_counts(old), counts)
            put(key, kpis.encode_counts(counts), db=db)
        if self.on_kpis is not None and delta:
            self.on_kpis(list(delta))

    def kpi_counts(self, dim: bytes, minutes: range) -> dict[str, int]:
        """The merged counters of one dimension over ``minutes`` (one read transaction,
        one point read per minute)."""

        def fn(txn: Any) -> dict[str, int]:
            db = self._db["kpi"]
            parts = []
            for minute in minutes:
                raw = txn.get(kpis.bucket_key(minute, dim), db=db)
                if raw is not None:
                    parts.append(kpis.decode_counts(raw))
            return kpis.merge(*parts)

        return self.store.read(fn)

    def kpi_series(self, dim: bytes, minutes: range) -> dict[int, dict[str, int]]:
        """The counters of one dimension minute by minute (one read transaction)."""

        def fn(txn: Any) -> dict[int, dict[str, int]]:
            db = self._db["kpi"]
            out = {}
            for minute in minutes:
                raw = txn.get(kpis.bucket_key(minute, dim), db=db)
                if raw is not None:
                    out[minute] = kpis.decode_counts(raw)
            return out

        return self.store.read(fn)

    def kpi_dimensions(
        self, minutes: range, *, max_dims: int = 20_000, max_buckets: int = 200_000
    ) -> tuple[dict[bytes, dict[str, int]], bool]:
        """Every dimension with a bucket in ``minutes`` and its merged counters, from one
        cursor range (keys are minute first); the bool is True when a cap cut it short:
        at most ``max_buckets`` buckets are read and ``max_dims`` dimensions kept."""

        def fn(txn: Any) -> tuple[dict[bytes, dict[str, int]], bool]:
            out: dict[bytes, dict[str, int]] = {}
            if not minutes:
                return out, False
            cur = txn.cursor(db=self._db["kpi"])
            if not cur.set_range(kpis.bucket_key(minutes[0], b"")):
                return out, False
            last = minutes[-1]
            for read, (key, raw) in enumerate(cur):
                if kpis.minute_of_key(key) > last:
                    return out, False
                if read >= max_buckets:
                    return out, True
                dim = key[4:]
                if dim in out:
                    out[dim] = kpis.merge(out[dim], kpis.decode_counts(raw))
                elif len(out) < max_dims:
                    out[dim] = kpis.decode_counts(raw)
                else:
                    return out, True
            return out, False

        return self.store.read(fn)

    def pending_by_domain(self, limit: int = 200_000) -> tuple[dict[str, int], bool]:
        """Recipients not yet final (waiting or in flight) per destination domain, from the
        keys of the per-domain index; at most ``limit`` keys are read (the bool: cut short)."""

        def fn(txn: Any) -> tuple[dict[str, int], bool]:
            out: dict[str, int] = {}
            for n, key in enumerate(txn.cursor(db=self._db["dom"]).iternext(values=False)):
                if n >= limit:
                    return out, True
                domain = bytes(key[:-_DOM_TAIL]).decode("utf-8", "replace")
                out[domain] = out.get(domain, 0) + 1
            return out, False

        return self.store.read(fn)

    def purge_kpis_in(self, txn: Any, before: float, limit: int = 10_000) -> int:
        """Delete up to ``limit`` buckets of minutes before ``before`` (seconds)."""
        end = kpis.minute_of(before)
        cur = txn.cursor(db=self._db["kpi"])
        deleted = 0
        if not cur.first():
            return 0
        while deleted < limit:
            key = cur.key()
            if len(key) < 4 or kpis.minute_of_key(key) >= end or not cur.delete():
                break
            deleted += 1
        return deleted

    def queue_gauges(self, now: float) -> tuple[int, int, float]:
        """(waiting, in flight, age in seconds of the oldest unfinished job) from entry
        counts and one record: no scan (docs/metrics.md)."""

        def fn(txn: Any) -> tuple[int, int, float]:
            db = self._db
            waiting = txn.stat(db["due"])["entries"]
            pending = txn.stat(db["dom"])["entries"]
            oldest = 0.0
            cur = txn.cursor(db=db["left"])
            if cur.first():
                raw = txn.get(cur.key(), db=db["jobs"])
                if raw is not None:
                    oldest = max(0.0, now - DEC_HEAD.decode(raw).submitted)
            return waiting, max(0, pending - waiting), oldest

        return self.store.read(fn)

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
        """The recipient with this Message-ID: at once for one the spool made (it names the
        recipient's key), else by a scan of the small records (a producer's own)."""
        return self.store.read(lambda txn: self.find_message_in(txn, message_id))

    def get_recipient_in(self, txn: Any, seq: int, idx: int) -> RcptRecord | None:
        """:meth:`get_recipient` inside a transaction."""
        raw = txn.get(r.rcpt_key(seq, idx), db=self._db["rcpts"])
        return None if raw is None else DEC_RCPT.decode(raw)

    def find_message_in(self, txn: Any, message_id: str) -> tuple[int, int, RcptRecord] | None:
        """:meth:`find_message` inside a transaction (the feedback loop's write)."""
        own = _OWN_MID.match(message_id)
        if own is not None:
            seq, idx = int(own.group(1), 16), int(own.group(2), 16)
            rec = self.get_recipient_in(txn, seq, idx)
            if rec is not None and rec.message_id == message_id:
                return seq, idx, rec
        needle = message_id.encode()
        for key, raw in txn.cursor(db=self._db["rcpts"]):
            if needle in raw and (rec := DEC_RCPT.decode(raw)).message_id == message_id:
                return (*r.rcpt_of(key), rec)
        return None

    def next_due(self) -> float | None:
        """When the earliest waiting recipient is due (seconds), or None."""

        def fn(txn: Any) -> float | None:
            cur = txn.cursor(db=self._db["due"])
            return r.due_of(cur.key())[0] / 1000 if cur.first() else None

        return self.store.read(fn)

    def summary(self, now: float) -> Summary:
        """Counts by state, tenant, campaign, destination domain and age (one read txn)."""
        return self.store.read(lambda txn: summarize(self.store, txn, now))


_DOM_TAIL = len(r.dom_key("", 0, 0))  # the NUL and the packed (seq, idx) after a domain
SHREDDED = "cancelled: the tenant's data key was shredded"


def _shredded(now: float) -> Attempt:
    return Attempt(now, r.CANCELLED, text=SHREDDED)


def _no_random(n: int) -> bytes:
    raise ValueError("this spool was opened to read: it has no random source")


# Senders repeat from job to job: parse each once (errors are not cached).
_sender = functools.lru_cache(maxsize=4096)(parse_address)
_from_domain = functools.lru_cache(maxsize=4096)(domain_of_mailbox)


def _job_problem(job: Job, config: SpoolConfig) -> tuple[str | None, str]:
    """Why a job cannot be queued at all (None when it can), and its From domain."""
    if len(job.id) > MAX_ID_CHARS or not job.id.isprintable():
        return f"id must be at most {MAX_ID_CHARS} printable characters", ""
    for name in ("tenant", "campaign", "traffic"):
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
            _sender(job.return_path)
        domain = _from_domain(job.from_)
    except InvalidAddressError as exc:
        return f"bad sender: {exc}", ""
    if config.bulk is not None:
        return job_problem(config.bulk, job, domain), domain
    return None, domain


def _screen(job: Job, limits: tuple[int, int] | None = None) -> tuple[list, list[Rejected]]:
    """Split a job's recipients into (recipient, lookup key, A-label domain) to queue and
    rejections (invalid address or Message-ID, the same address twice, variables that do
    not fill the template's placeholders); suppression is checked later, for the whole
    batch at once. ``to`` may be ``Name <addr>``: the bare address is what is checked (see
    :func:`salvo.core.address.mailbox_key`). A recipient whose variables would make the
    render fail otherwise (a loop or the output over its limit, a value of the wrong type
    where the template's statements or filters show it) is rejected as ``template-error``.
    Raises :class:`TemplateError` when the job's template does not compile (no recipient
    could be rendered)."""
    template = job_template(job, limits)
    check = template.check if template is not None and template.requires else None
    keep, rejected, seen = [], [], set()
    for rcpt in job.recipients:
        try:
            key, domain = mailbox_key(rcpt.to)
        except InvalidAddressError:
            rejected.append(Rejected(rcpt.to, "invalid-address"))
            continue
        if rcpt.message_id is not None and not _valid_message_id(rcpt.message_id):
            rejected.append(Rejected(rcpt.to, "invalid-message-id"))
        elif key in seen:
            rejected.append(Rejected(rcpt.to, "duplicate"))
        elif check is not None and (problem := _render_problem(check(rcpt.vars))):
            rejected.append(Rejected(rcpt.to, *problem))
        else:
            seen.add(key)
            keep.append((rcpt, key, domain))
    return keep, rejected


def _render_problem(checked: tuple[tuple[str, ...], str | None]) -> tuple[str, str] | None:
    """(reason, text) of a recipient whose render would fail, from ``template.check``."""
    names, error = checked
    if names:
        return MISSING_VARIABLE, _missing_text(names)
    if error is not None:
        return TEMPLATE_ERROR, error
    return None


def _stored(x: Rejected) -> Rejected:
    """A rejection as the job record keeps it: an erased address is not kept."""
    if x.text == r.ERASED_TEXT and x.reason == "suppressed":
        return Rejected(r.ERASED_ADDRESS, x.reason, x.text)
    return x


def _missing_text(names: tuple[str, ...]) -> str:
    if len(names) == 1:
        return f"missing variable {names[0]!r}"
    return "missing variables " + ", ".join(map(repr, names))


def _unrenderable(job_id: str, rejected: list[Rejected]) -> Reply:
    """The ``error`` reply to a job none of whose recipients could be rendered."""
    texts = list(dict.fromkeys(x.text for x in rejected if x.reason in _UNRENDERABLE))
    why = "; ".join(texts[:3]) + ("; ..." if len(texts) > 3 else "")
    return Reply(
        id=job_id,
        status="error",
        rejected=rejected,
        error=f"no recipient can be rendered: {why}",
    )


def _valid_message_id(value: str) -> bool:
    return (
        len(value) <= 250 and value.startswith("<") and value.endswith(">") and value.isprintable()
    ) and " " not in value
