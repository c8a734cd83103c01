"""Shared suppression: publish this node's changes, apply the other nodes' (docs/cluster.md).

Each node keeps checking its own LMDB store on the hot path; Redis only replicates into it.

- Publishing: local changes wait in the LMDB outbox (written in the transaction that made
  them: :mod:`salvo.core.cluster_store`). Every ``POLL`` seconds the outbox is read and
  published in one MULTI (``XADD`` of the batch to the stream, ``HSET``/``HDEL`` of the
  snapshot hash), then the published entries leave the outbox. While Redis is down the
  outbox only grows; nothing is lost.
- Following: a blocking ``XREAD`` from the last applied id, on a connection of its own.
  Each batch read is applied through the spool writer in one transaction that also notes
  the last id, so a restart resumes where it stopped. A node that never followed this
  Redis (another epoch) or whose next entries were trimmed first loads the snapshot.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import msgspec
import trio

from salvo.actors.cluster import RedisDown, RedisLink
from salvo.core import cluster_store as cs
from salvo.core.cluster import (
    ADD,
    ClusterKeys,
    StreamState,
    SuppOp,
    decode_entry,
    decode_ops,
    encode_entry,
    encode_ops,
    needs_snapshot,
)

__all__ = ["SuppressionSync", "leave_cluster", "publish_ops", "publish_outbox"]

log = logging.getLogger("salvo.cluster")

POLL = 0.2  # seconds between looks at the outbox
BLOCK_MS = 500  # a blocking read's wait: how soon a cancelled reader's thread ends
BATCH = 1000  # changes per stream entry, per read, per snapshot chunk
DOWN_PAUSE = 0.5


def leave_cluster(spool: Any) -> None:
    """On the writer's thread: this data dir is no longer a cluster member."""
    spool.store.write(lambda txn: cs.set_on_in(txn, spool.store, False))


class SuppressionSync:
    """Replicates the suppression list through Redis; run :meth:`run` in a nursery."""

    def __init__(
        self,
        link: RedisLink,
        keys: ClusterKeys,
        spool: Any,
        writer: Any,
        node: str,
        *,
        stream_max: int,
    ) -> None:
        self.link = link
        self.keys = keys
        self.spool = spool
        self.store = spool.store
        self.writer = writer
        self.node = node
        self.stream_max = stream_max
        self.published = 0
        self.applied = 0
        self.snapshot_applied = 0
        self.outbox_waiting = 0
        self.following = trio.Event()  # set once caught up with Redis the first time

    async def run(self, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        store = self.store
        await self.writer.run_sync(lambda: store.write(lambda t: cs.set_on_in(t, store, True)))
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._publish_loop)
            nursery.start_soon(self._follow_loop)

    # ---- publishing ------------------------------------------------------------------------

    async def _publish_loop(self) -> None:
        store = self.store
        while True:
            box = await trio.to_thread.run_sync(
                lambda: store.read(lambda t: cs.outbox_read_in(t, store, BATCH))
            )
            self.outbox_waiting = len(box)
            if not box:
                await trio.sleep(POLL)
                continue
            ops = [cs.decode_outbox(raw) for _, raw in box]
            try:
                await self.link.call(self._publish, ops)
            except RedisDown:
                await trio.sleep(DOWN_PAUSE)
                continue
            await self.writer.run_sync(self._done, box)
            self.published += len(ops)
            if len(box) < BATCH:
                await trio.sleep(POLL)

    def _done(self, box: list[tuple[bytes, bytes]]) -> None:
        self.store.write(lambda t: cs.outbox_done_in(t, self.store, box))

    def _publish(self, client: Any, ops: list[SuppOp]) -> None:
        publish_ops(client, self.keys, self.node, ops, self.stream_max)

    # ---- following ---------------------------------------------------------------------------

    async def _follow_loop(self) -> None:
        store = self.store
        state = await trio.to_thread.run_sync(
            lambda: store.read(lambda t: cs.stream_state_in(t, store))
        )
        while True:
            try:
                state = await self._catch_up(state)
                self.following.set()
                while True:
                    state = await self._read_once(state)
            except RedisDown:
                await trio.sleep(DOWN_PAUSE)

    async def _catch_up(self, state: StreamState) -> StreamState:
        """Check the epoch and trimming; load the snapshot when needed."""
        epoch, first, last = await self.link.call(self._stream_facts)
        if not needs_snapshot(state, epoch, first, last):
            return state
        log.info("suppression: loading the cluster's snapshot (stream at %s)", last.decode())
        # The stream's last id is taken before the hash is read: changes made meanwhile
        # are in both, and applying one twice changes nothing.
        cursor, n = 0, 0
        while True:
            cursor, chunk = await self.link.call(self._scan, cursor)
            ops = []
            for key, raw in chunk.items():
                try:
                    ops.append(SuppOp(ADD, key, decode_entry(raw)))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    log.warning("suppression snapshot: unreadable entry %r skipped", key)
            done = cursor == 0
            new = StreamState(epoch, last) if done else None
            await self._apply(ops, new)
            n += len(ops)
            if done:
                break
        self.snapshot_applied += n
        log.info("suppression: %d entries from the snapshot applied", n)
        return StreamState(epoch, last)

    def _stream_facts(self, client: Any) -> tuple[bytes, bytes | None, bytes]:
        """(epoch, id of the first entry or None, last generated id) of the stream."""
        import redis

        keys = self.keys
        fresh = secrets.token_hex(8).encode()
        pipe = client.pipeline(transaction=False)
        pipe.set(keys.epoch, fresh, nx=True)
        pipe.get(keys.epoch)
        _, epoch = pipe.execute()
        try:
            info = client.xinfo_stream(keys.supp_stream)
        except redis.ResponseError:  # no stream yet
            return epoch, None, b"0-0"
        last = _as_bytes(info.get("last-generated-id") or b"0-0")
        first = info.get("first-entry")
        return epoch, _as_bytes(first[0]) if first else None, last

    def _scan(self, client: Any, cursor: int) -> tuple[int, dict[bytes, bytes]]:
        return client.hscan(self.keys.supp_all, cursor, count=BATCH)

    async def _read_once(self, state: StreamState) -> StreamState:
        found = await self.link.blocking(self._xread, state.last_id or b"0-0")
        if not found:
            return state
        ops: list[SuppOp] = []
        last = state.last_id
        for entry_id, fields in found:
            last = _as_bytes(entry_id)
            if fields.get(b"n", b"").decode("utf-8", "replace") == self.node:
                continue  # our own change: already in our store
            try:
                ops += decode_ops(fields.get(b"b", b""))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("suppression stream entry %s skipped: %s", last.decode(), exc)
        new = StreamState(state.epoch, last)
        await self._apply(ops, new)
        return new

    def _xread(self, client: Any, last_id: bytes) -> list:
        got = client.xread({self.keys.supp_stream: last_id}, count=BATCH, block=BLOCK_MS)
        return got[0][1] if got else []

    async def _apply(self, ops: list[SuppOp], state: StreamState | None) -> None:
        spool = self.spool

        def write() -> tuple[int, int]:
            return spool.store.write(lambda t: cs.apply_in(t, spool.suppression, ops, state))

        added, removed = await self.writer.run_sync(write)
        self.applied += added + removed


def publish_ops(
    client: Any, keys: ClusterKeys, node: str, ops: list[SuppOp], stream_max: int
) -> None:
    """One MULTI: the batch as a stream entry, and the snapshot hash updated."""
    pipe = client.pipeline(transaction=True)
    pipe.xadd(
        keys.supp_stream,
        {b"n": node.encode(), b"b": encode_ops(ops)},
        maxlen=stream_max,
        approximate=True,
    )
    adds = {op.key: encode_entry(op.entry) for op in ops if op.op == ADD}
    removes = [op.key for op in ops if op.op != ADD]
    if adds:
        pipe.hset(keys.supp_all, mapping=adds)
    if removes:
        pipe.hdel(keys.supp_all, *removes)
    pipe.execute()


def publish_outbox(store: Any, config: Any, timeout: float = 5.0) -> int:
    """Publish a data dir's outbox from outside the node (``salvo suppress --config``);
    the count published. Raises RedisDown when Redis cannot be reached."""
    import redis

    from salvo.core.config import parse_duration

    cluster = config.cluster
    keys = ClusterKeys(cluster.prefix)
    client = redis.Redis.from_url(
        cluster.redis,
        socket_connect_timeout=parse_duration(cluster.connect_timeout),
        socket_timeout=timeout,
    )
    total = 0
    try:
        while box := store.read(lambda t: cs.outbox_read_in(t, store, BATCH)):
            ops = [cs.decode_outbox(raw) for _, raw in box]
            publish_ops(client, keys, config.node_name, ops, cluster.stream_max)
            store.write(lambda t, box=box: cs.outbox_done_in(t, store, box))
            total += len(ops)
            if len(box) < BATCH:
                break
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise RedisDown(str(exc)) from exc
    finally:
        client.close()
    return total


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
