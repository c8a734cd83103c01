"""Erasure of one address from the spool (docs/privacy.md, "Erasure").

An erasure finds every record that holds the address (read transactions, which never
block the node's writer), then rewrites them in short write transactions of at most
``BATCH`` records each, then replaces the address's suppression entries by one keyed hash
(:meth:`~salvo.core.suppression.SuppressionStore.put_hashed_in`) and records a request for
the event logs' scrub (sub-database ``erase``: the hash only, never the address), which
the node or ``salvo erase`` carries out (salvo.actors.log_scrub).

What happens to each place:

- a recipient not yet final ends ``cancelled`` (text ``erased``); every record of the
  address gets ``to`` and ``key`` = :data:`ERASED_ADDRESS`, the address in its history
  texts replaced by :data:`PLACEHOLDER` and a Message-ID that quotes it replaced;
- a job's rejected entries for it get :data:`ERASED_ADDRESS`;
- unprocessed feedback reports that quote it are deleted, soft-bounce entries too;
- webhook events waiting to be posted are rewritten (recipient and texts);
- the cluster's suppression outbox entries for it are dropped (never published).

Matching is by pattern (:func:`address_pattern`): the local part as given or casefolded,
any ASCII case, at the A-label or the Unicode domain, not inside a longer address.
"""

from __future__ import annotations

import contextlib
import re
import struct
from collections.abc import Callable
from typing import Any

import idna
import msgspec

from salvo.core import cluster_store
from salvo.core import spool_records as r
from salvo.core.address import Address, parse_mailbox
from salvo.core.events import Event
from salvo.core.protocol import Rejected
from salvo.core.spool_records import (
    DEC_HEAD,
    DEC_JOB,
    DEC_RCPT,
    ENC,
    ERASED_ADDRESS,
    ERASED_TEXT,
    Attempt,
    RcptRecord,
)
from salvo.core.suppression import SuppressionEntry, entry_key

__all__ = [
    "ERASED_ADDRESS",
    "PLACEHOLDER",
    "Eraser",
    "Found",
    "Report",
    "ScrubRequest",
    "address_pattern",
]

PLACEHOLDER = "[erased]"  # what replaces the address inside texts
BATCH = 500  # records per write transaction: keep the node's writer waiting briefly
_U64 = struct.Struct(">Q")
_ATEXT = rb"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"


def address_pattern(address: Address) -> re.Pattern[bytes]:
    """A bytes pattern for the address in any stored form (see the module docstring)."""
    locals_ = {address.local, address.local.casefold()}
    domains = {address.domain}
    if "xn--" in address.domain:
        with contextlib.suppress(idna.IDNAError, UnicodeError):
            domains.add(idna.decode(address.domain))
    local = b"|".join(re.escape(x.encode()) for x in sorted(locals_))
    domain = b"|".join(re.escape(x.encode()) for x in sorted(domains))
    source = rb"(?<![" + _ATEXT + rb".])(?:" + local + rb")@(?:" + domain + rb")(?!\.?[A-Za-z0-9-])"
    return re.compile(source, re.IGNORECASE)


class ScrubRequest(msgspec.Struct, frozen=True, array_like=True):
    """An erasure the event logs still have to be scrubbed of: the address's keyed hash
    (salvo.core.suppression.address_hash) and the tenant ("": every tenant)."""

    digest: bytes
    tenant: str
    requested: float


class Found(msgspec.Struct):
    """Where an address was found: keys per sub-database."""

    rcpts: list[bytes] = []
    jobs: list[bytes] = []
    fb_raw: list[bytes] = []
    fb_soft: list[bytes] = []
    wh_out: list[bytes] = []
    cluster: list[bytes] = []
    supp: list[bytes] = []

    def total(self) -> int:
        return sum(len(getattr(self, f)) for f in self.__struct_fields__)


class Report(msgspec.Struct, kw_only=True):
    """What an erasure found and did (``dry_run``: found only)."""

    address_found: dict[str, int] = {}  # sub-database -> records holding the address
    cancelled: int = 0  # recipients that were not final yet
    rewritten: int = 0  # records rewritten or deleted
    suppressed: bool = False  # the hashed entry is in place
    scrub_request: bytes = b""  # key of the event-log scrub request
    dry_run: bool = False


class Eraser:
    """Erase one address from a spool (:class:`salvo.core.spool.Spool`); ``tenant`` ""
    erases it from every tenant's data and suppresses it globally."""

    def __init__(self, spool: Any, address: str, *, tenant: str = "") -> None:
        self.spool = spool
        self.address = parse_mailbox(address)  # raises InvalidAddressError
        self.tenant = tenant
        self.pattern = address_pattern(self.address)
        self.text_pattern = re.compile(self.pattern.pattern.decode(), re.IGNORECASE)
        self._db = spool.store.dbs

    # ---- find (read transactions) -------------------------------------------------------

    def find(self) -> Found:
        """Every record that holds the address (one read transaction)."""
        return self.spool.store.read(self.find_in)

    def find_in(self, txn: Any) -> Found:
        db, search = self._db, self.pattern.search
        found = Found()
        tenants: dict[bytes, str] = {}

        def tenant_of(seq_key: bytes) -> str:
            if seq_key not in tenants:
                raw = txn.get(seq_key, db=db["jobs"])
                tenants[seq_key] = DEC_HEAD.decode(raw).tenant if raw is not None else ""
            return tenants[seq_key]

        for key, raw in txn.cursor(db=db["rcpts"]):
            if search(raw) and self._mine(tenant_of(bytes(key[:8]))):
                found.rcpts.append(bytes(key))
        for key, raw in txn.cursor(db=db["jobs"]):
            if search(raw) and self._job_holds_in(DEC_JOB.decode(raw)):
                found.jobs.append(bytes(key))
        for key, raw in txn.cursor(db=db["fb_raw"]):
            if search(raw):
                found.fb_raw.append(bytes(key))
        for key in txn.cursor(db=db["fb_soft"]).iternext(values=False):
            if search(key) and self._mine(bytes(key).split(b"\0", 1)[0].decode()):
                found.fb_soft.append(bytes(key))
        for key, raw in txn.cursor(db=db["wh_out"]):
            if search(raw, 8):
                found.wh_out.append(bytes(key))
        for key, raw in txn.cursor(db=db["cluster"]):
            if key.startswith(cluster_store.OUTBOX) and (search(key) or search(raw)):
                found.cluster.append(bytes(key))
        tail = b"\0a" + self.address.key.encode()
        for key in txn.cursor(db=db["supp"]).iternext(values=False):
            if key.endswith(tail) and self._mine(bytes(key[: -len(tail)]).decode()):
                found.supp.append(bytes(key))
        return found

    def _mine(self, tenant: str) -> bool:
        return not self.tenant or tenant == self.tenant

    def _job_holds_in(self, job: Any) -> bool:
        """Whether a job's erasable fields (its rejected recipients, its error) hold the
        address; its content is the tenant's template, not scanned."""
        if not self._mine(job.tenant):
            return False
        texts = [x.to for x in job.rejected] + [x.text for x in job.rejected]
        return any(self.text_pattern.search(t) for t in [*texts, job.error or ""])

    # ---- erase (short write transactions) ------------------------------------------------

    def apply_in(self, txn: Any, found: Found, now: float) -> tuple[int, int]:
        """Rewrite the records in ``found`` (at most :data:`BATCH` of them: see
        :meth:`batches`); returns (recipients cancelled, records rewritten)."""
        cancelled = rewritten = 0
        for key in found.rcpts:
            done = self._recipient_in(txn, key, now)
            cancelled += done == 2
            rewritten += done > 0
        for key in found.jobs:
            rewritten += self._job_in(txn, key)
        feedback = self.spool.feedback
        for key in found.fb_raw:
            rewritten += feedback.take_in(txn, _U64.unpack(key)[0]) is not None
        for key in found.fb_soft:
            rewritten += bool(txn.delete(key, db=self._db["fb_soft"]))
        for key in found.wh_out:
            rewritten += self._webhook_event_in(txn, key)
        for key in found.cluster:
            rewritten += bool(txn.delete(key, db=self._db["cluster"]))
        return cancelled, rewritten

    def batches(self, found: Found) -> list[Found]:
        """``found`` cut into parts of at most :data:`BATCH` keys."""
        out, part, size = [], Found(), 0
        for name in ("rcpts", "jobs", "fb_raw", "fb_soft", "wh_out", "cluster"):
            for key in getattr(found, name):
                getattr(part, name).append(key)
                size += 1
                if size >= BATCH:
                    out.append(part)
                    part, size = Found(), 0
        if size:
            out.append(part)
        return out

    def _recipient_in(self, txn: Any, key: bytes, now: float) -> int:
        """0: nothing to do (gone, or no longer holding it); 1: rewritten; 2: cancelled."""
        db = self._db
        raw = txn.get(key, db=db["rcpts"])
        if raw is None or not self.pattern.search(raw):
            return 0
        rec = DEC_RCPT.decode(raw)
        seq, idx = r.rcpt_of(key)
        cancelled = rec.state not in r.FINAL_STATES
        if cancelled:  # waiting or in flight: its outcome, if any, will be ignored
            att = Attempt(now, r.CANCELLED, text=ERASED_TEXT)
            change = self.spool._finish_in(
                txn, seq, idx, rec, att, now, rec.state in r.WAITING_STATES
            )
            rec = change.record
        txn.put(key, ENC.encode(self._scrub_record(rec)), db=db["rcpts"])
        return 2 if cancelled else 1

    def _scrub_record(self, rec: RcptRecord) -> RcptRecord:
        sub = self._sub
        mid = rec.message_id
        if self.text_pattern.search(mid):
            mid = f"<{ERASED_ADDRESS}>"
        history = tuple(self._scrub_attempt(a) for a in rec.history)
        last = self._scrub_attempt(rec.last) if rec.last is not None else None
        return msgspec.structs.replace(
            rec, to=ERASED_ADDRESS, key=ERASED_ADDRESS, message_id=sub(mid), last=last,
            history=history,
        )  # fmt: skip

    def _scrub_attempt(self, att: Attempt) -> Attempt:
        return msgspec.structs.replace(
            att, text=self._sub(att.text), enhanced=self._sub(att.enhanced)
        )

    def _sub(self, text: str) -> str:
        return self.text_pattern.sub(PLACEHOLDER, text) if "@" in text else text

    def _job_in(self, txn: Any, key: bytes) -> int:
        raw = txn.get(key, db=self._db["jobs"])
        if raw is None:
            return 0
        job = DEC_JOB.decode(raw)
        if not self._job_holds_in(job):
            return 0
        rejected = [
            Rejected(ERASED_ADDRESS, x.reason, self._sub(x.text))
            if self.text_pattern.search(x.to)
            else Rejected(x.to, x.reason, self._sub(x.text))
            for x in job.rejected
        ]
        error = self._sub(job.error) if job.error else job.error
        job = msgspec.structs.replace(job, rejected=rejected, error=error)
        txn.put(key, ENC.encode(job), db=self._db["jobs"])
        return 1

    def _webhook_event_in(self, txn: Any, key: bytes) -> int:
        raw = txn.get(key, db=self._db["wh_out"])
        if raw is None or not self.pattern.search(raw, 8):
            return 0
        event = msgspec.json.decode(bytes(raw[8:]))
        if isinstance(event, dict):
            for name, value in event.items():
                if isinstance(value, str):
                    if name == "recipient" and self.text_pattern.search(value):
                        event[name] = ERASED_ADDRESS
                    else:
                        event[name] = self._sub(value)
        txn.put(key, bytes(raw[:8]) + msgspec.json.encode(event), db=self._db["wh_out"])
        return 1

    def suppress_in(
        self, txn: Any, found_supp: list[bytes], now: float, random_bytes: Callable[[int], bytes]
    ) -> bytes:
        """Replace the address's suppression entries by one hashed entry (global, or the
        tenant's) and record the event logs' scrub request; returns the request's key."""
        supp = self.spool.suppression
        reason = "erasure"
        for key in found_supp:
            raw = txn.get(key, db=self._db["supp"])
            if raw is not None:
                old = msgspec.msgpack.decode(raw, type=SuppressionEntry)
                if old.tenant == self.tenant and old.active(now):
                    reason = old.reason  # keep why it was suppressed, not who it is
                supp.delete_in(txn, key)
        # A clear entry could still wait in the cluster's outbox: never publish it.
        for scope in {self.tenant, ""}:
            txn.delete(
                cluster_store.OUTBOX + entry_key(scope, b"a", self.address.key),
                db=self._db["cluster"],
            )
        secret = supp.secret_in(txn, random_bytes)
        entry = SuppressionEntry(
            "", self.tenant, reason, "erasure", now
        )  # target: set by put_hashed_in
        digest = supp.put_hashed_in(txn, secret, self.address.key, entry)
        request_key = _U64.pack(r.ms(now)) + random_bytes(8)
        request = ScrubRequest(digest, self.tenant, now)
        txn.put(request_key, ENC.encode(request), db=self._db["erase"])
        self.spool.add_webhook_events_in(txn, [erased_event(self.tenant, now)])
        return request_key

    # ---- the whole erasure, in this thread -----------------------------------------------

    def run(
        self,
        now: float,
        *,
        dry_run: bool = False,
        write: Callable[[Callable[[Any], Any]], Any] | None = None,
    ) -> Report:
        """Find, rewrite in batches, suppress by hash. ``write(fn)`` runs ``fn(txn)`` in
        a durable write transaction (default: the store's own :meth:`Store.write`; the
        node passes one that runs on its writer's thread)."""
        found = self.find()
        report = Report(address_found=_counts(found), dry_run=dry_run)
        if dry_run:
            return report
        write = write or self.spool.store.write
        for part in self.batches(found):
            cancelled, rewritten = write(lambda txn, part=part: self.apply_in(txn, part, now))
            report.cancelled += cancelled
            report.rewritten += rewritten
        random_bytes = self.spool._random_bytes
        if random_bytes is None:
            raise ValueError("this spool was opened to read: it cannot erase")
        report.scrub_request = write(
            lambda txn: self.suppress_in(txn, found.supp, now, random_bytes)
        )
        report.rewritten += len(found.supp)
        report.suppressed = True
        return report


def erased_event(tenant: str, now: float) -> Event:
    """The event of an erasure: who asked is the operator, what is the tenant's scope;
    the address is not in it."""
    scope = f"tenant {tenant}" if tenant else "every tenant"
    return Event(type="erased", ts=now, job="", tenant=tenant, text=f"an address, {scope}")


def _counts(found: Found) -> dict[str, int]:
    return {f: len(getattr(found, f)) for f in found.__struct_fields__ if getattr(found, f)}


def clean_file(store: Any, write: Callable[[Callable[[Any], Any]], Any] | None = None) -> int:
    """Leave no old copy of a record in the spool's file, in this process's page
    buffers' view: zero the free pages (which also clears the buffers LMDB reuses), copy
    every page of every sub-database afresh, zero the pages that freed. Costs a write of
    the whole spool: erase many addresses, then clean once. Returns the pages written."""
    write = write or store.write
    pages = store.scrub_free_pages(write, first=4096)
    pages += store.rewrite_pages(list(store.dbs), write)
    return pages + store.scrub_free_pages(write)


def scrub_requests_in(txn: Any, dbs: dict) -> list[tuple[bytes, ScrubRequest]]:
    """The event-log scrubs still to do, oldest first."""
    dec = msgspec.msgpack.Decoder(ScrubRequest)
    return [(bytes(k), dec.decode(v)) for k, v in txn.cursor(db=dbs["erase"])]


def scrub_done_in(txn: Any, dbs: dict, keys: list[bytes]) -> int:
    """Drop scrub requests that were carried out."""
    return sum(bool(txn.delete(k, db=dbs["erase"])) for k in keys)
