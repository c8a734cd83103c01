"""Email address parsing and normalization shared by the spool, suppression and ingress.

Rules (see docs/suppression.md):

- The domain is mapped with UTS #46 and encoded as an IDNA2008 A-label (``idna`` package),
  lowercased, one trailing dot removed. Domain literals (``[192.0.2.1]``) are refused.
- The local part is kept exactly as given (it goes on the wire that way) but matched
  case-insensitively: the lookup key is ``casefold(local) + "@" + a_label_domain``.
- The local part is a dot-atom (RFC 5322 atext plus non-ASCII for SMTPUTF8); quoted
  local parts are refused. Limits are RFC 5321's: 64 octets local, 255 domain, 254 total.
- Anything else (empty, no ``@``, spaces, CR/LF/NUL or other controls) raises
  :class:`InvalidAddressError` and nothing else.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

import idna

from salvo.core.errors import InvalidAddressError

__all__ = [
    "Address",
    "bare_address",
    "domain_of_mailbox",
    "mailbox_key",
    "normalize_domain",
    "parse_address",
    "parse_mailbox",
]

MAX_LOCAL = 64
MAX_DOMAIN = 255
MAX_ADDRESS = 254

# RFC 5322 atext, plus any non-ASCII character (RFC 6531); dots checked separately.
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]+")
_ASCII_LOCAL = re.compile(
    r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?:\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*"
)
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# Controls, spaces and the Unicode line/paragraph separators: never in an address.
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029\s]")


class Address(NamedTuple):
    """A parsed address: ``local`` as given, ``domain`` as A-label, ``key`` for lookups."""

    local: str
    domain: str
    key: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


@functools.lru_cache(maxsize=65536)
def normalize_domain(text: str) -> str:
    """Return the lowercase A-label form of a domain, or raise InvalidAddressError."""
    domain = text[:-1] if text.endswith(".") else text
    if not domain:
        raise InvalidAddressError(text, "empty domain")
    if domain.endswith("."):  # one root dot is allowed, a second is an empty label
        raise InvalidAddressError(text, "bad domain: Empty Label")
    if _FORBIDDEN.search(domain):
        raise InvalidAddressError(text, "space or control character in the domain")
    if domain.startswith("["):
        raise InvalidAddressError(text, "domain literals are not accepted")
    lowered = domain.lower()
    if lowered.isascii() and _plain_ascii_domain(lowered):
        # Fast path: for LDH labels UTS #46 mapping is exactly lowercasing.
        result = lowered
    else:
        try:
            result = idna.encode(domain, uts46=True, std3_rules=True).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError) as exc:
            raise InvalidAddressError(text, f"bad domain: {exc}") from None
        # UTS #46 maps the other full stops (U+3002...) to "."; a last one is the root.
        result = result.removesuffix(".")
        if not result or result.endswith("."):
            raise InvalidAddressError(text, "bad domain: Empty Label")
    if len(result) > MAX_DOMAIN:
        raise InvalidAddressError(text, f"domain longer than {MAX_DOMAIN} octets")
    return result


def _plain_ascii_domain(domain: str) -> bool:
    """True when every label is LDH and none needs IDNA checks (``xn--``, ``ab--``)."""
    labels = domain.split(".")
    return len(domain) <= 253 and all(
        _LDH_LABEL.fullmatch(label) and label[2:4] != "--" for label in labels
    )


def _check_local(text: str, local: str) -> None:
    if not local:
        raise InvalidAddressError(text, "empty local part")
    if len(local.encode("utf-8", "surrogatepass")) > MAX_LOCAL:
        raise InvalidAddressError(text, f"local part longer than {MAX_LOCAL} octets")
    for atom in local.split("."):
        if not atom:
            raise InvalidAddressError(text, "empty dot-separated part in the local part")
        if not _ATEXT.fullmatch(atom):
            raise InvalidAddressError(text, "local part must be a dot-atom (no quotes)")
    if not local.isascii() and not _encodable(local):
        raise InvalidAddressError(text, "local part is not valid Unicode")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_address(text: str) -> Address:
    """Parse a bare address (``ann@example.org``) into its normalized parts."""
    if not isinstance(text, str):
        raise InvalidAddressError(repr(text), "not a string")
    local, at, domain = text.rpartition("@")
    # Fast path, the common case: an ASCII dot-atom needs one regex; the domain's own
    # checks are in the cached normalize_domain.
    if not (at and len(local) <= MAX_LOCAL and _ASCII_LOCAL.fullmatch(local)):
        if not text:
            raise InvalidAddressError(text, "empty")
        if _FORBIDDEN.search(text):
            raise InvalidAddressError(text, "space or control character")
        if not at:
            raise InvalidAddressError(text, "no @")
        _check_local(text, local)
    try:
        a_label = normalize_domain(domain)
    except InvalidAddressError as exc:
        raise InvalidAddressError(text, exc.detail) from None
    if len(local.encode("utf-8")) + 1 + len(a_label) > MAX_ADDRESS:
        raise InvalidAddressError(text, f"address longer than {MAX_ADDRESS} octets")
    return _new_address(Address, (local, a_label, f"{local.casefold()}@{a_label}"))


_new_address = tuple.__new__  # Address(...) without the namedtuple's Python-level __new__


def mailbox_key(text: str) -> tuple[str, str]:
    """``(lookup key, A-label domain)`` of ``addr``, ``<addr>`` or ``Name <addr>``.

    The same result and errors as :func:`parse_mailbox`, for the hot paths (the spool's
    screening, batched suppression checks): an ASCII dot-atom local part takes one regex
    match and a cached domain lookup, and no :class:`Address` is made.
    """
    if not isinstance(text, str):
        raise InvalidAddressError(repr(text), "not a string")
    bare = text
    if text.endswith(">"):
        start = text.rfind("<")
        if start >= 0:
            bare = text[start + 1 : -1]
    local, at, domain = bare.rpartition("@")
    if at and len(local) <= MAX_LOCAL and _ASCII_LOCAL.fullmatch(local):
        try:
            a_label = normalize_domain(domain)
        except InvalidAddressError as exc:
            raise InvalidAddressError(text, exc.detail) from None
        if len(local) + 1 + len(a_label) > MAX_ADDRESS:  # local is ASCII: chars = octets
            raise InvalidAddressError(text, f"address longer than {MAX_ADDRESS} octets")
        return f"{local.lower()}@{a_label}", a_label  # casefold == lower for ASCII
    address = parse_mailbox(text)
    return address.key, address.domain


def bare_address(text: str) -> str:
    """The address of a mailbox: ``addr`` from ``Name <addr>`` or ``<addr>``, else ``text``.

    Only the angle brackets are taken apart (the last ``<`` up to a final ``>``); the
    display name is not checked here (the renderer does that for the To header) and the
    address is not validated (use :func:`parse_mailbox`).
    """
    if text.endswith(">"):
        start = text.rfind("<")
        if start >= 0:
            return text[start + 1 : -1]
    return text


def parse_mailbox(text: str) -> Address:
    """Parse ``addr``, ``<addr>`` or ``Name <addr>``: the bare address, normalized."""
    if not isinstance(text, str):
        raise InvalidAddressError(repr(text), "not a string")
    bare = bare_address(text)
    if bare is text:
        return parse_address(text)
    try:
        return parse_address(bare)
    except InvalidAddressError as exc:
        raise InvalidAddressError(text, exc.detail) from None


def domain_of_mailbox(text: str) -> str:
    """The A-label domain of ``Name <addr>`` or a bare address (for Message-IDs)."""
    start, end = text.rfind("<"), text.rfind(">")
    bare = text[start + 1 : end] if 0 <= start < end else text.strip()
    return parse_address(bare).domain
