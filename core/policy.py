"""The sending policy: which recipient goes next, when, from where, and what an outcome means.

Every decision of the scheduler (salvo.actors.scheduler) and the delivery engine
(salvo.actors.delivery) is a pure function here, of values they pass in: the time as
``now``, randomness as ``rng``. The actors only wire these decisions to spool
transactions, signers and SMTP connections. Read it in the order of a recipient's life
(Postfix documents its queue manager the same way, in SCHEDULER_README):

1. **Next.** The spool hands out due recipients oldest first (its due index is ordered by
   next-attempt time), at most :func:`claim_room` at a time: the node holds at most
   ``[delivery] max_ready`` recipients in flight, the rest waits on disk (Postfix's small
   active queue over large on-disk queues).
2. **Held back.** A claimed recipient whose provider is already known is checked before
   any CPU goes into rendering and signing it (:func:`hold_back`): a provider whose every
   lane is paused after failed connections (a dead destination) gets it back unsigned,
   due when the pause ends; a provider at its :func:`share` of ``max_ready`` gets it back
   due in :data:`HANDBACK_DELAY`, so that one slow provider cannot fill the node while
   other providers' mail waits on disk. A recipient of a provider, tenant or campaign that
   the operator paused (salvo.core.pauses) goes back the same way (:func:`operator_hold`),
   before its provider is even known: due when a timed pause ends (spread as after a dead
   destination's pause), or in :data:`PAUSE_RECHECK` seconds, with jitter, while the pause
   lasts until resumed; no event is written for a hand-back. Resuming makes what the pause
   held back due again, spread over :func:`resume_window` with the rng, so that the claim
   loop and the provider's limits (its shaping, its share of ``max_ready``) pace it
   instead of one instant's burst. A cancelled campaign or tenant ends its claimed
   recipients ``cancelled`` instead of sending them.
3. **From where.** A pool's source addresses take turns by smooth weighted round robin
   (:class:`SourcePicker`); a source the operator paused sits out its turns
   (:meth:`SourcePicker.next`). Each (source, provider) lane has its own limits
   (salvo.core.shaping).
4. **After a transaction** (:func:`after_transaction`): delivered or permanently refused,
   the outcome is the recipient's; a soft failure of the host or the connection sends the
   message to its next MX host; a 421 that ends a session which had delivered (a server's
   per-connection limit) puts it first in line again, since nothing of it was delivered;
   anything else is reported. Temporary replies that look like throttling halve the lane's
   limits (:func:`throttles`).
5. **After a failed connection** (:func:`after_failed_connect`): while the lane has other
   connections open, a refusal is a throttle, not an outage: the message goes first in line
   again, deferred only after :data:`MAX_REFUSED` refusals in a row. When the lane's last
   connection fails, the destination is dead: the lane pauses, and this message and every
   one queued behind it are deferred with a retry hint, the pause's end.
6. **When again** (:func:`deferred_until`): exponential backoff with jitter from the
   traffic class's ``first_retry`` up to ``max_retry`` (:func:`retry_delay`, near Postfix's
   defaults), never before the retry hint of a paused lane (:func:`after_pause`, which
   spreads what one pause held back).
7. **Recorded** (:func:`spool_outcome`): delivered, bounced, failed (the message could
   not be made: no destination's verdict, counted apart from bounces), or deferred with its
   next attempt; the spool turns a deferral past the recipient's expiry into ``expired``.
   Outcomes gather for :data:`OUTCOME_WINDOW` before their commit: a commit has a fixed
   cost, and the window bounds how long a delivered recipient can stay unrecorded (the
   duplicate window after a crash, docs/spool.md).
8. **Suppressed** (:func:`suppresses`): only a remote server's permanent reply that the
   feedback classifier calls hard (the address itself is bad: no such user or domain, moved)
   adds the address to the suppression list, the same rule as for a bounce that comes back
   later by mail; a local verdict (DNS, a template) never does, since a broken resolver must
   not poison the list.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from salvo.core import host
from salvo.core.providers import Provider
from salvo.core.shaping import is_throttle
from salvo.core.smtp import Outcome, Status
from salvo.core.spool import Outcome as SpoolOutcome

if TYPE_CHECKING:
    import random
    import re

__all__ = [
    "HANDBACK_DELAY",
    "MAX_REFUSED",
    "OUTCOME_WINDOW",
    "PAUSE_RECHECK",
    "SHARE_HORIZON",
    "HoldBack",
    "Next",
    "SourcePicker",
    "after_failed_connect",
    "after_pause",
    "after_transaction",
    "claim_room",
    "deferred_until",
    "hold_back",
    "operator_hold",
    "resume_window",
    "retry_delay",
    "share",
    "spool_outcome",
    "suppresses",
    "throttles",
]

HANDBACK_DELAY = 5.0  # seconds: a recipient of a provider at its share is due again then
SHARE_HORIZON = 30.0  # seconds of a rate-limited provider's rate that may be in flight
MAX_REFUSED = 3  # refused connections in a row after which a message is deferred
OUTCOME_WINDOW = 0.01  # seconds outcomes gather before their spool commit
PAUSE_RECHECK = 60.0  # seconds: a recipient held by a pause until resumed is due again then
RESUME_RATE = 2000.0  # recipients per second that a resume makes due at most
RESUME_MAX_WINDOW = 60.0  # seconds: the longest window a resume spreads a backlog over


# -- 1. next ------------------------------------------------------------------------------


def claim_room(max_ready: int, in_flight: int, batch: int) -> int:
    """How many due recipients to claim now: up to ``batch``, within ``max_ready``."""
    return max(0, min(max_ready - in_flight, batch))


# -- 2. held back -------------------------------------------------------------------------


def share(provider: Provider, max_ready: int, batch: int, rate: float = math.inf) -> int:
    """How many recipients of ``provider`` may be in flight at once.

    Its configured ``max_ready`` if any. A provider without a message rate limit may use
    all of the node's ``max_ready``: a cap below it would only stall the queue (what is
    handed back waits :data:`HANDBACK_DELAY` while the provider idles). A rate-limited one
    gets about :data:`SHARE_HORIZON` seconds of its rate (at least a batch per connection,
    at most half the node), so that it cannot fill the node with messages that wait for
    tokens while other providers' mail waits on disk. ``rate``: the messages per second
    its lanes allow now (salvo.core.adaptive), when lower than the configured one.
    """
    if provider.max_ready:
        return provider.max_ready
    limits = provider.limits
    configured = limits.max_messages_per_second or limits.max_messages_per_hour / 3600
    rate = min(configured or math.inf, rate)
    if math.isinf(rate):
        rate = 0.0
    if not rate:
        return max_ready
    soon = max(rate * SHARE_HORIZON, limits.max_connections * batch)
    return max(1, min(max_ready // 2, int(soon)))


@dataclass(frozen=True, slots=True)
class HoldBack:
    """A claimed recipient goes back to the spool unsigned: why, and in how many seconds it
    is due again."""

    reason: str
    delay: float


def hold_back(
    paused_for: float, in_flight: int, share: int, rng: random.Random | None = None
) -> HoldBack | None:
    """Whether a claimed recipient of a known provider goes back unsigned.

    ``paused_for``: seconds until the provider may be sent to again (every lane paused);
    ``in_flight``: its recipients in flight now; ``share``: :func:`share`.
    """
    if paused_for > 0:
        reason = f"paused for {paused_for:.0f} s after failed connections"
        return HoldBack(reason, after_pause(paused_for, rng=rng))
    if in_flight >= share:
        return HoldBack("at its share of max_ready", HANDBACK_DELAY)
    return None


def operator_hold(
    paused_for: float, what: str, rng: random.Random | None = None
) -> HoldBack | None:
    """Whether a claimed recipient goes back unsigned because the operator paused its
    provider, tenant or campaign. ``paused_for``: seconds left of the longest pause that
    covers it (salvo.core.pauses.Pauses.paused_for; inf until resumed), ``what`` names it.
    """
    if paused_for <= 0:
        return None
    if math.isinf(paused_for):
        delay = PAUSE_RECHECK * (1.0 + (rng or host.rng).uniform(0.0, 0.1))
        return HoldBack(f"paused by the operator: {what}", delay)
    return HoldBack(f"paused by the operator: {what}", after_pause(paused_for, rng=rng))


def resume_window(held: int) -> float:
    """Seconds over which a resume spreads the next attempts of ``held`` recipients: at
    most :data:`RESUME_RATE` a second, within :data:`RESUME_MAX_WINDOW` (what is left is
    paced by the claim loop and the provider's limits)."""
    return min(RESUME_MAX_WINDOW, max(0, held) / RESUME_RATE)


# -- 3. from where ------------------------------------------------------------------------


class SourcePicker:
    """Smooth weighted round robin (nginx's) over a pool's source addresses: each pick adds
    every weight to its current value, picks the largest and takes the total from it.
    Weights 2, 1 give a, b, a, a, b, a, ...: spread, never two bursts."""

    __slots__ = ("current", "sources", "total", "weights")

    def __init__(self, sources: list[str], weights: list[int] | None = None) -> None:
        self.sources = sources
        self.weights = list(weights) if weights else [1] * len(sources)
        self.current = [0] * len(sources)
        self.total = sum(self.weights)

    def next(self, paused: frozenset[str] = frozenset()) -> str | None:
        """The next source; sources in ``paused`` sit out (None when every one is)."""
        best = -1
        total = 0
        for i, weight in enumerate(self.weights):
            if self.sources[i] in paused:
                continue
            total += weight
            self.current[i] += weight
            if best < 0 or self.current[i] > self.current[best]:
                best = i
        if best < 0:
            return None
        self.current[best] -= total
        return self.sources[best]


# -- 4. and 5. after a transaction, after a failed connection -----------------------------


class Next(enum.Enum):
    """What the delivery engine does with a message after an attempt."""

    REPORT = "report"  # the outcome is the recipient's: hand it to the scheduler
    NEXT_HOST = "next host"  # the message's next MX host, on another connection
    AGAIN = "again"  # first in line again, on another connection: nothing of it was sent
    DEAD = "dead"  # the destination is dead: this and every queued message are deferred


def after_transaction(outcome: Outcome, tried: int, hosts: int, progress: bool) -> Next:
    """After one transaction: ``tried`` hosts of the message's ``hosts`` already failed
    softly; ``progress``: the session delivered something before this outcome."""
    if outcome.try_next_host and tried + 1 < hosts:
        return Next.NEXT_HOST
    if outcome.code == 421 and progress:
        # The server ended a session that had delivered (a per-connection limit) before
        # this transaction completed: the server takes mail, and another connection saves
        # a retry and a second signature. A 421 before any delivery means "later". Each
        # such session delivered something, so this cannot loop.
        return Next.AGAIN
    return Next.REPORT


def after_failed_connect(paused: float, refused: int) -> Next:
    """After a connection attempt that reached none of the message's hosts. ``paused``: the
    lane's pause that this failure started (0: other connections are open, so it was a
    refusal); ``refused``: refusals in a row for this message, this one included."""
    if paused > 0:
        return Next.DEAD
    return Next.AGAIN if refused < MAX_REFUSED else Next.REPORT


def throttles(
    outcome: Outcome | None, code: int | None, text: str, signatures: tuple[re.Pattern[str], ...]
) -> bool:
    """A reply that should halve the lane's limits: any 421, or a temporary reply matching
    the provider's throttling signatures (``outcome`` None: a connection-level reply)."""
    if outcome is not None and not outcome.is_temporary:
        return False
    return is_throttle(code, text, signatures)


# -- 6. when again ------------------------------------------------------------------------


def retry_delay(
    attempts: int,
    *,
    first: float = 300.0,
    cap: float = 3600.0,
    jitter: float = 0.2,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1 for the first): doubling
    from ``first`` up to ``cap``, +-``jitter`` of it, so that a burst of deferrals from one
    provider does not come back as a storm."""
    attempts = max(1, attempts)
    # 2**n overflows float for large n; the cap is reached long before n = 60.
    delay = min(cap, first * 2.0 ** min(attempts - 1, 60))
    spread = (rng or host.rng).uniform(-jitter, jitter) if jitter else 0.0
    return max(0.0, delay * (1.0 + spread))


def after_pause(
    left: float, *, spread: float = 0.1, floor: float = 1.0, rng: random.Random | None = None
) -> float:
    """Seconds until a recipient held back by a pause with ``left`` seconds to run is due
    again: the pause's end, plus up to ``spread`` of ``left`` (at least up to ``floor``
    seconds), so that what one pause held back does not all come back in one instant."""
    left = max(0.0, left)
    return left + (rng or host.rng).uniform(0.0, max(floor, spread * left))


def deferred_until(
    now: float,
    attempts: int,
    *,
    first: float,
    cap: float,
    retry_at: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """The next attempt of a recipient deferred for the ``attempts``-th time: the retry
    schedule, and never before ``retry_at`` (the pause of its lane, when it has one)."""
    when = now + retry_delay(attempts, first=first, cap=cap, rng=rng)
    return when if retry_at is None else max(when, retry_at)


# -- 7. recorded ----------------------------------------------------------------------------


def spool_outcome(
    seq: int,
    idx: int,
    outcome: Outcome,
    host_name: str,
    *,
    now: float,
    attempts: int,
    first_retry: float,
    max_retry: float,
    retry_at: float | None = None,
    rng: random.Random | None = None,
    source: str = "",
    provider: str = "",
) -> SpoolOutcome:
    """The spool record of one attempt's outcome; ``attempts``: this one included;
    ``source``, ``provider``: where it went out (kept with the attempt)."""
    common = {
        "seq": seq,
        "idx": idx,
        "code": outcome.code or 0,
        "enhanced": outcome.esc_text or "",
        "host": host_name,
        "text": outcome.text[:500],
        "source": source,
        "provider": provider,
    }
    if outcome.status is Status.DELIVERED:
        return SpoolOutcome(state="delivered", **common)
    if outcome.status is Status.BOUNCED:
        return SpoolOutcome(state="bounced", **common)
    if outcome.status is Status.FAILED:
        return SpoolOutcome(state="failed", **common)
    when = deferred_until(
        now, attempts, first=first_retry, cap=max_retry, retry_at=retry_at, rng=rng
    )
    return SpoolOutcome(state="deferred", next_attempt=when, **common)


# -- 8. suppressed --------------------------------------------------------------------------


def suppresses(state: str, code: int, hard: bool) -> bool:
    """Whether a recorded outcome adds the recipient to the suppression list: a remote
    server's permanent reply (a reply code, so not a local verdict) that says the address
    itself is bad (``hard``: the feedback classifier's userunknown, hostunknown, hasmoved,
    notaccept; salvo.core.feedback.reasons)."""
    return state == "bounced" and code >= 500 and hard
