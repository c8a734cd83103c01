"""Warm-up gated by results (docs/warmup.md): the rule, its durable state in a real
spool, and a simulated month of sending with injected time."""

from __future__ import annotations

import collections
import datetime
import itertools
import zoneinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from salvo.core.config import ConfigError, parse_config
from salvo.core.policy import SourcePicker
from salvo.core.spool import Spool
from salvo.core.warmup import (
    ADVANCED,
    HELD,
    STEPPED_BACK,
    WARMED,
    Caps,
    LaneState,
    Plan,
    cap_of,
    day_of,
    day_start,
    judge,
    roll,
)

DAY = 86400.0
T0 = datetime.datetime(2025, 3, 1, tzinfo=datetime.UTC).timestamp()
PLAN = Plan("new-ips", (50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000))


def state(step: int = 0, sent: int = 0, **counts: int) -> LaneState:
    d = day_of(T0)
    return LaneState("new-ips", step=step, day=d, since=d, sent=sent, **counts)


# -- the rule -------------------------------------------------------------------------------


def test_a_clean_day_advances_one_step():
    today = day_of(T0) + 1
    rolled = roll(state(0, 50, delivered=50), PLAN, today)
    assert (rolled.step, rolled.state, rolled.day, rolled.sent) == (1, ADVANCED, today, 0)
    assert cap_of(rolled, PLAN) == 100


def test_a_breach_holds_and_a_severe_one_steps_back():
    today = day_of(T0) + 1
    held = roll(state(3, 500, delivered=470, deferred=30), PLAN, today)
    assert (held.step, held.state) == (3, HELD)
    assert "deferral rate 6.00% above 5.00%" in held.why
    back = roll(state(3, 500, delivered=440, deferred=60), PLAN, today)
    assert (back.step, back.state) == (2, STEPPED_BACK)
    assert roll(state(0, 50, bounced=5), PLAN, today).step == 0  # never below the first


def test_too_few_messages_decide_nothing():
    today = day_of(T0) + 1
    few = roll(state(4, 30, delivered=30), PLAN, today)
    assert (few.step, few.state) == (4, HELD)
    assert "too few" in few.why
    # A small step needs no more than its cap.
    assert roll(state(0, 50, delivered=50), PLAN, today).state == ADVANCED


def test_the_last_clean_step_ends_the_warm_up():
    today = day_of(T0) + 1
    done = roll(state(9, 50000, delivered=50000), PLAN, today)
    assert done.state == WARMED and cap_of(done, PLAN) is None
    assert roll(done, PLAN, today + 1).state == WARMED


def test_a_rolled_state_is_not_rolled_again_the_same_day():
    s = state(2, 250, delivered=250)
    assert roll(s, PLAN, s.day) is s
    today = s.day + 3  # days without mail between: still one step
    assert roll(s, PLAN, today).step == 3


def test_days_follow_the_plans_time_zone():
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    d = day_of(T0, berlin)
    for day in range(d, d + 400):  # across both DST changes
        assert day_of(day_start(day, berlin), berlin) == day
        assert day_of(day_start(day + 1, berlin) - 1, berlin) == day
    # 23:30 UTC on 1 March is already 2 March in Berlin.
    assert day_of(T0 + 23.5 * 3600, berlin) == day_of(T0, datetime.UTC) + 1


rates = st.integers(0, 1000)


@settings(max_examples=300, deadline=None)
@given(
    step=st.integers(0, 9),
    sent=st.integers(0, 60000),
    deferred=rates,
    bounced=rates,
    complained=rates,
    gap=st.integers(0, 40),
    min_volume=st.integers(0, 500),
    severe=st.floats(1.0, 5.0),
)
def test_the_rule_moves_at_most_one_step_and_only_for_its_reasons(
    step, sent, deferred, bounced, complained, gap, min_volume, severe
):
    plan = Plan("p", PLAN.daily, min_volume=min_volume, severe_factor=severe)
    s = LaneState("p", step, 100, 90, sent, 0, deferred, bounced, complained)
    today = 100 + gap
    out = roll(s, plan, today)
    if gap == 0:
        assert out == s
        return
    assert out.day == today and out.sent == out.deferred == out.bounced == 0
    assert roll(out, plan, today) == out
    assert out.step in (step - 1, step, step + 1) and 0 <= out.step < len(plan.daily)
    verdict, _ = judge(s, plan)
    limits = (
        (deferred, plan.max_deferral_rate),
        (bounced, plan.max_bounce_rate),
        (complained, plan.max_complaint_rate),
    )
    enough = sent > 0 and sent >= min(min_volume, plan.daily[step])
    if out.step > step or out.state == WARMED:
        assert enough and all(n / sent <= limit for n, limit in limits)
    if out.step < step:
        assert verdict == STEPPED_BACK and any(n / sent > limit * severe for n, limit in limits)
    if not enough:
        assert out.step == step and out.state == HELD


# -- config ---------------------------------------------------------------------------------

CONFIG = """
[warmup.new-ips]
daily = [5, 10]
[pools.default]
sources = ["127.0.0.2", "127.0.0.3"]
warmup = { "127.0.0.3" = "new-ips" }
"""


def test_config_names_its_plans_and_sources():
    config = parse_config(CONFIG)
    assert config.warming_sources() == {"127.0.0.3": "new-ips"}
    assert config.warmup["new-ips"].daily == [5, 10]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('"127.0.0.3" = "new-ips"', '"127.0.0.9" = "new-ips"'), "is not one of the pool's"),
        (('"127.0.0.3" = "new-ips"', '"127.0.0.3" = "old"'), "no [warmup.old] plan"),
        (("daily = [5, 10]", "daily = []"), "daily: one cap"),
        (("daily = [5, 10]", "daily = [5, 0]"), "daily: one cap"),
        (("daily = [5, 10]", "daily = [5]\nmax_bounce_rate = 2"), "max_bounce_rate"),
        (("daily = [5, 10]", 'daily = [5]\ntimezone = "Mars/Olympus"'), "timezone"),
        (("daily = [5, 10]", "daily = [5]\nseverity = 2"), "unknown key"),
    ],
)
def test_bad_warmup_config_is_refused_by_name(change, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_config(CONFIG.replace(*change))


# -- durable state --------------------------------------------------------------------------


def test_counts_are_durable_and_rolled_in_the_recording_transaction(tmp_path):
    plans = {"new-ips": PLAN}
    warming = {"W": "new-ips"}
    spool = Spool.open(tmp_path / "data")
    try:
        counts = [("W", "gmail", "delivered")] * 48 + [("W", "gmail", "deferred")] * 2
        counts += [("O", "gmail", "delivered")] * 7  # not warming: not counted
        spool.store.write(lambda txn: spool.warmup.count_in(txn, counts, warming, plans, T0))
    finally:
        spool.close()
    spool = Spool.open(tmp_path / "data")
    try:
        s = spool.warmup.get("W", "gmail")
        assert (s.sent, s.delivered, s.deferred, s.step) == (50, 48, 2, 0)
        assert spool.warmup.get("O", "gmail") is None
        # The next day's first outcome rolls the lane (4% deferred: advances) first.
        one = [("W", "gmail", "delivered")]
        spool.store.write(lambda txn: spool.warmup.count_in(txn, one, warming, plans, T0 + DAY))
        s = spool.warmup.get("W", "gmail")
        assert (s.step, s.state, s.sent, s.delivered) == (1, ADVANCED, 1, 1)
        caps = Caps(plans, warming, spool.warmup.get)
        assert caps.room("W", "gmail", T0 + DAY) == 99
        assert caps.room("O", "gmail", T0 + DAY) is None
    finally:
        spool.close()


# -- a simulated month ----------------------------------------------------------------------


class Month:
    """A month of sending through a pool with injected time: each day ``demand`` new
    messages per provider; a provider defers what a warming source sends above its hidden
    daily rate; deferred mail is retried the next hour. State lives in a real spool."""

    def __init__(self, tmp_path, sources, warming, hidden, demand, plan=PLAN):
        self.spool = Spool.open(tmp_path / "data")
        self.plans = {plan.name: plan}
        self.plan = plan
        self.warming = warming
        self.caps = Caps(self.plans, warming, self.spool.warmup.get)
        self.sources = sources
        self.picker = SourcePicker(sources)
        self.hidden = hidden
        self.demand = demand
        self.queue: list[tuple[float, int, str]] = []  # (due, id, provider)
        self.next_id = 0
        self.delivered: set[int] = set()
        self.submitted = 0
        self.sent = collections.Counter()  # (day, source, provider) -> messages sent
        self.caps_seen: dict[tuple[int, str], int | None] = {}
        self.held = collections.Counter()  # (day, provider) -> hand-backs

    def close(self):
        self.spool.close()

    def run(self, days: int, new_days: int) -> None:
        for d in range(days):
            day0 = T0 + d * DAY
            if d < new_days:
                for provider in self.hidden:
                    for _ in range(self.demand):
                        self.queue.append((day0, self.next_id, provider))
                        self.next_id += 1
                        self.submitted += 1
            for hour in range(24):
                self.tick(day0 + hour * 3600)

    def tick(self, now: float) -> None:
        day = day_of(now)
        due = [m for m in self.queue if m[0] <= now]
        self.queue = [m for m in self.queue if m[0] > now]
        outcomes = []
        for _, mid, provider in due:
            for s in self.warming:
                self.caps_seen.setdefault((day, provider), self.caps.room(s, provider, now))
            full = self.caps.full(self.sources, provider, now)
            if full.issuperset(self.sources):
                reopens = self.caps.reopens(self.sources, provider, now)
                self.queue.append((reopens, mid, provider))
                self.held[(day, provider)] += 1
                continue
            source = self.picker.next(full)
            self.caps.take(source, provider, now)
            self.sent[(day, source, provider)] += 1
            n = self.sent[(day, source, provider)]
            if source in self.warming and n > self.hidden[provider]:
                outcomes.append((source, provider, "deferred"))
                self.queue.append((now + 3600, mid, provider))
            else:
                outcomes.append((source, provider, "delivered"))
                self.delivered.add(mid)
        warmup = self.spool.warmup
        self.spool.store.write(
            lambda txn: warmup.count_in(txn, outcomes, self.warming, self.plans, now)
        )
        for (source, provider), n in collections.Counter(o[:2] for o in outcomes).items():
            self.caps.recorded(source, provider, n, now)


def test_a_month_of_warm_up_follows_the_plan_and_loses_nothing(tmp_path):
    # gmail takes 470 a day from the new address: at the 500 step it defers 6% (above 5%,
    # under the severe 10%): the plan must hold there. yahoo takes all: it must advance.
    month = Month(
        tmp_path, ["W", "O"], {"W": "new-ips"}, hidden={"gmail": 470, "yahoo": 10**9}, demand=1000
    )
    try:
        month.run(days=30, new_days=28)
        first = day_of(T0)
        # No day exceeds the plan's cap for that day (the cap the lane had at day start).
        steps = _steps(month, "gmail", first, 30)
        for d in range(30):
            cap = PLAN.daily[steps[d]] if steps[d] is not None else None
            n = month.sent[(first + d, "W", "gmail")]
            assert cap is None or n <= cap, (d, n, cap)
        # gmail: 50, 100, 250, 500, then held at 500 (6% deferred each day from then).
        assert [PLAN.daily[s] for s in steps[:6]] == [50, 100, 250, 500, 500, 500]
        breach = next(
            d for d in range(30) if month.sent[(first + d, "W", "gmail")] > month.hidden["gmail"]
        )
        lane = month.spool.warmup.get("W", "gmail")
        assert lane.step == 3 and lane.state == HELD and "deferral rate" in lane.why
        assert steps[breach + 1] == steps[breach]
        # yahoo advances one step a day, never faster; W never sends more than the cap.
        ysteps = _steps(month, "yahoo", first, 30)
        pairs = [(a, b) for a, b in itertools.pairwise(ysteps) if a is not None and b is not None]
        assert ysteps[:5] == [0, 1, 2, 3, 4] and all(b - a in (0, 1) for a, b in pairs)
        assert month.spool.warmup.get("W", "yahoo").state == WARMED
        assert max(month.sent[(first + d, "W", "yahoo")] for d in range(30)) <= 1000
        # Nothing lost: every message delivered, through W or O, by the end.
        assert len(month.delivered) == month.submitted == 56000
        assert not month.queue
    finally:
        month.close()


def _steps(month: Month, provider: str, first: int, days: int) -> list[int | None]:
    """The step each day started with, as the lane's rule gives it (None: warmed)."""
    # The room seen at a day's first message is the day's whole cap.
    caps = [month.caps_seen.get((first + d, provider)) for d in range(days)]
    return [None if cap is None else month.plan.daily.index(cap) for cap in caps]


def test_with_only_a_warming_source_mail_waits_for_the_next_days(tmp_path):
    plan = Plan("small", (5, 10, 20), min_volume=5)
    month = Month(tmp_path, ["W"], {"W": "small"}, hidden={"gmail": 10**9}, demand=40, plan=plan)
    try:
        month.run(days=6, new_days=1)
        first = day_of(T0)
        per_day = [month.sent[(first + d, "W", "gmail")] for d in range(6)]
        assert per_day[:3] == [5, 10, 20] and sum(per_day) == 40
        assert month.held[(first, "gmail")] == 35  # handed back, not dropped
        assert len(month.delivered) == 40 and not month.queue
    finally:
        month.close()
