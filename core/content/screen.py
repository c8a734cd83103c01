"""What the node asks spamd about a job, and what it makes of the answer.

A job's *template* is its content before personalization: From, Subject, text, HTML and
headers (or its raw message). :func:`content_key` hashes it, so the jobs of one campaign
share one score; :func:`sample_message` renders the first recipient that renders into the
full MIME message the signers would make (without DKIM signatures and List-Unsubscribe
lines), cut to ``max_size``; :meth:`ContentPolicy.verdict` applies the thresholds.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import msgspec

from salvo.core.compose import from_domain
from salvo.core.content.spamc import Score
from salvo.core.templates import job_template
from salvo.ext.errors import TemplateError
from salvo.ext.mime import normalize_line_endings

if TYPE_CHECKING:
    from salvo.core.protocol import Job

Verdict = Literal["pass", "warn", "reject"]

MAX_SAMPLE_TRIES = 10  # recipients tried for one that renders; the rest are the spool's
MAX_RULES_SHOWN = 20  # rule names in a reply or event


@dataclass(frozen=True)
class ContentPolicy:
    """The thresholds of ``[content]``: at or above ``reject_at`` the job is refused; at or
    above ``warn_at`` it is accepted with a warning."""

    reject_at: float = 5.0
    warn_at: float = 3.0
    max_size: int = 512_000

    def verdict(self, score: Score) -> Verdict:
        if score.score >= self.reject_at:
            return "reject"
        if score.score >= self.warn_at:
            return "warn"
        return "pass"

    def describe(self, score: Score, verdict: Verdict) -> str:
        """One line for a reply or an event: ``content scored 1000.0 >= 5.0 (GTUBE, ...)``."""
        limit = self.reject_at if verdict == "reject" else self.warn_at
        relation = ">=" if verdict != "pass" else "<"
        return f"content scored {score.score:.1f} {relation} {limit:g}{_rules(score)}"


def _rules(score: Score) -> str:
    names = score.rule_names
    if not names:
        return ""
    shown = ", ".join(names[:MAX_RULES_SHOWN])
    more = f", and {len(names) - MAX_RULES_SHOWN} more" if len(names) > MAX_RULES_SHOWN else ""
    return f" ({shown}{more})"


_key_encoder = msgspec.msgpack.Encoder()


def content_key(job: Job) -> bytes:
    """A hash of the job's template: equal for the jobs of one campaign whatever their
    recipients, different when any content field differs (header order aside)."""
    headers = sorted(job.headers.items()) if job.headers else []
    fields = [job.from_, job.subject, job.text, job.html, headers, job.raw]
    return hashlib.blake2b(_key_encoder.encode(fields), digest_size=16).digest()


def sample_message(job: Job, key: bytes, now: float, max_size: int) -> bytes | None:
    """The message spamd scores for ``job``: its first recipient that renders (or its raw
    message), at most ``max_size`` bytes. None when no recipient among the first few
    renders (the spool's own check then answers the job). ``key`` (:func:`content_key`)
    makes the sample's Message-ID, ``now`` its Date: the sample is the same every time."""
    if job.raw is not None:
        return normalize_line_endings(job.raw.encode("utf-8"))[:max_size]
    try:
        template = job_template(job)
    except TemplateError:
        return None
    assert template is not None
    message_id = f"<{key.hex()}@{from_domain(job.from_) or 'salvo.invalid'}>"
    date = datetime.fromtimestamp(now, UTC)
    for rcpt in job.recipients[:MAX_SAMPLE_TRIES]:
        try:
            message = template.render(rcpt.to, rcpt.vars, message_id=message_id, date=date)
        except (TemplateError, ValueError, TypeError):
            continue
        return message[:max_size]
    return None


class ScoreCache:
    """The last ``size`` scores by content key (least recently used goes first)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._scores: OrderedDict[bytes, Score] = OrderedDict()

    def __len__(self) -> int:
        return len(self._scores)

    def get(self, key: bytes) -> Score | None:
        score = self._scores.get(key)
        if score is not None:
            self._scores.move_to_end(key)
        return score

    def put(self, key: bytes, score: Score) -> None:
        if self._size <= 0:
            return
        self._scores[key] = score
        self._scores.move_to_end(key)
        while len(self._scores) > self._size:
            self._scores.popitem(last=False)
