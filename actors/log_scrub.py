"""Erased addresses out of the JSONL event logs, and the logs' retention by age.

A scrub request (salvo.core.erasure.ScrubRequest) holds the address's keyed hash, never
the address: every address-like token of a line is normalized (``casefold(local)@a-label``)
and hashed, and a line with a hit is rewritten: its ``recipient`` becomes
``erased@erased.invalid``, the address inside any text ``[erased]``. A file is rewritten
beside itself and renamed over the old one (fsynced first), so a crash leaves either.
Only the events actor (or ``salvo erase`` holding the data dir's lock) runs this: it owns
the files.
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

from salvo.core.address import normalize_domain
from salvo.core.erasure import PLACEHOLDER, ScrubRequest
from salvo.core.errors import InvalidAddressError
from salvo.core.spool_records import ERASED_ADDRESS
from salvo.core.suppression import address_hash

__all__ = ["HashMatcher", "expire_logs", "scrub_logs"]

_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff"
TOKEN = re.compile(
    rf"(?<![{_ATEXT}.])([{_ATEXT}]+(?:\.[{_ATEXT}]+)*)@"
    r"([A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\u0080-\U0010ffff.-]*[A-Za-z0-9\u0080-\U0010ffff])?)"
)


@functools.lru_cache(maxsize=65536)
def _domain(text: str) -> str | None:
    try:
        return normalize_domain(text)
    except InvalidAddressError:
        return None


class HashMatcher:
    """Finds the addresses of scrub requests in text by their keyed hash."""

    def __init__(self, secret: bytes, requests: Iterable[ScrubRequest]) -> None:
        self.secret = secret
        self.everywhere: set[bytes] = set()
        self.by_tenant: dict[str, set[bytes]] = {}
        for req in requests:
            if req.tenant:
                self.by_tenant.setdefault(req.tenant, set()).add(req.digest)
            else:
                self.everywhere.add(req.digest)

    def _hit(self, match: re.Match[str], tenant: str) -> bool:
        domain = _domain(match[2])
        if domain is None:
            return False
        digest = address_hash(self.secret, f"{match[1].casefold()}@{domain}")
        return digest in self.everywhere or digest in self.by_tenant.get(tenant, ())

    def scrub_line(self, line: bytes) -> bytes | None:
        """The line rewritten without the addresses, or None when it holds none."""
        text = line.decode("utf-8", "replace")
        if "@" not in text or not any(
            self._hit(m, t) for m in TOKEN.finditer(text) for t in self._tenants(text)
        ):
            return None
        try:
            event = json.loads(text)
        except ValueError:
            return TOKEN.sub(lambda m: PLACEHOLDER if self._hit(m, "") else m[0], text).encode()
        if not isinstance(event, dict):
            return None
        tenant = event.get("tenant", "") if isinstance(event.get("tenant"), str) else ""
        changed = False
        for name, value in event.items():
            if not isinstance(value, str) or "@" not in value:
                continue
            new = TOKEN.sub(lambda m: PLACEHOLDER if self._hit(m, tenant) else m[0], value)
            if new != value:
                event[name] = ERASED_ADDRESS if name == "recipient" else new
                changed = True
        if not changed:
            return None
        return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()

    def _tenants(self, text: str) -> list[str]:
        # A quick first look: tenant-scoped hashes need the line's tenant, read properly
        # in scrub_line; here any tenant with requests may be the line's.
        return ["", *self.by_tenant]


def scrub_file(path: Path, matcher: HashMatcher) -> int:
    """Rewrite one JSONL file without the matched addresses; returns lines changed."""
    changed = 0
    out = []
    with open(path, "rb") as f:
        for line in f:
            body = line.rstrip(b"\n")
            new = matcher.scrub_line(body)
            if new is not None:
                changed += 1
                body = new
            out.append(body + b"\n")
    if changed:
        tmp = path.with_name(path.name + ".scrub")
        with open(tmp, "wb") as f:
            f.writelines(out)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return changed


def log_files(folder: Path) -> list[Path]:
    """The event log files of a folder: rotated ones (oldest first), then the current."""
    files = sorted(folder.glob("events-*.jsonl"))
    current = folder / "events.jsonl"
    return [*files, current] if current.exists() else files


def scrub_logs(folder: Path, matcher: HashMatcher) -> tuple[int, int]:
    """Scrub every event log file of ``folder``: (files rewritten, lines changed)."""
    files = lines = 0
    if not folder.is_dir():
        return 0, 0
    for leftover in folder.glob("*.jsonl.scrub"):  # a scrub a crash interrupted
        leftover.unlink(missing_ok=True)
    for path in log_files(folder):
        n = scrub_file(path, matcher)
        files += n > 0
        lines += n
    return files, lines


def expire_logs(folder: Path, max_age: float, now: float | None = None) -> int:
    """Delete rotated event log files whose last line is older than ``max_age`` seconds
    (a rotated file is not written again: its modification time is its last line's)."""
    now = time.time() if now is None else now
    gone = 0
    for path in sorted(folder.glob("events-*.jsonl")):
        try:
            if now - path.stat().st_mtime > max_age:
                path.unlink()
                gone += 1
        except FileNotFoundError:
            pass
    return gone
