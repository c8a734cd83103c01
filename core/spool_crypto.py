"""Sealing spool records with AES-GCM, and wrapping data keys under the master key.

Pure: keys, nonces and data are passed in (the spool draws nonces from its
``random_bytes``). A sealed record is self-describing, so a data dir that turned
encryption on keeps reading the records it wrote in clear before::

    version (1 byte, 0x01) | key generation (u32) | nonce (12 bytes) | ciphertext + tag

The associated data is the header plus where the record lives (the job's sequence
number, the recipient's index): a record moved to another key of the spool, or a header
edited to name another key, does not open. A msgpack map (recipient variables in clear)
never starts with 0x01, which is how :func:`is_sealed` tells the two apart.

Data keys are wrapped with AES-GCM under the master key, with the key's scope (``tenant``
and its name and generation) as associated data: a wrapped key copied to another tenant
does not unwrap. Layout and reasons: docs/spool.md, "Encryption at rest".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct

from salvo.core.errors import SpoolError

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "OVERHEAD",
    "SealError",
    "aead",
    "generation_of",
    "is_sealed",
    "job_ad",
    "master_id",
    "open_sealed",
    "parse_master_key",
    "seal",
    "unwrap_key",
    "vars_ad",
    "wrap_key",
]

VERSION = 1
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96 bits, random per record
TAG_BYTES = 16
_HEADER = struct.Struct(">BI")  # version, data key generation
OVERHEAD = _HEADER.size + NONCE_BYTES + TAG_BYTES
_JOB_AD = struct.Struct(">4sQ")
_VARS_AD = struct.Struct(">4sQI")
_MARK = bytes([VERSION])


class SealError(SpoolError):
    """A sealed record or wrapped key does not open: another key, a changed byte, or a
    truncated value. Never temporary: the same bytes will not open later."""


def _aesgcm():
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM


def aead(key: bytes):
    """An AES-GCM cipher for a 256-bit key (reuse it: making one costs more than a seal)."""
    if len(key) != KEY_BYTES:
        raise ValueError(f"an AES-256 key has {KEY_BYTES} bytes, not {len(key)}")
    return _aesgcm()(key)


def job_ad(seq: int) -> bytes:
    """Associated data of a job's sealed content: its sequence number."""
    return _JOB_AD.pack(b"job\0", seq)


def vars_ad(seq: int, idx: int) -> bytes:
    """Associated data of a recipient's sealed variables: its job and index."""
    return _VARS_AD.pack(b"var\0", seq, idx)


def seal(cipher, generation: int, nonce: bytes, plain: bytes, ad: bytes) -> bytes:
    """``plain`` sealed under ``cipher`` (the data key of ``generation``)."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"a nonce has {NONCE_BYTES} bytes, not {len(nonce)}")
    header = _HEADER.pack(VERSION, generation)
    return header + nonce + cipher.encrypt(nonce, plain, header + ad)


def is_sealed(value: bytes) -> bool:
    """Whether a stored value is a sealed record (else msgpack in clear)."""
    return value[:1] == _MARK


def generation_of(sealed: bytes) -> int:
    """The data key generation named in a sealed record's header."""
    if len(sealed) < OVERHEAD or not is_sealed(sealed):
        raise SealError(f"not a sealed record ({len(sealed)} bytes)")
    return _HEADER.unpack_from(sealed)[1]


def open_sealed(cipher, sealed: bytes, ad: bytes) -> bytes:
    """The plain bytes of a sealed record; :class:`SealError` when it does not open."""
    from cryptography.exceptions import InvalidTag

    generation_of(sealed)  # the length and version check
    head = _HEADER.size
    nonce = sealed[head : head + NONCE_BYTES]
    try:
        return cipher.decrypt(nonce, sealed[head + NONCE_BYTES :], sealed[:head] + ad)
    except InvalidTag:
        raise SealError("the record does not open: changed, moved or another key") from None


def _scope_ad(scope: bytes) -> bytes:
    return b"salvo data key\0" + scope


def wrap_key(master, nonce: bytes, data_key: bytes, scope: bytes) -> bytes:
    """``data_key`` wrapped under the master key's cipher, bound to ``scope``."""
    if len(nonce) != NONCE_BYTES or len(data_key) != KEY_BYTES:
        raise ValueError("a wrap takes a 12-byte nonce and a 32-byte key")
    return nonce + master.encrypt(nonce, data_key, _scope_ad(scope))


def unwrap_key(master, wrapped: bytes, scope: bytes) -> bytes:
    """The data key of a wrapped one; :class:`SealError` when it does not unwrap."""
    from cryptography.exceptions import InvalidTag

    if len(wrapped) != NONCE_BYTES + KEY_BYTES + TAG_BYTES:
        raise SealError(f"a wrapped key has {NONCE_BYTES + KEY_BYTES + TAG_BYTES} bytes")
    try:
        return master.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _scope_ad(scope))
    except InvalidTag:
        raise SealError("the data key does not unwrap: another master key") from None


def master_id(master_key: bytes) -> str:
    """A short public name of a master key (HMAC of a constant: reveals nothing of the
    key), stored in the spool to refuse another key at start with a clear message."""
    return hmac.new(master_key, b"salvo spool master key id", hashlib.sha256).hexdigest()[:16]


def parse_master_key(text: str | bytes, where: str) -> bytes:
    """A master key from its text form: base64 (standard or URL-safe, padded or not) of 32
    bytes, surrounding blanks ignored: a file's or a variable's content. ``where`` names
    it in the error."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise SpoolError(f"{where}: not base64 text") from None
    text = text.strip().replace("-", "+").replace("_", "/")  # URL-safe base64 as well
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SpoolError(f"{where}: not base64 text") from None
    if len(key) != KEY_BYTES:
        raise SpoolError(f"{where}: the key is {len(key)} bytes, not {KEY_BYTES} (AES-256)")
    return key


def format_master_key(key: bytes) -> str:
    """The text form of a master key (base64 and a newline), as its file holds it."""
    return base64.b64encode(key).decode("ascii") + "\n"
