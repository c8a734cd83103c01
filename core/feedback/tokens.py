"""STAND-IN for the tokens branch (``salvo.core.feedback.tokens``): replaced at merge.

Only the signatures the listener codes against, with a plain HMAC-SHA256 so that the
listener's tests can make and read tokens. The real module (branch ``tokens``) decides
the encoding, the MAC length and the limits; nothing here is meant to stay.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct

__all__ = [
    "UNSUBSCRIBE_PREFIX",
    "VERP_PREFIX",
    "read_unsubscribe_token",
    "read_verp_token",
    "unsubscribe_token",
    "verp_token",
]

VERP_PREFIX = "b-"
UNSUBSCRIBE_PREFIX = "u-"
_MAC = 10  # bytes of HMAC kept in a token


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=").lower()


def _unb32(text: str) -> bytes | None:
    try:
        text = text.upper()
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except (ValueError, UnicodeError):
        return None


def _mac(secret: bytes, kind: bytes, body: bytes) -> bytes:
    return hmac.new(secret, kind + body, hashlib.sha256).digest()[:_MAC]


def verp_token(secret: bytes, seq: int, idx: int) -> str:
    body = struct.pack(">QI", seq, idx)
    return _b32(body + _mac(secret, b"v", body))


def read_verp_token(secret: bytes, token: str) -> tuple[int, int] | None:
    raw = _unb32(token)
    if raw is None or len(raw) != 12 + _MAC:
        return None
    body, mac = raw[:12], raw[12:]
    if not hmac.compare_digest(mac, _mac(secret, b"v", body)):
        return None
    return struct.unpack(">QI", body)


def unsubscribe_token(secret: bytes, tenant: str, address: str) -> str:
    body = f"{tenant}\0{address}".encode()
    return _b32(body + _mac(secret, b"u", body))


def read_unsubscribe_token(secret: bytes, token: str) -> tuple[str, str] | None:
    raw = _unb32(token) if len(token) <= 1024 else None
    if raw is None or len(raw) <= _MAC:
        return None
    body, mac = raw[:-_MAC], raw[-_MAC:]
    if not hmac.compare_digest(mac, _mac(secret, b"u", body)):
        return None
    try:
        tenant, sep, address = body.decode().partition("\0")
    except UnicodeDecodeError:
        return None
    return (tenant, address) if sep and address else None
