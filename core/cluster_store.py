"""The cluster's state in a node's LMDB store (sub-database ``cluster``).

- ``on``: present while the node is part of a cluster. Then every local change of the
  suppression list (a hard bounce, a complaint, an unsubscribe, ``salvo suppress`` on the
  data dir) also goes to the outbox, in the transaction that makes it.
- ``box NUL`` + suppression key -> msgpack :class:`~salvo.core.cluster.SuppOp`: the outbox, one
  entry per key (a later change of the same key replaces an unpublished one). The node
  publishes it to Redis and deletes what was published, so a Redis outage loses nothing.
- ``epoch``, ``last``: the Redis epoch followed and the last stream id applied, written
  in the transaction that applies the stream's changes (catch-up after a restart).
"""

from __future__ import annotations

from typing import Any

import msgspec

from salvo.core.cluster import ADD, REMOVE, StreamState, SuppOp
from salvo.core.suppression import SuppressionEntry

__all__ = [
    "OUTBOX",
    "apply_in",
    "is_on",
    "outbox_add_in",
    "outbox_done_in",
    "outbox_read_in",
    "set_on_in",
    "stream_state_in",
]

OUTBOX = b"box\0"
_ON = b"on"
_EPOCH = b"epoch"
_LAST = b"last"
_ENC = msgspec.msgpack.Encoder()
_DEC = msgspec.msgpack.Decoder(SuppOp)


def _db(store: Any) -> Any:
    return store.dbs["cluster"]


def is_on(txn: Any, store: Any) -> bool:
    """Whether local suppression changes go to the outbox."""
    return txn.get(_ON, db=_db(store)) is not None


def set_on_in(txn: Any, store: Any, on: bool) -> None:
    """Join (True) or leave (False) a cluster; leaving empties the outbox."""
    db = _db(store)
    if on:
        txn.put(_ON, b"1", db=db)
        return
    txn.delete(_ON, db=db)
    cur = txn.cursor(db=db)
    if cur.set_range(OUTBOX):
        while cur.key().startswith(OUTBOX) and cur.delete():
            pass


def outbox_add_in(txn: Any, store: Any, items: list[tuple[bytes, SuppressionEntry | None]]) -> None:
    """Note local changes for publishing (``None``: a removal), when in a cluster."""
    db = _db(store)
    if txn.get(_ON, db=db) is None:
        return
    for key, entry in items:
        op = SuppOp(ADD, key, entry) if entry is not None else SuppOp(REMOVE, key)
        txn.put(OUTBOX + key, _ENC.encode(op), db=db)


def outbox_read_in(txn: Any, store: Any, limit: int) -> list[tuple[bytes, bytes]]:
    """Up to ``limit`` outbox entries as (outbox key, raw op), in key order."""
    out = []
    cur = txn.cursor(db=_db(store))
    if not cur.set_range(OUTBOX):
        return out
    for key, raw in cur:
        if not key.startswith(OUTBOX) or len(out) >= limit:
            break
        out.append((bytes(key), bytes(raw)))
    return out


def decode_outbox(raw: bytes) -> SuppOp:
    """An outbox value."""
    return _DEC.decode(raw)


def outbox_done_in(txn: Any, store: Any, published: list[tuple[bytes, bytes]]) -> int:
    """Delete published entries that were not changed again since they were read."""
    db = _db(store)
    n = 0
    for key, raw in published:
        if txn.get(key, db=db) == raw:
            n += txn.delete(key, db=db)
    return n


def outbox_size(txn: Any, store: Any) -> int:
    """Entries waiting in the outbox (the ``on`` and stream state keys are not counted)."""
    entries = txn.stat(_db(store))["entries"]
    db = _db(store)
    return entries - sum(txn.get(k, db=db) is not None for k in (_ON, _EPOCH, _LAST))


def stream_state_in(txn: Any, store: Any) -> StreamState:
    """The Redis epoch followed and the last stream id applied."""
    db = _db(store)
    return StreamState(txn.get(_EPOCH, b"", db=db), txn.get(_LAST, b"", db=db))


def apply_in(
    txn: Any, suppression: Any, ops: list[SuppOp], state: StreamState | None
) -> tuple[int, int]:
    """Apply changes made on other nodes (never to the outbox: they are published
    already), then note ``state`` (None: keep it). Returns (added, removed)."""
    added = removed = 0
    for op in ops:  # in order: a later change of a key wins
        if op.op == REMOVE:
            removed += suppression.delete_in(txn, op.key)
        else:
            added += suppression.put_in(txn, [(op.key, op.entry)], publish=False)
    if state is not None:
        db = _db(suppression.store)
        txn.put(_EPOCH, state.epoch, db=db)
        txn.put(_LAST, state.last_id, db=db)
    return added, removed
