"""Tokens that tie mail coming back to what this node sent: VERP and unsubscribe tokens.

Pure functions: the node's secret is passed in as bytes (the node reads it once from
``[feedback] secret_file``). Every token carries a truncated HMAC-SHA256 under that secret
with a label of its own kind, so a token of one kind is never valid as another, and a
forged or altered token reads as ``None``.

- VERP return path ``b-TOKEN@domain`` (:func:`verp_address`): TOKEN is lowercase hex
  (``[0-9a-f]``) of a version byte, the spool's job number ``seq`` and the recipient's
  index ``idx`` (unsigned LEB128 varints), and 80 bits of MAC. The spool maps
  ``(seq, idx)`` to tenant, job, recipient and Message-ID while the job is retained. MTAs
  may change the case of a local part: the token is lowercase and read in any case.
- Unsubscribe mailto ``u-TOKEN@domain`` (:func:`unsubscribe_mailto`): the same compact
  form of ``(seq, idx)`` under another label (it must fit a local part too).
- Unsubscribe URL token (:func:`unsubscribe_token`): self-contained, for links clicked
  long after the job left the spool: base64url without padding of a version byte, the
  tenant (length-prefixed) and the address (UTF-8), and 96 bits of MAC.

docs/feedback.md describes the formats.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import re

__all__ = [
    "MIN_SECRET_BYTES",
    "UNSUBSCRIBE_PREFIX",
    "VERP_PREFIX",
    "read_unsubscribe_mailto",
    "read_unsubscribe_mailto_token",
    "read_unsubscribe_token",
    "read_verp_address",
    "read_verp_token",
    "unsubscribe_mailto",
    "unsubscribe_mailto_token",
    "unsubscribe_token",
    "verp_address",
    "verp_token",
]

VERP_PREFIX = "b-"
UNSUBSCRIBE_PREFIX = "u-"
MIN_SECRET_BYTES = 16

_VERSION = 1
_COMPACT_MAC = 10  # bytes of HMAC in a compact (local part) token: 80 bits
_URL_MAC = 12  # bytes of HMAC in an unsubscribe URL token: 96 bits
_MAX_SEQ = 2**64 - 1  # the spool's job numbers are u64
_MAX_IDX = 2**32 - 1  # recipient indexes are u32
_MAX_COMPACT_CHARS = 2 * (1 + 10 + 5 + _COMPACT_MAC)  # 52: with the prefix, <= 64 octets
_MAX_URL_CHARS = 4096

# Domain separation: each kind of token has its own label before its payload. The labels
# end in NUL and contain no other, so no label is a prefix of another.
_VERP_LABEL = b"salvo verp return path\x00"
_MAILTO_LABEL = b"salvo unsubscribe mailto\x00"
_URL_LABEL = b"salvo unsubscribe url\x00"

_HEX = re.compile(r"(?:[0-9a-f]{2})+")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


@functools.lru_cache(maxsize=32)
def _keyed(secret: bytes, label: bytes) -> hmac.HMAC:
    """HMAC-SHA256 keyed with ``secret`` and fed ``label``: copied per token, which saves
    the key schedule and the label on every call."""
    return hmac.new(secret, label, "sha256")


def _mac(secret: bytes, label: bytes, payload: bytes, size: int) -> bytes:
    mac = _keyed(secret, label).copy()
    mac.update(payload)
    return mac.digest()[:size]


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_uvarint(data: bytes, pos: int) -> tuple[int, int] | None:
    """``(value, next position)``, or None when truncated or longer than 10 bytes."""
    value = shift = 0
    for i in range(pos, min(len(data), pos + 10)):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    return None


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the feedback secret must be at least {MIN_SECRET_BYTES} bytes")


# -- compact tokens of (seq, idx): VERP and the unsubscribe mailto ---------------------------


def _compact(secret: bytes, label: bytes, seq: int, idx: int) -> str:
    _check_secret(secret)
    if not (0 <= seq <= _MAX_SEQ and 0 <= idx <= _MAX_IDX):
        raise ValueError(f"seq {seq} or idx {idx} out of range")
    payload = bytes((_VERSION,)) + _uvarint(seq) + _uvarint(idx)
    return (payload + _mac(secret, label, payload, _COMPACT_MAC)).hex()


def _read_compact(secret: bytes, label: bytes, token: str) -> tuple[int, int] | None:
    if not isinstance(token, str) or len(token) > _MAX_COMPACT_CHARS:
        return None
    token = token.lower()
    if not _HEX.fullmatch(token):
        return None
    raw = bytes.fromhex(token)
    if len(raw) < 3 + _COMPACT_MAC:
        return None
    payload, mac = raw[:-_COMPACT_MAC], raw[-_COMPACT_MAC:]
    if not hmac.compare_digest(mac, _mac(secret, label, payload, _COMPACT_MAC)):
        return None
    if payload[0] != _VERSION:
        return None
    first = _read_uvarint(payload, 1)
    if first is None:
        return None
    seq, pos = first
    second = _read_uvarint(payload, pos)
    if second is None:
        return None
    idx, pos = second
    if pos != len(payload) or seq > _MAX_SEQ or idx > _MAX_IDX:
        return None
    # One spelling per (seq, idx): over-long varints are refused, so that no second
    # token reads as the same recipient.
    if _compact(secret, label, seq, idx) != token:
        return None
    return seq, idx


def _local_part(address: str, prefix: str) -> str | None:
    local = address.rpartition("@")[0] if "@" in address else address
    if len(local) <= len(prefix) or local[: len(prefix)].lower() != prefix:
        return None
    return local[len(prefix) :]


def verp_token(secret: bytes, seq: int, idx: int) -> str:
    """The VERP token of recipient ``idx`` of spool job ``seq``: ``[0-9a-f]``, <= 52 chars."""
    return _compact(secret, _VERP_LABEL, seq, idx)


def read_verp_token(secret: bytes, token: str) -> tuple[int, int] | None:
    """``(seq, idx)`` of a VERP token (in any case), or None when it is not one of ours."""
    return _read_compact(secret, _VERP_LABEL, token)


def verp_address(secret: bytes, seq: int, idx: int, domain: str) -> str:
    """The return path ``b-TOKEN@domain`` for one recipient."""
    return f"{VERP_PREFIX}{verp_token(secret, seq, idx)}@{domain}"


def read_verp_address(secret: bytes, address: str) -> tuple[int, int] | None:
    """``(seq, idx)`` of ``b-TOKEN@domain`` (or of the local part alone), in any case; the
    domain is not checked here."""
    token = _local_part(address, VERP_PREFIX)
    return None if token is None else read_verp_token(secret, token)


def unsubscribe_mailto_token(secret: bytes, seq: int, idx: int) -> str:
    """The token of the ``mailto:u-TOKEN@domain`` unsubscribe address."""
    return _compact(secret, _MAILTO_LABEL, seq, idx)


def read_unsubscribe_mailto_token(secret: bytes, token: str) -> tuple[int, int] | None:
    """``(seq, idx)`` of an unsubscribe mailto token (any case), or None."""
    return _read_compact(secret, _MAILTO_LABEL, token)


def unsubscribe_mailto(secret: bytes, seq: int, idx: int, domain: str) -> str:
    """The unsubscribe address ``u-TOKEN@domain`` for one recipient."""
    return f"{UNSUBSCRIBE_PREFIX}{unsubscribe_mailto_token(secret, seq, idx)}@{domain}"


def read_unsubscribe_mailto(secret: bytes, address: str) -> tuple[int, int] | None:
    """``(seq, idx)`` of ``u-TOKEN@domain`` (or of the local part alone), in any case."""
    token = _local_part(address, UNSUBSCRIBE_PREFIX)
    return None if token is None else read_unsubscribe_mailto_token(secret, token)


# -- the self-contained unsubscribe URL token -----------------------------------------------


def unsubscribe_token(secret: bytes, tenant: str, address: str) -> str:
    """The URL token binding ``(tenant, address)``: base64url, no padding."""
    _check_secret(secret)
    name = tenant.encode("utf-8")
    payload = bytes((_VERSION,)) + _uvarint(len(name)) + name + address.encode("utf-8")
    raw = payload + _mac(secret, _URL_LABEL, payload, _URL_MAC)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def read_unsubscribe_token(secret: bytes, token: str) -> tuple[str, str] | None:
    """``(tenant, address)`` of a URL token, or None when it is not one of ours."""
    if not isinstance(token, str) or len(token) > _MAX_URL_CHARS or not _BASE64URL.fullmatch(token):
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) < 2 + _URL_MAC:
        return None
    payload, mac = raw[:-_URL_MAC], raw[-_URL_MAC:]
    if not hmac.compare_digest(mac, _mac(secret, _URL_LABEL, payload, _URL_MAC)):
        return None
    if payload[0] != _VERSION:
        return None
    head = _read_uvarint(payload, 1)
    if head is None:
        return None
    size, pos = head
    if pos + size > len(payload):
        return None
    try:
        tenant = payload[pos : pos + size].decode("utf-8")
        address = payload[pos + size :].decode("utf-8")
    except UnicodeDecodeError:
        return None
    if unsubscribe_token(secret, tenant, address) != token:  # the one spelling
        return None
    return tenant, address
