"""Cluster-wide idempotency: a job id is claimed in Redis before the job is committed.

The spool writer calls :meth:`Claims.claim` with each group commit's jobs: one script
call doing ``SET key "c"+node NX EX ttl GET`` for each job of the batch. A job whose id
no other node holds goes on to the spool (which still answers a resend to this node from
its own records); one held by another node gets ``retry`` while that node commits it,
then the reply that node stored in the claim (:func:`salvo.core.cluster.decide`). After
the commit the claims take their replies (``SET ... XX KEEPTTL``), and a batch the spool
refused releases its claims: one script call per batch, in the background, retried while
Redis is down.

While Redis is unreachable, ``when_down = "retry"`` answers every job ``retry`` (no
duplicate across nodes is possible), ``"accept"`` commits it unclaimed (the node keeps
taking mail; a resend to another node during the outage may be sent twice).
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import trio

from salvo.actors.cluster import RedisDown, RedisLink
from salvo.core.cluster import ClusterKeys, claim_value, decide, reply_value
from salvo.core.protocol import MAX_ID_CHARS, Job, Reply
from salvo.core.spool import Submitted

__all__ = ["Claims"]

log = logging.getLogger("salvo.cluster")

MAX_PENDING = 1_000_000  # replies and releases waiting for Redis; past it the oldest go
FLUSH_BATCH = 5000
DOWN_PAUSE = 0.5
# One script call per batch, not one command per job: redis-py packs each command in
# Python (its cost: docs/cluster.md), while a script takes all its keys in one command.
# Claim: each key's old value, false where this node's claim was set.
_CLAIM = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('SET', key, ARGV[1], 'NX', 'EX', ARGV[2], 'GET')
end
return out
"""
# After commits: ARGV[i] is key i's reply, or "" to release key i, only while it still
# holds this node's claim (ARGV[#KEYS + 1]).
_STORE = """
local mine = ARGV[#KEYS + 1]
for i, key in ipairs(KEYS) do
  if ARGV[i] == '' then
    if redis.call('GET', key) == mine then redis.call('DEL', key) end
  else
    redis.call('SET', key, ARGV[i], 'XX', 'KEEPTTL')
  end
end
return #KEYS
"""


class Claims:
    """Claims job ids for the spool writer; run :meth:`run` (the background flush)."""

    def __init__(
        self, link: RedisLink, keys: ClusterKeys, node: str, *, ttl: int, when_down: str
    ) -> None:
        self.link = link
        self.keys = keys
        self.node = node
        self.ttl = ttl
        self.when_down = when_down
        self._mine = claim_value(node)
        # (key, value) to store after a commit; value None: release the claim.
        self._pending: collections.deque[tuple[bytes, bytes | None]] = collections.deque(
            maxlen=MAX_PENDING
        )
        self._wake = trio.Event()
        self._scripts: dict[str, Any] = {}
        self.counts: collections.Counter[str] = collections.Counter()

    def _key(self, job: Job) -> bytes | None:
        # An id the spool will reject anyway is not claimed.
        if not job.id or len(job.id) > MAX_ID_CHARS:
            return None
        return self.keys.job(job.tenant, job.id)

    async def claim(self, jobs: list[Job]) -> list[Submitted | None]:
        """For each job: None (commit it here) or the reply to give instead."""
        keys = [self._key(job) for job in jobs]
        wanted = [k for k in keys if k is not None]
        if not wanted:
            return [None] * len(jobs)
        try:
            olds = await self.link.call(self._set_nx, wanted)
        except RedisDown as exc:
            return self._down(jobs, str(exc))
        by_key = iter(olds)
        out: list[Submitted | None] = []
        for job, key in zip(jobs, keys, strict=True):
            if key is None:
                out.append(None)
                continue
            old = next(by_key)
            if old is None:
                self.counts["claimed"] += 1
                out.append(None)
                continue
            decision = decide(old, self.node)
            self.counts[decision.action] += 1
            if decision.action == "proceed":
                out.append(None)
            elif decision.action == "replay":
                out.append(Submitted(decision.reply, duplicate=True))  # type: ignore[arg-type]
            else:
                why = f"job id {job.id!r} is being committed by node {decision.holder!r}"
                out.append(Submitted(_retry(job.id, f"{why}; submit again later"), True))
        return out

    def _script(self, client: Any, source: str) -> Any:
        if source not in self._scripts:
            self._scripts[source] = client.register_script(source)
        return self._scripts[source]

    def _set_nx(self, client: Any, keys: list[bytes]) -> list[bytes | None]:
        olds = self._script(client, _CLAIM)(keys=keys, args=[self._mine, self.ttl])
        return [old or None for old in olds]

    def _down(self, jobs: list[Job], why: str) -> list[Submitted | None]:
        if self.when_down == "accept":
            self.counts["unclaimed"] += len(jobs)
            return [None] * len(jobs)
        self.counts["refused"] += len(jobs)
        text = "the cluster's Redis is unreachable; submit again later"
        return [Submitted(_retry(job.id, text), duplicate=True) for job in jobs]

    def committed(self, jobs: list[Job], results: list[Submitted]) -> None:
        """After the commit: the claims of these jobs take their replies."""
        for job, result in zip(jobs, results, strict=True):
            key = self._key(job)
            if key is not None and result.reply.status != "retry":
                self._pending.append((key, reply_value(self.node, result.reply)))
        self._wake.set()

    def release(self, jobs: list[Job]) -> None:
        """The spool refused these jobs: let another node take their ids."""
        for job in jobs:
            key = self._key(job)
            if key is not None:
                self._pending.append((key, None))
        self._wake.set()

    async def run(self) -> None:
        """Store replies and release claims, batched; kept and retried while Redis is down."""
        while True:
            if not self._pending:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            batch = [self._pending.popleft() for _ in range(min(FLUSH_BATCH, len(self._pending)))]
            try:
                await self.link.call(self._flush, batch)
            except RedisDown:
                self._pending.extendleft(reversed(batch))
                await trio.sleep(DOWN_PAUSE)

    async def drain(self, timeout: float) -> None:
        """At shutdown: store what is pending, for at most ``timeout`` seconds."""
        with trio.move_on_after(timeout):
            while self._pending and self.link.up:
                await trio.sleep(0.02)

    def _flush(self, client: Any, batch: list[tuple[bytes, bytes | None]]) -> None:
        keys = [key for key, _ in batch]
        args = [value or b"" for _, value in batch]
        self._script(client, _STORE)(keys=keys, args=[*args, self._mine])


def _retry(job_id: str, why: str) -> Reply:
    return Reply(id=job_id, status="retry", error=why)
