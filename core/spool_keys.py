"""The spool's data keys: one per tenant and generation, wrapped by the master key.

Stored in the ``keys`` sub-database under ``tenant NUL name NUL generation(u32)``; a
generation is made on the tenant's first job, and a shred replaces its wrapped key by
nothing (the entry stays, saying when: the node cancels what it sealed). The next job of
a shredded tenant gets the next generation. The first part of the key names the kind of
scope, so other scopes (an address's key for erasure) can live beside.

Unwrapped keys are cached in memory. Every transaction that uses them first compares the
spool's ``key_epoch`` (meta), which a shred or a master key rotation bumps, with the one
the cache was filled at, and empties the cache when it moved: a shred by ``salvo tenant
shred`` in another process reaches a running node at its next submit or claim.

The mode of a data dir lives in meta as well: ``encrypt`` (``1`` once encryption is on:
never turned off) and ``master_id`` (:func:`salvo.core.spool_crypto.master_id`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from salvo.core import spool_crypto as sc
from salvo.core.errors import SpoolError

__all__ = ["DataKeys", "KeyEntry", "MasterKeyError", "recorded_mode", "resolve_mode", "shred_in"]

KIND_TENANT = b"tenant"
# A tenant's data key seals new records for this long, then a new generation takes over
# (the old one still opens what it sealed). Random 96-bit nonces should stay below 2**32
# records per key; 30 days of 100 million messages a day is 3 * 10**9.
KEY_LIFETIME = 30 * 86400.0
_GEN = 4  # bytes of the generation at the end of a key


class MasterKeyError(SpoolError):
    """The data dir's encryption cannot be used as asked: no master key, another master
    key than the one it was encrypted with, or ``encrypt = false`` for an encrypted dir."""


class KeyEntry(msgspec.Struct, frozen=True, array_like=True):
    """A data key: wrapped (``b""`` once shredded), when made, when shredded, and whether
    the node has cancelled what was queued under it since."""

    wrapped: bytes
    created: float
    shredded: float | None = None
    swept: bool = False


_ENC = msgspec.msgpack.Encoder()
_DEC = msgspec.msgpack.Decoder(KeyEntry)


def tenant_prefix(tenant: str) -> bytes:
    return KIND_TENANT + b"\0" + tenant.encode() + b"\0"


def key_name(tenant: str, generation: int) -> bytes:
    return tenant_prefix(tenant) + generation.to_bytes(_GEN, "big")


def _split(key: bytes) -> tuple[str, int]:
    """(tenant, generation) of a tenant key's name."""
    body = key[len(KIND_TENANT) + 1 : -_GEN - 1]
    return body.decode(), int.from_bytes(key[-_GEN:], "big")


def recorded_mode(txn: Any, meta: Any) -> bool:
    """Whether the data dir is encrypted, as recorded (nothing written)."""
    return txn.get(b"encrypt", db=meta) == b"1"


def resolve_mode(txn: Any, meta: Any, fresh: bool, encrypt: bool | None) -> bool:
    """Whether this data dir encrypts, from its recorded mode and the config's ``encrypt``
    (None: as recorded; a new data dir encrypts). Records the result. Turning it off for
    an encrypted dir is refused; turning it on for a dir in clear starts sealing new
    records (the old ones stay readable, in clear, until they are purged)."""
    recorded = txn.get(b"encrypt", db=meta)
    if recorded == b"1":
        if encrypt is False:
            raise MasterKeyError(
                "[spool] encrypt = false, but this data dir is encrypted: it stays "
                "encrypted (remove the setting, or start from a new data dir)"
            )
        return True
    on = encrypt if encrypt is not None else fresh
    if on or recorded is None:
        txn.put(b"encrypt", b"1" if on else b"0", db=meta)
    return on


class DataKeys:
    """Data keys of one open spool; see the module docstring. Used from the spool's
    transactions only (the writer thread), ``random_bytes`` draws keys and nonces."""

    def __init__(
        self, dbs: dict[str, Any], master_key: bytes, random_bytes: Callable[[int], bytes]
    ) -> None:
        self._keys = dbs["keys"]
        self._meta = dbs["meta"]
        self._master = sc.aead(master_key)
        self.master_id = sc.master_id(master_key)
        self._random_bytes = random_bytes
        self._epoch: bytes | None = None
        # tenant -> (generation, cipher, sealing until)
        self._current: dict[str, tuple[int, Any, float]] = {}
        self._ciphers: dict[tuple[str, int], Any] = {}  # (tenant, generation) -> cipher
        self._made: list[tuple[str, int]] = []  # keys made by the transaction under way

    def begin(self) -> None:
        """Before a write transaction that may make keys: drop from the cache the keys a
        previous attempt made but did not commit (a retried or failed transaction)."""
        for tenant, generation in self._made:
            self._current.pop(tenant, None)
            self._ciphers.pop((tenant, generation), None)
        self._made.clear()

    def commit(self) -> None:
        """After that transaction committed: the keys it made are stored."""
        self._made.clear()

    def check_in(self, txn: Any) -> None:
        """Refuse a master key other than the data dir's; record it on first use."""
        stored = txn.get(b"master_id", db=self._meta)
        if stored is None:
            txn.put(b"master_id", self.master_id.encode(), db=self._meta)
        elif stored.decode() != self.master_id:
            raise MasterKeyError(
                f"the spool master key (id {self.master_id}) is not this data dir's (id "
                f"{stored.decode()}): give the key it was encrypted with"
            )

    def sync_in(self, txn: Any) -> bool:
        """Empty the cache when a shred or rotation happened since it was filled; True
        then (the caller sweeps shredded tenants)."""
        epoch = txn.get(b"key_epoch", b"0", db=self._meta)
        if epoch == self._epoch:
            return False
        self._epoch = bytes(epoch)
        self._current.clear()
        self._ciphers.clear()
        return True

    def current_in(self, txn: Any, tenant: str, now: float) -> tuple[int, Any]:
        """(generation, cipher) to seal the tenant's new records with; a key is made on
        the tenant's first job, after a shred, and when the last one is KEY_LIFETIME old."""
        got = self._current.get(tenant)
        if got is not None and now < got[2]:
            return got[0], got[1]
        prefix = tenant_prefix(tenant)
        cur = txn.cursor(db=self._keys)
        last = None  # the newest generation (few per tenant: one more per shred)
        if cur.set_range(prefix):
            for key, raw in cur:
                if not key.startswith(prefix):
                    break
                last = (int.from_bytes(key[-_GEN:], "big"), _DEC.decode(raw))
        if last is not None and last[1].wrapped and now < last[1].created + KEY_LIFETIME:
            generation, created = last[0], last[1].created
            cipher = self._ciphers.get((tenant, generation))
            if cipher is None:
                cipher = self._unwrap(tenant, generation, last[1].wrapped)
        else:
            created = now
            generation = last[0] + 1 if last is not None else 1
            data_key = self._random_bytes(sc.KEY_BYTES)
            name = key_name(tenant, generation)
            wrapped = sc.wrap_key(self._master, self._random_bytes(sc.NONCE_BYTES), data_key, name)
            txn.put(name, _ENC.encode(KeyEntry(wrapped, now)), db=self._keys)
            cipher = sc.aead(data_key)
            self._made.append((tenant, generation))
        self._current[tenant] = (generation, cipher, created + KEY_LIFETIME)
        self._ciphers[(tenant, generation)] = cipher
        return generation, cipher

    def cipher_in(self, txn: Any, tenant: str, generation: int) -> Any | None:
        """The cipher of a tenant's key generation; None when it was shredded (or never
        existed: the record then cannot be read either)."""
        cipher = self._ciphers.get((tenant, generation))
        if cipher is not None:
            return cipher
        raw = txn.get(key_name(tenant, generation), db=self._keys)
        if raw is None:
            return None
        entry = _DEC.decode(raw)
        if not entry.wrapped:
            return None
        cipher = self._unwrap(tenant, generation, entry.wrapped)
        self._ciphers[(tenant, generation)] = cipher
        return cipher

    def _unwrap(self, tenant: str, generation: int, wrapped: bytes) -> Any:
        return sc.aead(sc.unwrap_key(self._master, wrapped, key_name(tenant, generation)))

    def rewrap_in(self, txn: Any, new_master_key: bytes) -> int:
        """Wrap every live data key under a new master key and record its id; returns how
        many. The caller commits, then uses the new key (this object keeps the old one)."""
        new = sc.aead(new_master_key)
        done = []
        for key, raw in txn.cursor(db=self._keys):
            entry = _DEC.decode(raw)
            if entry.wrapped:
                data_key = sc.unwrap_key(self._master, entry.wrapped, bytes(key))
                nonce = self._random_bytes(sc.NONCE_BYTES)
                wrapped = sc.wrap_key(new, nonce, data_key, bytes(key))
                done.append((bytes(key), msgspec.structs.replace(entry, wrapped=wrapped)))
        for key, entry in done:
            txn.put(key, _ENC.encode(entry), db=self._keys)
        txn.put(b"master_id", sc.master_id(new_master_key).encode(), db=self._meta)
        bump_epoch_in(txn, self._meta)
        return len(done)


def bump_epoch_in(txn: Any, meta: Any) -> None:
    epoch = int(txn.get(b"key_epoch", b"0", db=meta)) + 1
    txn.put(b"key_epoch", str(epoch).encode(), db=meta)


def shred_in(txn: Any, dbs: dict[str, Any], tenant: str, now: float) -> int:
    """Destroy every live data key of ``tenant`` (no master key needed); returns how many.
    The entries stay, empty, until the node has cancelled what they sealed."""
    prefix = tenant_prefix(tenant)
    cur = txn.cursor(db=dbs["keys"])
    found = []
    if cur.set_range(prefix):
        for key, raw in cur:
            if not key.startswith(prefix):
                break
            entry = _DEC.decode(raw)
            if entry.wrapped:
                found.append((bytes(key), entry))
    for key, entry in found:
        gone = KeyEntry(b"", entry.created, now, False)
        txn.put(key, _ENC.encode(gone), db=dbs["keys"])
    bump_epoch_in(txn, dbs["meta"])
    return len(found)


def unswept_in(txn: Any, dbs: dict[str, Any]) -> dict[str, tuple[float, set[int]]]:
    """Tenants with shredded keys whose queue the node has not cancelled yet: the latest
    shred time and the shredded generations."""
    out: dict[str, tuple[float, set[int]]] = {}
    for key, raw in txn.cursor(db=dbs["keys"]):
        if not key.startswith(KIND_TENANT + b"\0"):
            continue
        entry = _DEC.decode(raw)
        if entry.shredded is not None and not entry.swept:
            tenant, generation = _split(bytes(key))
            when, gens = out.get(tenant, (0.0, set()))
            gens.add(generation)
            out[tenant] = (max(when, entry.shredded), gens)
    return out


def mark_swept_in(txn: Any, dbs: dict[str, Any], tenant: str) -> None:
    prefix = tenant_prefix(tenant)
    cur = txn.cursor(db=dbs["keys"])
    done = []
    if cur.set_range(prefix):
        for key, raw in cur:
            if not key.startswith(prefix):
                break
            entry = _DEC.decode(raw)
            if entry.shredded is not None and not entry.swept:
                done.append((bytes(key), msgspec.structs.replace(entry, swept=True)))
    for key, entry in done:
        txn.put(key, _ENC.encode(entry), db=dbs["keys"])
