"""What nodes of a cluster share through Redis, and the decisions about it (no I/O here).

Redis keys (all under ``[cluster] prefix``, ``P`` below):

- ``P:epoch``: a random value set once (``SET NX``) by the first node to meet an empty
  Redis. A node remembers the epoch it replicated from; a different one means Redis was
  replaced or lost its data, and the node starts over from the snapshot.
- ``P:supp:stream``: the suppression stream. Each entry is one batch of changes published
  by one node (field ``n``: its name, ``b``: the msgpack list of :class:`SuppOp`), trimmed
  to about ``[cluster] stream_max`` entries.
- ``P:supp:all``: the snapshot, a hash of every suppression (field: the LMDB key of the
  entry, value: the msgpack :class:`SuppressionEntry`), written in the same MULTI as the
  stream entry, for nodes whose last applied stream entry was trimmed away.
- ``P:job:TENANT NUL ID``: the cluster-wide claim of a job id (see :func:`claim_value`,
  :func:`reply_value`, :func:`decide`).

The LMDB side (the outbox of local changes, the last applied stream id) is in
:mod:`salvo.core.cluster_store`.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import msgspec

from salvo.core.protocol import Reply
from salvo.core.suppression import SuppressionEntry

__all__ = [
    "ClusterKeys",
    "Decision",
    "StreamState",
    "SuppOp",
    "claim_value",
    "decide",
    "decode_ops",
    "encode_ops",
    "needs_snapshot",
    "reply_value",
    "stream_id",
]

ADD = "a"
REMOVE = "r"


class ClusterKeys:
    """The Redis key names of one cluster (bytes: job ids and tenants may be any text)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.encode()
        self.epoch = self.prefix + b":epoch"
        self.supp_stream = self.prefix + b":supp:stream"
        self.supp_all = self.prefix + b":supp:all"

    def job(self, tenant: str, job_id: str) -> bytes:
        """The claim key of a job id in a tenant."""
        return self.prefix + b":job:" + tenant.encode() + b"\0" + job_id.encode()


# ---- shared suppression ------------------------------------------------------------------


class SuppOp(msgspec.Struct, frozen=True, array_like=True):
    """One change of the suppression list: ``op`` ``a`` (add or replace ``entry`` under
    ``key``) or ``r`` (remove ``key``; ``entry`` is None). ``key`` is the LMDB key
    (:func:`salvo.core.suppression.entry_key`), the same on every node."""

    op: str
    key: bytes
    entry: SuppressionEntry | None = None


_OPS_ENC = msgspec.msgpack.Encoder()
_OPS_DEC = msgspec.msgpack.Decoder(list[SuppOp])
_ENTRY_DEC = msgspec.msgpack.Decoder(SuppressionEntry)


def encode_ops(ops: list[SuppOp]) -> bytes:
    """A stream entry's batch."""
    return _OPS_ENC.encode(ops)


def decode_ops(raw: bytes) -> list[SuppOp]:
    """A stream entry's batch; raises msgspec.DecodeError or ValidationError."""
    ops = _OPS_DEC.decode(raw)
    for op in ops:
        if op.op not in (ADD, REMOVE) or (op.op == ADD and op.entry is None):
            raise msgspec.ValidationError(f"bad suppression op {op.op!r}")
    return ops


def encode_entry(entry: SuppressionEntry) -> bytes:
    """A snapshot hash value."""
    return _OPS_ENC.encode(entry)


def decode_entry(raw: bytes) -> SuppressionEntry:
    """A snapshot hash value; raises msgspec.DecodeError or ValidationError."""
    return _ENTRY_DEC.decode(raw)


def stream_id(value: bytes | str) -> tuple[int, int]:
    """A stream id (``MS-SEQ``) as a pair that compares in stream order."""
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class StreamState(NamedTuple):
    """Where a node's replica stands: the Redis epoch it follows and the last stream id
    applied (b"" for none)."""

    epoch: bytes
    last_id: bytes


def needs_snapshot(mine: StreamState, epoch: bytes, first: bytes | None, last: bytes) -> bool:
    """Whether a node must load the snapshot before following the stream: it never
    followed this Redis (another epoch, or none), or entries it has not applied may have
    been trimmed away: its last applied entry is gone (the stream's ``first`` entry is
    past it, or the stream is empty though its ``last`` generated id is past it).

    Approximate trimming keeps at least ``stream_max`` entries, so a node that follows
    the stream never finds its last entry gone; one away for long does."""
    if not mine.last_id or mine.epoch != epoch:
        return True
    applied = stream_id(mine.last_id)
    if first is None:
        return stream_id(last) > applied
    return stream_id(first) > applied


# ---- cluster-wide idempotency ------------------------------------------------------------

CLAIMED = b"c"  # + node name: the job is being committed by that node
REPLIED = b"r"  # + msgpack [node name, reply]: committed, and this was the reply

_REPLY_ENC = msgspec.msgpack.Encoder()
_REPLY_DEC = msgspec.msgpack.Decoder(tuple[str, Reply])


def claim_value(node: str) -> bytes:
    """The value a node sets (``SET NX``) to claim a job id before committing the job."""
    return CLAIMED + node.encode()


def reply_value(node: str, reply: Reply) -> bytes:
    """The value that replaces the claim once the job is committed: the node's reply."""
    return REPLIED + _REPLY_ENC.encode((node, reply))


class Decision(NamedTuple):
    """What to do with a job whose id another node may hold: ``proceed`` (commit it here:
    the claim is ours), ``retry`` (another node is committing it: ``holder``), or
    ``replay`` (another node committed it: answer with its ``reply``)."""

    action: Literal["proceed", "retry", "replay"]
    holder: str = ""
    reply: Reply | None = None


def decide(value: bytes | None, node: str) -> Decision:
    """The decision for a job id whose claim holds ``value`` after our ``SET NX`` failed
    (None: the claim vanished meanwhile; an unreadable value is treated as held)."""
    if value is None:
        return Decision("retry", "")
    if value.startswith(CLAIMED):
        holder = value[1:].decode("utf-8", "replace")
        return Decision("proceed") if holder == node else Decision("retry", holder)
    if value.startswith(REPLIED):
        try:
            holder, reply = _REPLY_DEC.decode(value[1:])
        except (msgspec.DecodeError, msgspec.ValidationError):
            return Decision("retry", "?")
        # Our own job: the spool has it, and its replay is the authoritative one.
        return Decision("proceed") if holder == node else Decision("replay", holder, reply)
    return Decision("retry", "?")
