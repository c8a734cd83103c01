"""Ingress quotas per tenant and per producer: recipients per hour and per day, jobs in
flight (docs/security.md, "Abuse prevention").

Pure: the time is passed in. Ingress asks :meth:`Quotas.take` for every job before it is
written; a job that fits gets a :class:`Ticket` (its recipients counted, one more job in
flight), which ingress gives back with :meth:`Quotas.release` once the job is answered.

Decisions, documented in docs/config.md:

- Windows are fixed and aligned to UTC: the clock hour and the UTC day. A new hour or day
  starts from zero (a tenant may send its hourly rate at 10:59 and again at 11:00).
- A job counts with its recipient count at intake (before suppression and the spool's
  per-recipient checks), so the quota bounds what producers may ask for; a job that was
  not queued at all (its reply is not ``accepted`` or ``partial``, or it is a duplicate)
  gives its recipients back, as long as its window is still the current one.
- Counters live in memory: a node restart resets the windows.
- The hour's rate exceeded: ``retry`` (try later, the text says when). The day's quota
  exceeded, or a job bigger than a whole window: ``rejected`` (quota spent; resubmitting
  the same job today cannot succeed). Too many jobs in flight: ``retry``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

HOUR = 3600
DAY = 86400

KINDS = ("hour", "day", "in_flight")  # the ``kind`` of a refusal (metrics label)


@dataclass(frozen=True)
class Limits:
    """The limits of one tenant or producer; None: unlimited."""

    per_hour: int | None = None
    per_day: int | None = None
    in_flight: int | None = None

    @property
    def unlimited(self) -> bool:
        return self.per_hour is None and self.per_day is None and self.in_flight is None


@dataclass(frozen=True)
class Refusal:
    """Why a job was refused: ``status`` ``retry`` or ``rejected``, and the reply text."""

    status: str
    kind: str  # hour, day or in_flight
    scope: str  # tenant or producer
    error: str


@dataclass
class _Usage:
    hour: int = -1  # the window index (now // HOUR) the count is for
    hour_count: int = 0
    day: int = -1
    day_count: int = 0
    in_flight: int = 0

    def roll(self, now: float) -> None:
        hour, day = int(now // HOUR), int(now // DAY)
        if hour != self.hour:
            self.hour, self.hour_count = hour, 0
        if day != self.day:
            self.day, self.day_count = day, 0


@dataclass
class Ticket:
    """A job's hold on the quotas: given back with :meth:`Quotas.release`."""

    recipients: int
    hour: int
    day: int
    usages: list[_Usage] = field(default_factory=list)
    released: bool = False


class Quotas:
    """The limits and usage of every tenant and producer that has limits."""

    def __init__(
        self,
        tenants: dict[str, Limits] | None = None,
        producers: dict[str, Limits] | None = None,
    ) -> None:
        tenants = dict(tenants or {})
        self._default = tenants.pop("default", Limits())
        self._tenants = tenants
        self._producers = dict(producers or {})
        # (scope, name) -> usage; only names with a limit get one.
        self._usage: dict[tuple[str, str], _Usage] = {}

    @property
    def active(self) -> bool:
        """Whether any limit is set (ingress skips the quotas when none is)."""
        return not (
            self._default.unlimited
            and all(x.unlimited for x in self._tenants.values())
            and all(x.unlimited for x in self._producers.values())
        )

    def limits(self, scope: str, name: str) -> Limits:
        if scope == "tenant":
            return self._tenants.get(name, self._default)
        return self._producers.get(name, Limits())

    def take(
        self, tenant: str, producer: str | None, recipients: int, now: float
    ) -> Ticket | Refusal:
        """Count a job of ``recipients`` for ``tenant`` (from ``producer``, the CURVE
        producer's name or None), or say why it may not go now."""
        scopes = [("tenant", tenant)]
        if producer is not None:
            scopes.append(("producer", producer))
        checked: list[tuple[_Usage, Limits]] = []
        for scope, name in scopes:
            limits = self.limits(scope, name)
            if limits.unlimited:
                continue
            usage = self._usage.get((scope, name))
            if usage is None:
                usage = self._usage[scope, name] = _Usage()
            usage.roll(now)
            refusal = _check(scope, name, limits, usage, recipients, now)
            if refusal is not None:
                return refusal
            checked.append((usage, limits))
        ticket = Ticket(recipients, int(now // HOUR), int(now // DAY))
        for usage, _ in checked:
            usage.hour_count += recipients
            usage.day_count += recipients
            usage.in_flight += 1
            ticket.usages.append(usage)
        return ticket

    def release(self, ticket: Ticket, *, queued: bool) -> None:
        """The job of ``ticket`` was answered; ``queued``: some of it was written (its
        recipients stay counted), else they are given back to windows still current."""
        if ticket.released:
            return
        ticket.released = True
        for usage in ticket.usages:
            usage.in_flight -= 1
            if not queued:
                if usage.hour == ticket.hour:
                    usage.hour_count -= ticket.recipients
                if usage.day == ticket.day:
                    usage.day_count -= ticket.recipients

    def usage(self, scope: str, name: str, now: float) -> tuple[int, int, int]:
        """(recipients this hour, recipients today, jobs in flight) of a tenant or producer."""
        usage = self._usage.get((scope, name))
        if usage is None:
            return (0, 0, 0)
        usage.roll(now)
        return (usage.hour_count, usage.day_count, usage.in_flight)


def _check(
    scope: str, name: str, limits: Limits, usage: _Usage, recipients: int, now: float
) -> Refusal | None:
    who = f"{scope} {name!r}"
    if limits.per_day is not None:
        if recipients > limits.per_day:
            return Refusal(
                "rejected",
                "day",
                scope,
                f"quota spent: the job's {recipients} recipients are more than {who}'s "
                f"daily quota of {limits.per_day}",
            )
        if usage.day_count + recipients > limits.per_day:
            left = max(0, limits.per_day - usage.day_count)
            return Refusal(
                "rejected",
                "day",
                scope,
                f"quota spent: {who} has {left} of its {limits.per_day} recipients per day "
                f"left and the job has {recipients}; the quota renews at "
                f"{_utc((usage.day + 1) * DAY)}",
            )
    if limits.per_hour is not None:
        if recipients > limits.per_hour:
            return Refusal(
                "rejected",
                "hour",
                scope,
                f"quota spent: the job's {recipients} recipients are more than {who}'s "
                f"hourly rate of {limits.per_hour}; split it into smaller jobs",
            )
        if usage.hour_count + recipients > limits.per_hour:
            renew = (usage.hour + 1) * HOUR
            return Refusal(
                "retry",
                "hour",
                scope,
                f"rate: {who} sent {usage.hour_count} of its {limits.per_hour} recipients "
                f"per hour; try again after {_utc(renew)} (in {int(renew - now) + 1} s)",
            )
    if limits.in_flight is not None and usage.in_flight >= limits.in_flight:
        return Refusal(
            "retry",
            "in_flight",
            scope,
            f"rate: {who} has {usage.in_flight} jobs in flight (its limit: "
            f"{limits.in_flight}); try again when replies come back",
        )
    return None


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
