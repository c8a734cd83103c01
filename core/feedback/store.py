"""The feedback loop's records in the spool's LMDB environment.

Three sub-databases (docs/feedback.md, "Inbound listener" and "Policy"):

- ``fb_raw``: report id (u64) -> :class:`RawReport`, a message the listener accepted and
  that is not processed yet. Written before the listener's 250; deleted in the
  transaction that applies it, so a report takes effect once, even across a crash.
- ``fb_soft``: ``tenant NUL address-key NUL`` + time in ms (u64) -> b"": one entry per
  soft bounce within the window; an address's entries go when it is suppressed, older
  ones when the address is touched again or by :meth:`FeedbackStore.sweep_soft_in`.
- ``fb_count``: counter name -> u64. ``report:KIND`` (reports processed, by kind),
  ``complaint:TENANT NUL CAMPAIGN``, and the report store's own ``\\0next``, ``\\0bytes``.

Every method works inside a transaction given to it; time is passed in.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import msgspec

from salvo.core.errors import SpoolFullError
from salvo.core.spool_records import ENC, ms

__all__ = ["FeedbackStore", "RawReport", "ReportStoreFull"]

_U64 = struct.Struct(">Q")
_NEXT = b"\0next"
_BYTES = b"\0bytes"
_PENDING = b"\0pending"


class ReportStoreFull(SpoolFullError):
    """The store of received, unprocessed reports is at its bound: try later (452)."""


class RawReport(msgspec.Struct, frozen=True, array_like=True):
    """A received message, as the listener (or ``salvo feedback ingest``) took it."""

    received: float
    peer: str
    mail_from: str
    rcpts: tuple[str, ...]
    data: bytes
    trusted: bool = False  # ingested by the operator with --trust
    tenant: str = ""  # the tenant a trusted report's addresses are suppressed for


_DEC_RAW = msgspec.msgpack.Decoder(RawReport)


class FeedbackStore:
    """The feedback sub-databases of a :class:`~salvo.core.spool_env.Store`."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._raw = store.dbs["fb_raw"]
        self._soft = store.dbs["fb_soft"]
        self._count = store.dbs["fb_count"]

    # -- counters -------------------------------------------------------------------------

    def add_in(self, txn: Any, name: bytes, n: int = 1) -> int:
        """Add ``n`` to a counter; return its new value."""
        old = txn.get(name, db=self._count)
        value = max(0, (_U64.unpack(old)[0] if old else 0) + n)
        txn.put(name, _U64.pack(value), db=self._count)
        return value

    def counter_in(self, txn: Any, name: bytes) -> int:
        raw = txn.get(name, db=self._count)
        return _U64.unpack(raw)[0] if raw else 0

    def counters(self, prefix: bytes = b"") -> dict[bytes, int]:
        """Every counter whose name starts with ``prefix`` (one read transaction)."""

        def fn(txn: Any) -> dict[bytes, int]:
            cur = txn.cursor(db=self._count)
            out = {}
            if cur.set_range(prefix):
                for key, raw in cur:
                    if not key.startswith(prefix):
                        break
                    out[bytes(key)] = _U64.unpack(raw)[0]
            return out

        return self.store.read(fn)

    # -- raw reports ----------------------------------------------------------------------

    def put_reports_in(
        self, txn: Any, reports: Sequence[RawReport], *, max_pending: int, max_bytes: int
    ) -> list[int]:
        """Store reports; their ids, in order. Raises :class:`ReportStoreFull` (the
        transaction must then be aborted) when the pending count or size would pass."""
        pending = self.counter_in(txn, _PENDING)
        size = self.counter_in(txn, _BYTES)
        added = sum(len(r.data) for r in reports)
        if pending + len(reports) > max_pending or size + added > max_bytes:
            raise ReportStoreFull(
                f"{pending} reports ({size} bytes) wait to be processed; try later"
            )
        first = self.counter_in(txn, _NEXT) or 1
        ids = list(range(first, first + len(reports)))
        for rid, report in zip(ids, reports, strict=True):
            txn.put(_U64.pack(rid), ENC.encode(report), db=self._raw)
        txn.put(_NEXT, _U64.pack(first + len(reports)), db=self._count)
        self.add_in(txn, _PENDING, len(reports))
        self.add_in(txn, _BYTES, added)
        return ids

    def pending_ids(self, limit: int = 100) -> list[int]:
        """Ids of reports waiting to be processed, oldest first."""

        def fn(txn: Any) -> list[int]:
            out = []
            for key in txn.cursor(db=self._raw).iternext(values=False):
                if len(out) >= limit:
                    break
                out.append(_U64.unpack(key)[0])
            return out

        return self.store.read(fn)

    def get_report(self, rid: int) -> RawReport | None:
        raw = self.store.read(lambda txn: txn.get(_U64.pack(rid), db=self._raw))
        return None if raw is None else _DEC_RAW.decode(raw)

    def take_in(self, txn: Any, rid: int) -> RawReport | None:
        """Delete a pending report inside ``txn``; it, or None when already taken."""
        key = _U64.pack(rid)
        raw = txn.get(key, db=self._raw)
        if raw is None:
            return None
        report = _DEC_RAW.decode(raw)
        txn.delete(key, db=self._raw)
        self.add_in(txn, _PENDING, -1)
        self.add_in(txn, _BYTES, -len(report.data))
        return report

    # -- soft bounces -----------------------------------------------------------------------

    def soft_bounce_in(self, txn: Any, tenant: str, key: str, now: float, window: float) -> int:
        """Record a soft bounce of address ``key``; the count within the window after it
        (older entries of the address are deleted on the way)."""
        prefix = f"{tenant}\0{key}\0".encode()
        start = ms(now - window)
        cur = txn.cursor(db=self._soft)
        old, count = [], 0
        if cur.set_range(prefix):
            for k in cur.iternext(values=False):
                if not k.startswith(prefix):
                    break
                if _U64.unpack_from(k, len(prefix))[0] < start:
                    old.append(bytes(k))
                else:
                    count += 1
        for k in old:
            txn.delete(k, db=self._soft)
        # Two soft bounces in one millisecond are two: the second takes the next free one.
        at = ms(now)
        while not txn.put(prefix + _U64.pack(at), b"", db=self._soft, overwrite=False):
            at += 1
        return count + 1

    def clear_soft_in(self, txn: Any, tenant: str, key: str) -> None:
        """Forget an address's soft bounces (it was suppressed)."""
        prefix = f"{tenant}\0{key}\0".encode()
        cur = txn.cursor(db=self._soft)
        if cur.set_range(prefix):
            while cur.key().startswith(prefix) and cur.delete():
                pass

    def sweep_soft_in(self, txn: Any, now: float, window: float, limit: int = 10_000) -> int:
        """Delete up to ``limit`` soft-bounce entries older than the window."""
        start = ms(now - window)
        old = []
        for k in txn.cursor(db=self._soft).iternext(values=False):
            if len(old) >= limit:
                break
            if _U64.unpack_from(k, len(k) - 8)[0] < start:
                old.append(bytes(k))
        for k in old:
            txn.delete(k, db=self._soft)
        return len(old)
