"""The service extensions a server announces in its EHLO reply (RFC 5321 4.1.1.1)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .reply import Reply

__all__ = ["Capabilities"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the client may use on this connection. HELO (no EHLO) means none of them.

    ``size`` is the server's maximum message size, None when it names none (``SIZE`` or
    ``SIZE 0``: no fixed limit); ``rcpt_max`` comes from the LIMITS extension (RFC 9422).
    """

    esmtp: bool = False
    pipelining: bool = False
    size: int | None = None
    size_offered: bool = False
    eightbitmime: bool = False
    smtputf8: bool = False
    enhancedstatuscodes: bool = False
    starttls: bool = False
    chunking: bool = False
    auth: frozenset[str] = frozenset()
    rcpt_max: int | None = None
    keywords: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_ehlo(cls, reply: Reply) -> Capabilities:
        """Parse a positive EHLO reply; unknown or malformed lines are ignored."""
        keywords: dict[str, str] = {}
        for line in reply.lines[1:]:
            name, _, params = line.strip().partition(" ")
            if name:
                keywords.setdefault(name.upper(), params.strip())
        auth: set[str] = set()
        for key in ("AUTH", "AUTH=LOGIN"):  # AUTH=... is a pre-RFC form, still announced
            if key in keywords:
                auth.update(keywords[key].upper().split())
        if "AUTH=LOGIN" in keywords:
            auth.add("LOGIN")
        return cls(
            esmtp=True,
            pipelining="PIPELINING" in keywords,
            size=_positive_int(keywords.get("SIZE", "")),
            size_offered="SIZE" in keywords,
            eightbitmime="8BITMIME" in keywords,
            smtputf8="SMTPUTF8" in keywords,
            enhancedstatuscodes="ENHANCEDSTATUSCODES" in keywords,
            starttls="STARTTLS" in keywords,
            chunking="CHUNKING" in keywords,
            auth=frozenset(auth),
            rcpt_max=_limit(keywords.get("LIMITS", ""), "RCPTMAX"),
            keywords=keywords,
        )


def _positive_int(text: str) -> int | None:
    text = text.split(" ", 1)[0]
    if text.isdigit() and len(text) < 20 and int(text) > 0:
        return int(text)
    return None


def _limit(params: str, name: str) -> int | None:
    for item in params.upper().split():
        key, _, value = item.partition("=")
        if key == name:
            return _positive_int(value)
    return None
