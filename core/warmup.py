"""IP warm-up gated by results: the rule, and the daily caps it sets (docs/warmup.md).

A warming source follows a plan (``[warmup.NAME]``: ``daily`` caps, one per step) towards
each provider on its own. Each (source, provider) *lane* keeps a :class:`LaneState`: its
step, the day it counts, and that day's counts of messages sent and their outcomes. When
a lane first meets a new day, :func:`roll` judges the day it counted (:func:`judge`):

- fewer than ``min(min_volume, cap)`` messages: it **holds** (too few to decide);
- any rate above ``limit * severe_factor``: it **steps back** one step (not below the
  first);
- any rate above its limit: it **holds**;
- else it **advances** one step; past the last step it is **warmed**: no cap any more.

Rates are of the messages sent that day: deferred / sent, bounced / sent, complained /
sent. A day is a calendar day in the plan's time zone. :class:`Caps` is what the sender
asks before it picks a source: which warming sources have no room left today for a
provider, and until when. Time comes in as ``now`` (seconds since the epoch).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    import random

    from salvo.core.config import Config, WarmupPlan

__all__ = [
    "ADVANCED",
    "HELD",
    "STARTED",
    "STEPPED_BACK",
    "WARMED",
    "Caps",
    "LaneState",
    "Plan",
    "cap_of",
    "counted",
    "day_of",
    "day_start",
    "hold_delay",
    "judge",
    "roll",
]

STARTED = "started"  # the first day of the plan
ADVANCED = "advancing"
HELD = "held"
STEPPED_BACK = "stepped back"
WARMED = "warmed"

COUNTS = ("delivered", "deferred", "bounced", "complained")
HOLD_SPREAD = 300.0  # seconds over which mail held for the next day comes back


@dataclass(frozen=True, slots=True)
class Plan:
    """A warm-up plan, its time zone resolved."""

    name: str
    daily: tuple[int, ...]
    max_deferral_rate: float = 0.05
    max_bounce_rate: float = 0.02
    max_complaint_rate: float = 0.001
    severe_factor: float = 2.0
    min_volume: int = 100
    tz: datetime.tzinfo = datetime.UTC

    @classmethod
    def of(cls, name: str, section: WarmupPlan, tz: datetime.tzinfo) -> Plan:
        return cls(
            name,
            tuple(section.daily),
            section.max_deferral_rate,
            section.max_bounce_rate,
            section.max_complaint_rate,
            section.severe_factor,
            section.min_volume,
            tz,
        )


class LaneState(msgspec.Struct, frozen=True, array_like=True):
    """The durable warm-up state of one (source, provider).

    ``day`` is the day the counts are of (:func:`day_of`); ``since``, the day the current
    step began; ``state`` and ``why``: the last verdict and its reason.
    """

    plan: str
    step: int = 0
    day: int = 0
    since: int = 0
    sent: int = 0
    delivered: int = 0
    deferred: int = 0
    bounced: int = 0
    complained: int = 0
    state: str = STARTED
    why: str = ""


def day_of(now: float, tz: datetime.tzinfo = datetime.UTC) -> int:
    """The calendar day of ``now`` in ``tz``, as a day number (proleptic ordinal)."""
    return datetime.datetime.fromtimestamp(now, tz).date().toordinal()


def day_start(day: int, tz: datetime.tzinfo = datetime.UTC) -> float:
    """When day number ``day`` begins in ``tz`` (seconds since the epoch)."""
    date = datetime.date.fromordinal(day)
    return datetime.datetime(date.year, date.month, date.day, tzinfo=tz).timestamp()


def cap_of(state: LaneState, plan: Plan) -> int | None:
    """Messages the lane may send in its day; None: warmed, no cap."""
    if state.state == WARMED:
        return None
    return plan.daily[min(state.step, len(plan.daily) - 1)]


def _rate(n: int, of: int) -> float:
    return n / of if of else 0.0


def judge(state: LaneState, plan: Plan) -> tuple[str, str]:
    """The verdict on the day ``state`` counted: (ADVANCED | HELD | STEPPED_BACK, why)."""
    cap = cap_of(state, plan)
    if cap is None:
        return WARMED, ""
    need = min(plan.min_volume, cap)
    if state.sent < need or state.sent == 0:
        return HELD, f"too few messages to judge: {state.sent} of {max(need, 1)}"
    rates = (
        ("deferral", _rate(state.deferred, state.sent), plan.max_deferral_rate),
        ("bounce", _rate(state.bounced, state.sent), plan.max_bounce_rate),
        ("complaint", _rate(state.complained, state.sent), plan.max_complaint_rate),
    )
    for name, rate, limit in rates:
        if rate > limit * plan.severe_factor:
            return STEPPED_BACK, f"{name} rate {rate:.2%} above {limit * plan.severe_factor:.2%}"
    for name, rate, limit in rates:
        if rate > limit:
            return HELD, f"{name} rate {rate:.2%} above {limit:.2%}"
    return ADVANCED, ""


def roll(state: LaneState, plan: Plan, today: int) -> LaneState:
    """The lane's state on ``today``: unchanged if it counts today already; else the
    verdict on its day applied, counts zeroed. One step at most, however many days
    passed: a day without mail decides nothing."""
    if state.day >= today:
        return state
    verdict, why = judge(state, plan)
    step, since, label = state.step, state.since, verdict
    if verdict == ADVANCED:
        if step + 1 >= len(plan.daily):
            label, why = WARMED, f"passed the last step ({plan.daily[-1]} a day)"
        else:
            step, since = step + 1, today
    elif verdict == STEPPED_BACK and step > 0:
        step, since = step - 1, today
    return LaneState(plan.name, step, today, since, state=label, why=why)


def counted(state: LaneState, sent: int = 0, **outcomes: int) -> LaneState:
    """``state`` with ``sent`` more messages and more of each outcome (COUNTS)."""
    fields = {k: getattr(state, k) + n for k, n in outcomes.items() if n}
    return msgspec.structs.replace(state, sent=state.sent + sent, **fields)


def hold_delay(now: float, reopens: float, rng: random.Random) -> float:
    """Seconds until mail that found no source with room is due again: the next day's
    start, spread over up to :data:`HOLD_SPREAD` seconds so that it does not all come
    back at once."""
    return max(0.0, reopens - now) + rng.uniform(0.0, HOLD_SPREAD)


class _Lane:
    __slots__ = ("cap", "day", "pending", "sent")

    def __init__(self) -> None:
        self.day = -1
        self.cap: int | None = None
        self.sent = 0  # recorded today (as the durable state says)
        self.pending = 0  # picked, outcome not yet recorded


class Caps:
    """The daily caps of warming sources, as the sender sees them.

    ``load(source, provider)`` gives a lane's durable state (None: none yet). A lane is
    loaded and rolled when it first meets a day; :meth:`take` counts a message picked from
    a source, :meth:`recorded` moves it from pending to sent once its outcome is durable.
    Room is ``cap - sent - pending``: a message in flight at midnight counts on both sides
    until recorded, never on neither.
    """

    def __init__(
        self,
        plans: dict[str, Plan],
        warming: dict[str, str],
        load: Callable[[str, str], LaneState | None],
    ) -> None:
        self.plans = plans
        self.warming = warming  # source -> plan name
        self._load = load
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._any: dict[tuple[str, ...], bool] = {}

    @classmethod
    def from_config(
        cls,
        config: Config,
        load: Callable[[str, str], LaneState | None],
        zone: Callable[[str], datetime.tzinfo],
    ) -> Caps:
        plans = {n: Plan.of(n, p, zone(p.timezone)) for n, p in config.warmup.items()}
        return cls(plans, config.warming_sources(), load)

    def __bool__(self) -> bool:
        return bool(self.warming)

    def plan_of(self, source: str) -> Plan | None:
        name = self.warming.get(source)
        return None if name is None else self.plans[name]

    def _lane(self, source: str, provider: str, now: float) -> tuple[_Lane, Plan] | None:
        plan = self.plan_of(source)
        if plan is None:
            return None
        lane = self._lanes.get((source, provider))
        if lane is None:
            lane = self._lanes[(source, provider)] = _Lane()
        today = day_of(now, plan.tz)
        if lane.day != today:
            state = self._load(source, provider)
            if state is None or state.plan != plan.name:
                state = LaneState(plan.name, day=today, since=today)
            state = roll(state, plan, today)
            lane.day, lane.cap, lane.sent = today, cap_of(state, plan), state.sent
        return lane, plan

    def room(self, source: str, provider: str, now: float) -> int | None:
        """Messages ``source`` may still send to ``provider`` today; None: no cap."""
        found = self._lane(source, provider, now)
        if found is None or found[0].cap is None:
            return None
        lane = found[0]
        return max(0, lane.cap - lane.sent - lane.pending)

    def full(self, sources: Iterable[str], provider: str, now: float) -> frozenset[str]:
        """The warming sources among ``sources`` with no room left today for ``provider``."""
        key = tuple(sources)
        if not self._any.setdefault(key, any(s in self.warming for s in key)):
            return frozenset()
        return frozenset(s for s in key if self.room(s, provider, now) == 0)

    def reopens(self, sources: Iterable[str], provider: str, now: float) -> float:
        """When the first of ``sources`` gets room again: the next day's start in its
        plan's time zone (``now`` for a source that is not warming)."""
        when = []
        for s in sources:
            plan = self.plan_of(s)
            when.append(now if plan is None else day_start(day_of(now, plan.tz) + 1, plan.tz))
        return min(when, default=now)

    def lanes(self) -> list[tuple[str, str, int | None, int]]:
        """(source, provider, today's cap or None when warmed, used today incl. in flight)
        of every lane met so far, as of the day each was last asked about."""
        return [(s, p, x.cap, x.sent + x.pending) for (s, p), x in list(self._lanes.items())]

    def take(self, source: str, provider: str, now: float) -> None:
        """A message to ``provider`` was picked to go from ``source``."""
        found = self._lane(source, provider, now)
        if found is not None:
            found[0].pending += 1

    def recorded(self, source: str, provider: str, n: int, now: float) -> None:
        """``n`` picked messages' outcomes are durable (counted in the lane's state)."""
        found = self._lane(source, provider, now)
        if found is not None:
            lane = found[0]
            lane.pending = max(0, lane.pending - n)
            lane.sent += n
