"""Compose: a job's content and one recipient become signed wire bytes.

This is what a signer process runs for every message: render the job's template for the
recipient (or take the raw message), add a Message-ID and Date where a raw message lacks
them, and prepend the DKIM signatures configured for the From domain. The output has CRLF
line ends only and is not dot-stuffed (the SMTP transport does that, or sends it by BDAT).
"""

from __future__ import annotations

import email.utils
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from salvo.core import host
from salvo.core.feedback.outbound import ListUnsubscribe
from salvo.core.messages import Content
from salvo.core.templates import template_limits
from salvo.ext.dkim import DKIMSigner, sign_many
from salvo.ext.errors import DKIMError, TemplateError
from salvo.ext.mime import MessageTemplate, normalize_line_endings


@dataclass(frozen=True)
class KeySpec:
    """One DKIM signature to make for a From domain."""

    selector: str
    private_key: Path
    algorithm: str = "rsa-sha256"
    canonicalization: str = "relaxed/relaxed"


def from_domain(from_: str) -> str:
    """The domain of a From value (``Name <user@domain>`` or ``user@domain``), lowercased."""
    address = email.utils.parseaddr(from_)[1]
    return address.rpartition("@")[2].lower().rstrip(".")


def _header_present(head: bytes, name: bytes) -> bool:
    lowered = b"\r\n" + head.lower()
    return b"\r\n" + name + b":" in lowered


class Composer:
    """Renders and signs messages, caching compiled templates and DKIM signers.

    ``keys`` maps a From domain (lowercase) to the signatures to make for it; a domain
    without keys is sent unsigned. ``clock`` gives the time (seconds since the epoch) for
    the Date of a raw message that has none. ``list_unsubscribe`` adds the List-Unsubscribe
    lines to the templated messages of the traffic classes that enable them.
    ``template_limits`` is ([templates] max_loop_items, max_output).
    """

    def __init__(
        self,
        keys: dict[str, list[KeySpec]],
        *,
        clock: Callable[[], float],
        cache_size: int = 256,
        list_unsubscribe: ListUnsubscribe | None = None,
        template_limits: tuple[int, int] | None = None,
    ) -> None:
        self._keys = keys
        self._template_limits = template_limits
        self._clock = clock
        self._list_unsubscribe = list_unsubscribe
        self._signers: dict[str, list[DKIMSigner]] = {}
        self._templates: OrderedDict[object, tuple] = OrderedDict()
        self._cache_size = cache_size

    def signers_for(self, domain: str) -> list[DKIMSigner]:
        """The DKIM signers for a From domain, loaded once."""
        signers = self._signers.get(domain)
        if signers is None:
            signers = []
            for spec in self._keys.get(domain, []):
                header_c, _, body_c = spec.canonicalization.partition("/")
                try:
                    pem = host.read_bytes(spec.private_key)
                except OSError as exc:
                    raise DKIMError(f"DKIM key for {domain}: {exc}") from exc
                signers.append(
                    DKIMSigner(
                        domain,
                        spec.selector,
                        pem,
                        algorithm=spec.algorithm,
                        canonicalization=(header_c, body_c or header_c),
                    )
                )
            self._signers[domain] = signers
        return signers

    def _prepared(
        self, key: object, job: Content
    ) -> tuple[MessageTemplate | bytes, list[DKIMSigner], str]:
        """The job's compiled template (or normalized raw message), its signers and its
        List-Unsubscribe mailto domain ("" for none), cached: one job's recipients arrive
        in batches, and parsing From per message is costly."""
        prepared = self._templates.get(key)
        if prepared is None:
            if job.raw is not None:  # a raw message is sent as it was given
                raw = normalize_line_endings(job.raw.encode("utf-8"))
                prepared = (raw, self.signers_for(_raw_from_domain(raw)), "")
            else:
                template = MessageTemplate(
                    job.from_,
                    job.subject or "",
                    text=job.text,
                    html=job.html,
                    headers=job.headers or None,
                    **template_limits(self._template_limits),
                )
                unsubscribe = ""
                if self._list_unsubscribe is not None and not _own_list_unsubscribe(job):
                    unsubscribe = self._list_unsubscribe.domain(job.traffic or "default")
                prepared = (template, self.signers_for(from_domain(job.from_)), unsubscribe)
            self._templates[key] = prepared
            if len(self._templates) > self._cache_size:
                self._templates.popitem(last=False)
        else:
            self._templates.move_to_end(key)
        return prepared

    def compose(
        self,
        key: object,
        job: Content,
        to: str,
        variables: dict,
        message_id: str,
        *,
        seq: int = 0,
        idx: int = 0,
    ) -> bytes:
        """The signed message for one recipient. ``key`` identifies the job for caching;
        ``seq`` and ``idx`` name the recipient in the spool (its unsubscribe mailto).

        Raises :class:`TemplateError` (permanent for this recipient) or :class:`DKIMError`.
        """
        compiled, signers, unsubscribe = self._prepared(key, job)
        if isinstance(compiled, bytes):
            message = _complete_raw(compiled, message_id, self._clock())
        else:
            message = compiled.render(to, variables, message_id=message_id)
            if unsubscribe:
                assert self._list_unsubscribe is not None
                lines = self._list_unsubscribe.lines(job.tenant, unsubscribe, seq, idx, to)
                message = lines + message
        if signers:
            return sign_many(message, signers) + message
        return message


def _own_list_unsubscribe(job: Content) -> bool:
    """Whether the producer set List-Unsubscribe (or its Post) itself: it is kept, and
    none is added."""
    return any(
        name.lower() in ("list-unsubscribe", "list-unsubscribe-post") for name in job.headers
    )


def _complete_raw(raw: bytes, message_id: str, now: float) -> bytes:
    """A raw message with Message-ID and Date added when it lacks them (as RFC 6409 allows)."""
    end = raw.find(b"\r\n\r\n")
    head = raw if end < 0 else raw[: end + 2]
    extra = b""
    if not _header_present(head, b"message-id"):
        extra += b"Message-ID: " + message_id.encode() + b"\r\n"
    if not _header_present(head, b"date"):
        extra += b"Date: " + email.utils.formatdate(now).encode() + b"\r\n"
    return extra + raw


def _raw_from_domain(message: bytes) -> str:
    end = message.find(b"\r\n\r\n")
    head = (message if end < 0 else message[:end]).decode("utf-8", "replace")
    for line in head.replace("\r\n ", " ").replace("\r\n\t", " ").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == "from":
            return from_domain(value)
    raise TemplateError("the raw message has no From header")
