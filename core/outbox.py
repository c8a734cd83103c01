"""The webhooks' durable outbox in the spool's LMDB environment (docs/webhooks.md).

Events for webhooks are written by the transaction that makes the change they report
(an outcome, a submission, a cancel, a feedback report, an alert), so a crash can never
lose one that the spool's state already shows; the webhooks actor posts them and deletes
them after the receiver's 2xx. Events are stored as the JSON they are posted as, so that
nothing about the job has to stay in the spool for them.

- ``wh_out``: ``NAME NUL`` + u64 sequence -> u64 event time (ms) + the event's JSON
  object. One outbox per webhook; the sequence (``meta`` ``wh_next``) grows with every
  event written, so keys are in commit order and never reused: with the spool's random
  ``wh_id`` they are the events' ids.
- ``wh_stat``: ``NAME`` -> msgpack [pending, delivered, expired] (no scan to count).

Every method but the reads works inside a transaction given to it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec

from salvo.core.spool_records import ms
from salvo.core.webhooks import Subscriptions, event_id

__all__ = ["Entry", "Outbox", "OutboxStats"]

_U64 = struct.Struct(">Q")
_NEXT = b"wh_next"
_ID = b"wh_id"
_json = msgspec.json.Encoder()
_stat_enc = msgspec.msgpack.Encoder()
_stat_dec = msgspec.msgpack.Decoder(tuple[int, int, int])


class Entry(msgspec.Struct, frozen=True):
    """One pending event: its outbox key, sequence number, time (ms) and JSON object."""

    key: bytes
    seq: int
    ts_ms: int
    data: bytes


class OutboxStats(msgspec.Struct, frozen=True):
    """A webhook's counts (durable) and the time of its oldest pending event (s)."""

    pending: int = 0
    delivered: int = 0
    expired: int = 0
    oldest: float | None = None


def _prefix(name: str) -> bytes:
    return name.encode() + b"\0"


class Outbox:
    """The outbox sub-databases of a :class:`~salvo.core.spool_env.Store`, for the
    webhooks in ``subscriptions``; ``random_bytes`` makes the spool's event-id prefix
    the first time an event is written."""

    def __init__(
        self,
        store: Any,
        subscriptions: Subscriptions | None = None,
        random_bytes: Callable[[int], bytes] | None = None,
    ) -> None:
        self.store = store
        self.subscriptions = subscriptions or Subscriptions()
        self._random_bytes = random_bytes
        self._out = store.dbs["wh_out"]
        self._stat = store.dbs["wh_stat"]
        self._meta = store.dbs["meta"]
        self._id: str | None = None

    @property
    def active(self) -> bool:
        """Whether any webhook is configured (else :meth:`add_in` is never worth a call)."""
        return bool(self.subscriptions)

    def wants(self, type_: str) -> bool:
        return type_ in self.subscriptions.types

    # ---- writing -----------------------------------------------------------------------

    def add_in(self, txn: Any, events: Iterable[Any]) -> int:
        """Queue every event for each webhook that takes it (its type, its tenant); one
        JSON encoding per event and one put per webhook. Returns the puts made."""
        subs = self.subscriptions
        if not subs:
            return 0
        types = subs.types
        todo = []
        for event in events:
            if event.type in types:
                names = subs.targets(event.type, getattr(event, "tenant", "") or "")
                if names:
                    todo.append((names, event))
        if not todo:
            return 0
        get, put = txn.get, txn.put
        if get(_ID, db=self._meta) is None:
            if self._random_bytes is None:
                raise ValueError("this spool was opened to read: it cannot queue webhook events")
            put(_ID, self._random_bytes(8).hex().encode(), db=self._meta)
        raw = get(_NEXT, db=self._meta)
        seq = _U64.unpack(raw)[0] if raw is not None else 1
        added: dict[str, int] = {}
        pack = _U64.pack
        out = self._out
        for names, event in todo:
            value = pack(ms(event.ts)) + _json.encode(event)
            for name in names:
                put(_prefix(name) + pack(seq), value, db=out)
                seq += 1
                added[name] = added.get(name, 0) + 1
        put(_NEXT, pack(seq), db=self._meta)
        for name, n in added.items():
            self._bump_in(txn, name, n, 0, 0)
        return sum(added.values())

    def remove_in(
        self, txn: Any, name: str, delivered: Sequence[bytes], expired: Sequence[bytes] = ()
    ) -> tuple[int, int]:
        """Delete posted (``delivered``) and given-up (``expired``) entries of one
        webhook and count them; keys already gone are not counted again."""
        out = self._out
        done = sum(1 for key in delivered if txn.delete(key, db=out))
        gone = sum(1 for key in expired if txn.delete(key, db=out))
        if done or gone:
            self._bump_in(txn, name, -(done + gone), done, gone)
        return done, gone

    def _bump_in(self, txn: Any, name: str, pending: int, delivered: int, expired: int) -> None:
        key = name.encode()
        raw = txn.get(key, db=self._stat)
        p, d, e = _stat_dec.decode(raw) if raw is not None else (0, 0, 0)
        value = (max(0, p + pending), d + delivered, e + expired)
        txn.put(key, _stat_enc.encode(value), db=self._stat)

    # ---- reading (read transactions) -----------------------------------------------------

    def head(self, name: str, limit: int) -> list[Entry]:
        """The first ``limit`` pending events of a webhook, oldest first."""
        return self.store.read(lambda txn: self.head_in(txn, name, limit))

    def head_in(self, txn: Any, name: str, limit: int) -> list[Entry]:
        prefix = _prefix(name)
        n = len(prefix)
        cur = txn.cursor(db=self._out)
        found: list[Entry] = []
        if limit <= 0 or not cur.set_range(prefix):
            return found
        for key, value in cur:
            if key[:n] != prefix or len(found) >= limit:
                break
            found.append(Entry(key, _U64.unpack(key[n:])[0], _U64.unpack(value[:8])[0], value[8:]))
        return found

    def stats(self, name: str) -> OutboxStats:
        """Counts and the oldest pending event's time (one read transaction, no scan)."""

        def fn(txn: Any) -> OutboxStats:
            raw = txn.get(name.encode(), db=self._stat)
            if raw is None:
                return OutboxStats()
            pending, delivered, expired = _stat_dec.decode(raw)
            first = self.head_in(txn, name, 1)
            oldest = first[0].ts_ms / 1000 if first else None
            return OutboxStats(pending if first else 0, delivered, expired, oldest)

        return self.store.read(fn)

    def names(self) -> list[str]:
        """Every webhook name the outbox has counts for (configured or not any more)."""

        def fn(txn: Any) -> list[str]:
            return [k.decode() for k in txn.cursor(db=self._stat).iternext(values=False)]

        return self.store.read(fn)

    def store_id(self) -> str:
        """The spool's event-id prefix ("" until the first event was written)."""
        if self._id is None:
            raw = self.store.read(lambda txn: txn.get(_ID, db=self._meta))
            if raw is None:
                return ""
            self._id = raw.decode()
        return self._id

    def ids(self, entries: Sequence[Entry]) -> list[tuple[str, bytes]]:
        """(id, JSON) of entries, for :func:`salvo.core.webhooks.payload`."""
        sid = self.store_id()
        return [(event_id(sid, e.seq), e.data) for e in entries]
