"""The retry schedule: when a deferred recipient is tried again.

Exponential backoff with jitter, near Postfix's defaults: the first retry after
``first`` (5 minutes), each later one twice as far, capped at ``cap`` (1 hour). The jitter
(+-``jitter`` of the delay) spreads a burst of deferrals from one provider over time, so
that their retries do not arrive as a storm. A recipient held back because its
destination is paused (docs/delivery.md, dead destinations) is due again when the pause
ends instead, spread a little (:func:`after_pause`). Pure: time and randomness are passed
in (``rng``; without one, the host's generator, :data:`salvo.core.host.rng`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from salvo.core import host

if TYPE_CHECKING:
    import random


def retry_delay(
    attempts: int,
    *,
    first: float = 300.0,
    cap: float = 3600.0,
    jitter: float = 0.2,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1 for the first)."""
    attempts = max(1, attempts)
    # 2**n overflows float for large n; the cap is reached long before n = 60.
    delay = min(cap, first * 2.0 ** min(attempts - 1, 60))
    spread = (rng or host.rng).uniform(-jitter, jitter) if jitter else 0.0
    return max(0.0, delay * (1.0 + spread))


def next_attempt(
    now: float, attempts: int, *, first: float, cap: float, rng: random.Random | None = None
) -> float:
    """The time of the next attempt after ``attempts`` failures, from ``now``."""
    return now + retry_delay(attempts, first=first, cap=cap, rng=rng)


def after_pause(
    left: float,
    *,
    spread: float = 0.1,
    floor: float = 1.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds until a recipient held back by a pause with ``left`` seconds to run is due
    again: the pause's end, plus up to ``spread`` of ``left`` (at least up to ``floor``
    seconds), so that what one pause held back does not all come back in one instant."""
    left = max(0.0, left)
    return left + (rng or host.rng).uniform(0.0, max(floor, spread * left))
