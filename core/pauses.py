"""Operator pauses and cancels: what is stopped, until when, and the checks the policy asks.

A pause stops one scope: a ``provider`` (salvo.core.providers' name), a ``tenant``, a
``campaign`` (by name, in every tenant), or a ``source`` address (its lanes take no new
messages). It lasts ``until`` a time, or until resumed (``until`` 0). A cancel ends every
waiting recipient of a campaign or a tenant that was submitted before it (``when``).

The durable form is one LMDB record per entry (:meth:`salvo.core.spool.Spool.set_pause`);
the in-memory form is a :class:`Pauses` value, asked by the policy with the time passed in.
Pure: no clock, no I/O.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable

import msgspec

__all__ = [
    "CANCEL_SCOPES",
    "MAX_NAME",
    "SCOPES",
    "Pause",
    "PauseError",
    "Pauses",
    "check",
    "control_body",
    "parse_for",
    "pause_key",
]

SCOPES = ("provider", "tenant", "campaign", "source")
CANCEL_SCOPES = ("campaign", "tenant")
MAX_NAME = 200
PAUSE = "pause"
CANCEL = "cancel"
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*", re.IGNORECASE)
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
MAX_FOR = 366 * 86400.0


class PauseError(ValueError):
    """A pause or cancel that cannot be made: unknown scope, bad name or duration."""


class Pause(msgspec.Struct, frozen=True, array_like=True):
    """One entry: ``kind`` pause or cancel; ``until`` 0 means until resumed; ``when``:
    when it was made; ``reason``: free text (who or what made it)."""

    kind: str
    scope: str
    name: str
    until: float
    reason: str
    when: float

    def open_ended(self) -> bool:
        return self.until <= 0

    def left(self, now: float) -> float:
        """Seconds it still holds (inf until resumed, 0 once over)."""
        if self.until <= 0:
            return math.inf
        return max(0.0, self.until - now)

    def as_json(self) -> dict:
        return {
            "scope": self.scope,
            "name": self.name,
            "until": self.until or None,
            "reason": self.reason,
            "since": self.when,
        }


ENC = msgspec.msgpack.Encoder()
DEC = msgspec.msgpack.Decoder(Pause)


def pause_key(kind: str, scope: str, name: str) -> bytes:
    return f"{kind}\0{scope}\0{name}".encode()


def check(scope: str, name: str, scopes: tuple[str, ...] = SCOPES) -> None:
    """Raise :class:`PauseError` for a scope not in ``scopes`` or an unusable name."""
    if scope not in scopes:
        raise PauseError(f"unknown scope {scope!r}: one of {', '.join(scopes)}")
    if not isinstance(name, str) or not name:
        raise PauseError("name is required")
    if len(name) > MAX_NAME or not name.isprintable():
        raise PauseError(f"name must be at most {MAX_NAME} printable characters")


def control_body(body: bytes) -> dict:
    """The JSON object of a pause, resume or cancel call, with ``scope`` and ``name``
    strings; raises :class:`PauseError` for anything else (nesting too deep included)."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PauseError(f"the body is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise PauseError("the body must be a JSON object")
    for field in ("scope", "name"):
        if not isinstance(obj.get(field), str) or not obj[field]:
            raise PauseError(f"{field!r} (a string) is required")
    return obj


def parse_for(text: str | None) -> float | None:
    """``"2h"``, ``"90m"``, ``"30"`` (seconds) -> seconds; None or "" -> None (until
    resumed). Raises :class:`PauseError` for anything else, zero, or more than a year."""
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        raise PauseError('\'for\' must be a duration such as "2h" or "30m"')
    match = _DURATION.fullmatch(text)
    if match is None:
        raise PauseError(f'\'for\' {text!r} is not a duration such as "2h" or "30m"')
    seconds = float(match.group(1)) * _UNIT[(match.group(2) or "s").lower()]
    if not 0 < seconds <= MAX_FOR:
        raise PauseError(f"'for' {text!r} must be more than 0 and at most a year")
    return seconds


class Pauses:
    """The entries in effect: pauses by (scope, name), cancels by (scope, name)."""

    __slots__ = ("cancels", "pauses")

    def __init__(self, entries: Iterable[Pause] = ()) -> None:
        self.pauses: dict[tuple[str, str], Pause] = {}
        self.cancels: dict[tuple[str, str], Pause] = {}
        for entry in entries:
            self.add(entry)

    def add(self, entry: Pause) -> None:
        table = self.cancels if entry.kind == CANCEL else self.pauses
        table[(entry.scope, entry.name)] = entry

    def remove(self, scope: str, name: str) -> Pause | None:
        return self.pauses.pop((scope, name), None)

    def active(self, now: float) -> list[Pause]:
        """The pauses still in effect at ``now``, sorted by scope and name."""
        return sorted(
            (p for p in self.pauses.values() if p.left(now) > 0), key=lambda p: (p.scope, p.name)
        )

    def expired(self, now: float) -> list[Pause]:
        """Timed pauses that ended by ``now`` (to be dropped from the store)."""
        return [p for p in self.pauses.values() if p.left(now) <= 0]

    def _left(self, scope: str, name: str | None, now: float) -> float:
        if not name and scope != "campaign":
            return 0.0
        entry = self.pauses.get((scope, name or ""))
        return 0.0 if entry is None else entry.left(now)

    def paused_for(
        self, provider: str | None, tenant: str, campaign: str, now: float
    ) -> tuple[float, str]:
        """Seconds a recipient of this provider (None: not known yet), tenant and campaign
        must wait (inf: until resumed; 0: not paused), and the scope that holds it
        longest (``"campaign C"``), for the hand-back's text."""
        if not self.pauses:
            return 0.0, ""
        best, what = 0.0, ""
        for scope, name in (("tenant", tenant), ("campaign", campaign), ("provider", provider)):
            if scope == "campaign" and not campaign:
                continue
            left = self._left(scope, name, now)
            if left > best:
                best, what = left, f"{scope} {name}"
        return best, what

    def source_paused(self, source: str, now: float) -> bool:
        return self._left("source", source, now) > 0

    def cancelled(self, tenant: str, campaign: str, submitted: float) -> bool:
        """Whether a job of this tenant and campaign, submitted at ``submitted``, was
        cancelled (a cancel covers the jobs submitted before it, not later ones)."""
        if not self.cancels:
            return False
        for key in (("tenant", tenant), ("campaign", campaign)):
            entry = self.cancels.get(key)
            if entry is not None and key[1] and submitted <= entry.when:
                return True
        return False
