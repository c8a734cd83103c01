"""The operator's pause, resume and cancel in the core process (docs/control.md).

:class:`Control` holds the node's :class:`salvo.core.pauses.Pauses`, loaded from the spool
at start; the admin API calls :meth:`pause`, :meth:`resume` and :meth:`cancel`, which write
the spool first (durable) and then update this in-memory view, which the scheduler asks for
every claimed recipient (:meth:`hold`) before any signing. A pause that lands while
recipients are in flight takes back those still waiting for a signer, and delivery asks
:meth:`hold` again before a waiting signed message goes out (only while a pause or cancel
is in effect), so nothing more of a paused scope is signed or sent. What is decided is
salvo.core.policy's (:func:`~salvo.core.policy.operator_hold`,
:func:`~salvo.core.policy.resume_window`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from salvo.core import pauses as pz
from salvo.core import policy
from salvo.core.spool import Outcome as SpoolOutcome

if TYPE_CHECKING:
    from salvo.actors.scheduler import Scheduler
    from salvo.core.spool import Claimed

log = logging.getLogger("salvo.control")

REFRESH_EVERY = 1.0  # seconds: timed pauses end, source pauses reach delivery


class Control:
    """Pauses and cancels: the durable writes and the scheduler's in-memory view."""

    def __init__(
        self,
        scheduler: Scheduler,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.spool = scheduler.spool
        self.writer = scheduler.writer
        self._clock = clock
        self._rng = rng or random.Random()
        self.pauses = pz.Pauses(self.spool.pause_entries())
        scheduler.control = self
        self._refresh()

    def active_pauses(self) -> list[tuple[str, str]]:
        """(scope, name) of every pause in effect now (the ``salvo_paused`` gauge)."""
        return [(p.scope, p.name) for p in self.pauses.active(self._clock())]

    # -- what the scheduler asks ----------------------------------------------------------

    def hold(self, c: Claimed, provider: str | None, job, now: float) -> SpoolOutcome | None:
        """The hand-back (or the end, for a cancelled job) of a claimed recipient, or None
        when it may be signed and sent."""
        pauses = self.pauses
        if not pauses.pauses and not pauses.cancels:
            return None
        config = self.scheduler.config
        pool = config.pools.get(config.traffic_class(job.traffic).pool)
        sources = pool.sources if pool is not None else []
        if pauses.cancelled(job.tenant, job.campaign, job.submitted):
            return SpoolOutcome(
                seq=c.seq, idx=c.idx, state="cancelled", text="cancelled by the operator"
            )
        left, what = pauses.paused_for(provider, job.tenant, job.campaign, now)
        if not left and sources and all(pauses.source_paused(s, now) for s in sources):
            left, what = (
                min(pauses.pauses[("source", s)].left(now) for s in sources),
                (f"source {sources[0]}"),
            )
        held = policy.operator_hold(left, what, self._rng)
        if held is None:
            return None
        return SpoolOutcome(
            seq=c.seq, idx=c.idx, state="queued", text=held.reason, next_attempt=now + held.delay
        )

    # -- what the admin API calls ---------------------------------------------------------

    async def pause(self, scope: str, name: str, seconds: float | None, reason: str) -> pz.Pause:
        pz.check(scope, name)
        now = self._clock()
        until = now + seconds if seconds else 0.0
        entry = pz.Pause(pz.PAUSE, scope, name, until, reason, now)
        await self.writer.run_sync(self.spool.set_pause, entry)
        self.pauses.add(entry)
        self._refresh()
        withdrawn = await self.scheduler.withdraw()
        log.info(
            "paused %s %s%s (%d recipients taken back before signing)",
            scope,
            name,
            f" for {seconds:.0f} s" if seconds else "",
            withdrawn,
        )
        return entry

    async def resume(self, scope: str, name: str) -> tuple[bool, int]:
        """Drop a pause; make what it held back due again, spread. (was it paused, how
        many recipients are due again)."""
        pz.check(scope, name)
        existed = await self.writer.run_sync(self.spool.clear_pause, scope, name)
        was = self.pauses.remove(scope, name) is not None
        self._refresh()
        due = await self.writer.run_sync(
            self.spool.make_due, scope, name, self._clock(), policy.resume_window, self._rng
        )
        self.scheduler.wake()
        log.info("resumed %s %s: %d recipients due again", scope, name, due)
        return existed or was, due

    async def cancel(self, scope: str, name: str, reason: str) -> int:
        """Cancel a campaign or tenant: every waiting recipient ends ``cancelled`` now (with
        its event); in-flight ones when they come back. Returns how many ended now."""
        pz.check(scope, name, pz.CANCEL_SCOPES)
        now = self._clock()
        entry = pz.Pause(pz.CANCEL, scope, name, 0.0, reason, now)
        changes = await self.writer.run_sync(self.spool.cancel, entry, now)
        self.pauses.add(entry)
        self._refresh()
        self.scheduler.emit_changes(changes)
        await self.scheduler.withdraw()
        log.info("cancelled %s %s: %d recipients", scope, name, len(changes))
        return len(changes)

    def listing(self) -> list[dict]:
        return [p.as_json() for p in self.pauses.active(self._clock())]

    # -- upkeep ---------------------------------------------------------------------------

    def _refresh(self) -> None:
        now = self._clock()
        delivery = self.scheduler.delivery
        delivery.paused_sources = frozenset(
            p.name for p in self.pauses.active(now) if p.scope == "source"
        )
        # What waits in delivery is asked about only while something is paused or
        # cancelled: nothing per message otherwise.
        covered = self.pauses.pauses or self.pauses.cancels
        delivery.hold = self.scheduler.held_back if covered else None

    async def run(self) -> None:
        """End timed pauses (the store forgets them too) and keep delivery's view of the
        paused sources current."""
        while True:
            await trio.sleep(REFRESH_EVERY)
            for entry in self.pauses.expired(self._clock()):
                self.pauses.remove(entry.scope, entry.name)
                try:
                    await self.writer.run_sync(self.spool.clear_pause, entry.scope, entry.name)
                except Exception as exc:  # the store is asked again at the next start
                    log.warning("could not drop the ended pause %s: %s", entry, exc)
            self._refresh()
