"""The warm-up state in the spool's LMDB environment (docs/warmup.md).

One sub-database, ``warmup``: ``source NUL provider`` -> :class:`~salvo.core.warmup.LaneState`.
The outcomes of a batch are counted in the transaction that records them
(:meth:`WarmupStore.count_in`, one read and one write per lane the batch touched), so the
counts never disagree with the recipients' states after a crash. Every method works
inside a transaction given to it, or opens a read transaction; time is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from salvo.core.spool_records import ENC
from salvo.core.warmup import COUNTS, LaneState, Plan, counted, day_of, roll

__all__ = ["WarmupStore", "lane_key"]

_DEC = msgspec.msgpack.Decoder(LaneState)


def lane_key(source: str, provider: str) -> bytes:
    return f"{source}\0{provider}".encode()


class WarmupStore:
    """Read and count the warm-up lanes; ``store`` is the spool's Store."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._db = store.dbs["warmup"]

    def get_in(self, txn: Any, source: str, provider: str) -> LaneState | None:
        raw = txn.get(lane_key(source, provider), db=self._db)
        return None if raw is None else _DEC.decode(raw)

    def get(self, source: str, provider: str) -> LaneState | None:
        """A lane's state as last written (not rolled to today)."""
        return self.store.read(lambda txn: self.get_in(txn, source, provider))

    def lanes(self) -> list[tuple[str, str, LaneState]]:
        """Every lane: (source, provider, state as last written)."""

        def fn(txn: Any) -> list[tuple[str, str, LaneState]]:
            out = []
            for key, raw in txn.cursor(db=self._db):
                source, _, provider = key.decode().partition("\0")
                out.append((source, provider, _DEC.decode(raw)))
            return out

        return self.store.read(fn)

    def count_in(
        self,
        txn: Any,
        counts: Iterable[tuple[str, str, str]],
        plans: dict[str, str],
        known: dict[str, Plan],
        now: float,
    ) -> None:
        """Count outcomes: ``counts`` holds (source, provider, state) per recorded attempt
        (state: delivered, deferred or bounced; each one is a message sent) or complaint
        (state ``complained``: not a message sent). ``plans``: source -> plan name;
        sources without a plan are skipped."""
        tally: dict[tuple[str, str], dict[str, int]] = {}
        for source, provider, state in counts:
            if source not in plans or state not in COUNTS:
                continue
            t = tally.setdefault((source, provider), {})
            t[state] = t.get(state, 0) + 1
        for (source, provider), t in tally.items():
            plan = known[plans[source]]
            today = day_of(now, plan.tz)
            state = self.get_in(txn, source, provider) or LaneState(
                plan.name, day=today, since=today
            )
            if state.plan != plan.name:  # the source now follows another plan: start it
                state = LaneState(plan.name, day=today, since=today)
            state = roll(state, plan, today)
            sent = sum(n for k, n in t.items() if k != "complained")
            state = counted(state, sent, **t)
            txn.put(lane_key(source, provider), ENC.encode(state), db=self._db)
