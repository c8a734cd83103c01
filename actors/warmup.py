"""The scheduler's side of IP warm-up (docs/warmup.md): the daily caps of warming sources
(:class:`salvo.core.warmup.Caps`, which delivery asks when it picks a source), the
hand-back of a claimed recipient whose pool is at its caps, and the durable per-lane
counts written in the transaction that records the outcomes."""

from __future__ import annotations

import collections
import random
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from salvo.core import host
from salvo.core.spool import Outcome as SpoolOutcome
from salvo.core.warmup import Caps, hold_delay

if TYPE_CHECKING:
    from salvo.actors.delivery import Result
    from salvo.core.config import Config
    from salvo.core.spool import Change, Spool

Counted = dict[tuple[int, int], tuple[str, str, str]]  # (seq, idx) -> (source, provider, outcome)


class WarmupLanes:
    """Caps and counts of the warming (source, provider) lanes; falsy without any."""

    def __init__(self, config: Config, spool: Spool, rng: random.Random) -> None:
        self.config = config
        self._spool = spool
        self.caps = Caps.from_config(config, self._lane, host.time_zone)
        self.plans = config.warming_sources()
        self._rng = rng

    def __bool__(self) -> bool:
        return bool(self.caps)

    def _lane(self, source: str, provider: str):
        return self._spool.warmup.get(source, provider)

    def hold(self, seq: int, idx: int, traffic: str, provider: str, now: float):
        """The hand-back of a claimed recipient whose pool's sources are all at their
        warm-up cap for ``provider`` today, or None."""
        pool = self.config.pools.get(self.config.traffic_class(traffic).pool)
        sources = pool.sources if pool is not None else []
        if not sources or not self.caps.full(sources, provider, now).issuperset(sources):
            return None
        reopens = self.caps.reopens(sources, provider, now)
        return SpoolOutcome(
            seq=seq,
            idx=idx,
            state="queued",
            text=f"{provider}: every source is at its warm-up cap for today",
            next_attempt=now + hold_delay(now, reopens, self._rng),
        )

    def counted(self, batch: Iterable[Result], provider_of: Mapping[tuple[int, int], str]):
        """(source, provider, outcome) of each result sent from a warming source."""
        out: Counted = {}
        if not self.plans:
            return out
        for r in batch:
            if r.source in self.plans and r.held is None:
                key = (r.message.seq, r.message.idx)
                provider = provider_of.get(key)
                if provider is not None:
                    out[key] = (r.source, provider, r.outcome.status.value)
        return out

    def book(self, warm: Counted, now: float) -> Callable[[object, list[Change]], None]:
        """The warm-up counts of a batch's changes, written in the transaction that
        records them (late or repeated outcomes change nothing, so count nothing)."""
        store, plans, known = self._spool.warmup, self.plans, self.caps.plans

        def count(txn, changes: list[Change]) -> None:
            counts = [warm[c.seq, c.idx] for c in changes if (c.seq, c.idx) in warm]
            store.count_in(txn, counts, plans, known, now)

        return count

    def recorded(self, warm: Counted, now: float) -> None:
        """The batch is durable: the in-memory caps count it (and forget it in flight)."""
        lanes = collections.Counter((source, provider) for source, provider, _ in warm.values())
        for (source, provider), n in lanes.items():
            self.caps.recorded(source, provider, n, now)
