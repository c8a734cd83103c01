"""The suppression list: addresses and whole domains that must never be mailed.

It lives in the spool's LMDB environment as its own sub-databases (``supp``,
``supp_exp``): the spool checks a job's recipients inside the very transaction that
queues them (no window between check and commit), a hard bounce can suppress in the
transaction that records it, and one environment means one fsync and one map to size.

Key: ``scope NUL kind target`` where scope is the tenant ("" = global), kind ``a`` (address,
target = lookup key ``casefold(local)@a-label``) or ``d`` (domain, target = A-label).
A domain entry matches that exact domain, not its subdomains. A tenant entry applies to
that tenant's jobs only; a global entry to every tenant.

Erased addresses (``salvo erase``, docs/privacy.md) stay suppressed through a keyed hash
only: ``supp_h`` maps ``scope NUL HMAC-SHA256(secret, lookup key)[:16]`` to the entry
(its ``target`` a placeholder). The secret is 32 random bytes in ``meta``
(``supp_secret``), made by the first erasure. The check costs one HMAC per address, and
only once some address was erased (the sub-database's entry count says so).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import msgspec

from salvo.core.address import mailbox_key, normalize_domain, parse_mailbox
from salvo.core.spool_records import ENC, time_seq_key

__all__ = [
    "ERASED_TARGET",
    "REASONS",
    "SuppressionEntry",
    "SuppressionStore",
    "Target",
    "address_hash",
    "parse_target",
]

REASONS = ("hard-bounce", "complaint", "unsubscribe", "manual", "spam-trap", "invalid", "erasure")
ERASED_TARGET = "[erased]"  # the target of a hashed entry: the address is not kept
SECRET = b"supp_secret"  # meta key of the hashing secret
HASH_BYTES = 16


def address_hash(secret: bytes, key: str) -> bytes:
    """The keyed hash of a lookup key (``casefold(local)@a-label``)."""
    return hmac.digest(secret, key.encode(), "sha256")[:HASH_BYTES]


class SuppressionEntry(msgspec.Struct, frozen=True, array_like=True):
    """One suppression: ``target`` is an address (``local@a-label``) or a bare domain."""

    target: str
    tenant: str = ""
    reason: str = "manual"
    source: str = ""
    created: float = 0.0
    expires: float | None = None

    def active(self, now: float) -> bool:
        """False once ``expires`` has passed."""
        return self.expires is None or self.expires > now


class Target(NamedTuple):
    """A normalized suppression target: ``kind`` b"a" or b"d", lookup ``key``, ``display``."""

    kind: bytes
    key: str
    display: str


def parse_target(text: str) -> Target:
    """An address (``ann@example.org``, ``<ann@example.org>``, ``Ann <ann@example.org>``)
    or a domain (``example.org`` or ``@example.org``)."""
    text = text.strip() if isinstance(text, str) else text
    if isinstance(text, str) and "@" not in text[1:]:
        domain = normalize_domain(text[1:] if text.startswith("@") else text)
        return Target(b"d", domain, domain)
    address = parse_mailbox(text)
    return Target(b"a", address.key, str(address))


def _check_label(what: str, value: str) -> None:
    if not value or len(value) > 64 or not value.isprintable() or "\0" in value:
        raise ValueError(f"{what} must be 1-64 printable characters, not {value!r}")


def entry_key(tenant: str, kind: bytes, key: str) -> bytes:
    """The LMDB key of a suppression entry."""
    return tenant.encode() + b"\0" + kind + key.encode()


_DEC = msgspec.msgpack.Decoder(SuppressionEntry)


class SuppressionStore:
    """Suppression entries in a :class:`~salvo.core.spool_env.Store`."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._db = store.dbs["supp"]
        self._exp = store.dbs["supp_exp"]
        self._hdb = store.dbs["supp_h"]
        self._meta = store.dbs["meta"]
        self._secret: bytes | None = None
        from salvo.core import cluster_store  # it imports this module

        self._outbox_add_in = cluster_store.outbox_add_in

    # ---- writes ------------------------------------------------------------------------

    def make_entry(
        self,
        target: str,
        *,
        tenant: str = "",
        reason: str = "manual",
        source: str = "manual",
        created: float,
        expires: float | None = None,
    ) -> tuple[bytes, SuppressionEntry]:
        """Validate and normalize one entry; raises InvalidAddressError or ValueError."""
        parsed = parse_target(target)
        if tenant:
            _check_label("tenant", tenant)
        _check_label("reason", reason)
        if source and (not source.isprintable() or len(source) > 200):
            raise ValueError(f"source must be printable and at most 200 characters: {source!r}")
        entry = SuppressionEntry(parsed.display, tenant, reason, source, created, expires)
        return entry_key(tenant, parsed.kind, parsed.key), entry

    def put_in(
        self,
        txn: Any,
        items: Iterable[tuple[bytes, SuppressionEntry]],
        *,
        publish: bool = True,
    ) -> int:
        """Write entries inside ``txn`` (replacing existing ones); return the count.

        In a cluster, ``publish`` also puts them in the outbox for the other nodes (False
        for entries that came from them)."""
        items = list(items)
        if publish and items:
            self._outbox_add_in(txn, self.store, items)
        n = 0
        for key, entry in items:
            old = txn.get(key, db=self._db)
            if old is not None:
                self._drop_expiry(txn, key, _DEC.decode(old))
            txn.put(key, ENC.encode(entry), db=self._db)
            if entry.expires is not None:
                txn.put(time_seq_key(entry.expires, 0) + key, b"", db=self._exp)
            n += 1
        return n

    def add(
        self,
        targets: Iterable[str],
        *,
        now: float,
        tenant: str = "",
        reason: str = "manual",
        source: str = "manual",
        expires: float | None = None,
    ) -> int:
        """Suppress addresses or domains (validated first, then one transaction)."""
        items = [
            self.make_entry(
                t, tenant=tenant, reason=reason, source=source, created=now, expires=expires
            )
            for t in targets
        ]
        return self.store.write(lambda txn: self.put_in(txn, items))

    def remove(self, targets: Iterable[str], *, tenant: str = "") -> int:
        """Remove entries for these addresses or domains in ``tenant``; return how many."""
        keys = [entry_key(tenant, t.kind, t.key) for t in map(parse_target, targets)]

        hashed = [t.key for t in map(parse_target, targets) if t.kind == b"a"]

        def fn(txn: Any) -> int:
            self._outbox_add_in(txn, self.store, [(key, None) for key in keys])
            n = sum(self.delete_in(txn, key) for key in keys)
            secret = self.secret_in(txn) if hashed else None
            if secret is not None:  # lifting an erased address's suppression
                scope = tenant.encode() + b"\0"
                n += sum(txn.delete(scope + address_hash(secret, k), db=self._hdb) for k in hashed)
            return n

        return self.store.write(fn)

    def delete_in(self, txn: Any, key: bytes) -> int:
        """Delete the entry under an LMDB key inside ``txn`` (not published); 1 or 0."""
        old = txn.get(key, db=self._db)
        if old is None:
            return 0
        self._drop_expiry(txn, key, _DEC.decode(old))
        return int(txn.delete(key, db=self._db))

    def _drop_expiry(self, txn: Any, key: bytes, entry: SuppressionEntry) -> None:
        if entry.expires is not None:
            txn.delete(time_seq_key(entry.expires, 0) + key, db=self._exp)

    # ---- hashed entries (erased addresses) ---------------------------------------------

    def secret_in(
        self, txn: Any, random_bytes: Callable[[int], bytes] | None = None
    ) -> bytes | None:
        """The hashing secret; made with ``random_bytes`` (inside ``txn``) when missing."""
        if self._secret is not None:
            return self._secret
        raw = txn.get(SECRET, db=self._meta)
        if raw is not None:
            self._secret = bytes(raw)  # it never changes once made
            return self._secret
        if random_bytes is None:
            return None
        made = random_bytes(32)
        txn.put(SECRET, made, db=self._meta)
        return made  # not kept: the transaction may still abort

    def put_hashed_in(self, txn: Any, secret: bytes, key: str, entry: SuppressionEntry) -> bytes:
        """Suppress a lookup key through its hash only (the entry's target a placeholder);
        returns the hash. Never published to a cluster: the other nodes lack the secret."""
        digest = address_hash(secret, key)
        entry = msgspec.structs.replace(entry, target=ERASED_TARGET, expires=None)
        txn.put(entry.tenant.encode() + b"\0" + digest, ENC.encode(entry), db=self._hdb)
        return digest

    def hashed_count(self) -> int:
        """Number of hashed (erased) entries."""
        return self.store.read(lambda txn: txn.stat(self._hdb)["entries"])

    def _check_hashed_in(
        self, txn: Any, keys: Sequence[str], scopes: tuple[bytes, ...], now: float
    ) -> list[SuppressionEntry | None]:
        secret = self.secret_in(txn)
        out: list[SuppressionEntry | None] = [None] * len(keys)
        if secret is None:
            return out
        digests = [address_hash(secret, k) for k in keys]
        found = dict(txn.cursor(db=self._hdb).getmulti([s + d for s in scopes for d in digests]))
        if not found:
            return out
        for i, digest in enumerate(digests):
            for scope in scopes:  # tenant scope before global
                raw = found.get(scope + digest)
                if raw is not None and (entry := _DEC.decode(raw)).active(now):
                    out[i] = entry
                    break
        return out

    def purge_expired_in(self, txn: Any, now: float, limit: int = 10_000) -> int:
        """Delete up to ``limit`` entries whose expiry has passed; return how many."""
        end = time_seq_key(now, 0)
        done = []
        for key in txn.cursor(db=self._exp).iternext(values=False):
            if key[:16] > end or len(done) >= limit:
                break
            done.append(key)
        for key in done:
            txn.delete(key, db=self._exp)
            txn.delete(key[16:], db=self._db)
        return len(done)

    # ---- reads -------------------------------------------------------------------------

    def check_in(
        self, txn: Any, keys: Sequence[str], tenant: str, now: float
    ) -> list[SuppressionEntry | None]:
        """For each lookup key (``casefold(local)@a-label``) the entry suppressing it.

        One ``getmulti`` for every address entry (tenant and global scope) and every
        distinct domain entry; the per-key work is only done for keys with a hit.
        """
        scopes = (tenant.encode() + b"\0", b"\0") if tenant else (b"\0",)
        if txn.stat(self._hdb)["entries"]:
            hashed = self._check_hashed_in(txn, keys, scopes, now)
            if any(hashed):
                clear = self._check_clear_in(txn, keys, scopes, now)
                return [c or h for c, h in zip(clear, hashed, strict=True)]
        return self._check_clear_in(txn, keys, scopes, now)

    def _check_clear_in(
        self, txn: Any, keys: Sequence[str], scopes: tuple[bytes, ...], now: float
    ) -> list[SuppressionEntry | None]:
        encoded = [k.encode() for k in keys]
        domains = {k[k.rindex(b"@") + 1 :] for k in encoded}
        wanted = [s + b"a" + k for s in scopes for k in encoded]
        wanted += [s + b"d" + d for s in scopes for d in domains]
        found = txn.cursor(db=self._db).getmulti(wanted)
        if not found:
            return [None] * len(keys)
        # The first active entry wins: address before domain, tenant scope before global.
        by_address: dict[bytes, SuppressionEntry] = {}
        by_domain: dict[bytes, SuppressionEntry] = {}
        for scope in scopes:
            as_address, as_domain, cut = scope + b"a", scope + b"d", len(scope) + 1
            for cand, raw in found:
                if cand.startswith(as_address):
                    hits = by_address
                elif cand.startswith(as_domain):
                    hits = by_domain
                else:
                    continue
                target = cand[cut:]
                if target not in hits and (entry := _DEC.decode(raw)).active(now):
                    hits[target] = entry
        if not by_domain:
            return [by_address.get(k) for k in encoded]
        return [by_address.get(k) or by_domain.get(k[k.rindex(b"@") + 1 :]) for k in encoded]

    def check_keys(
        self, keys: Sequence[str], *, tenant: str = "", now: float
    ) -> list[SuppressionEntry | None]:
        """Check normalized lookup keys (``casefold(local)@a-label``, as the spool stores
        them in ``RcptRecord.key``) in one read transaction; keys are not validated."""
        return self.store.read(lambda txn: self.check_in(txn, keys, tenant, now))

    def check_many(
        self, addresses: Iterable[str], *, tenant: str = "", now: float
    ) -> list[SuppressionEntry | None]:
        """Check addresses (``addr``, ``<addr>`` or ``Name <addr>``) in one read
        transaction; raises InvalidAddressError for the first invalid one."""
        keys = [mailbox_key(a)[0] for a in addresses]
        return self.store.read(lambda txn: self.check_in(txn, keys, tenant, now))

    def entries(
        self, *, reason: str | None = None, tenant: str | None = None, limit: int | None = None
    ) -> list[SuppressionEntry]:
        """Entries in key order (global first), filtered by reason and tenant."""

        def fn(txn: Any) -> list[SuppressionEntry]:
            out = []
            prefix = tenant.encode() + b"\0" if tenant is not None else b""
            cur = txn.cursor(db=self._db)
            if not cur.set_range(prefix):
                return out
            for key, raw in cur:
                if not key.startswith(prefix) or (limit is not None and len(out) >= limit):
                    break
                entry = _DEC.decode(raw)
                if reason is None or entry.reason == reason:
                    out.append(entry)
            return out

        return self.store.read(fn)

    def count(self) -> int:
        """Number of entries (expired ones not yet purged included)."""
        return self.store.read(lambda txn: txn.stat(self._db)["entries"])
