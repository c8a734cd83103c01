"""The one LMDB environment behind the spool and the suppression list.

This module is the only place in ``core`` that touches ``lmdb`` itself; it is imported
lazily (house rule: ``core`` imports no I/O library at module level). Everything else
works on the transactions this class hands out.

- Every write transaction commits with the environment opened ``sync=True,
  metasync=True``: a returned :meth:`Store.write` means the data is on stable storage.
- The map grows by doubling (only with no transaction of this process open, guarded by a
  reader gate) up to ``max_map_size``. Submissions stop ``reserve`` bytes short of the cap
  so that outcomes, expiry and purge can still be written when new work is refused.
- A full map or a full disk raises :class:`SpoolFullError` (temporary); the failed
  transaction is aborted, so nothing committed before is touched.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from salvo.core.errors import SpoolError, SpoolFullError, StoreMismatchError

__all__ = ["DB_NAMES", "FORMAT", "Store"]

T = TypeVar("T")

FORMAT = b"salvo-store"
VERSION = 1
DB_NAMES = (
    "meta",  # format marker, version, next job sequence number, encryption mode
    "jobs",  # seq -> JobRecord
    "rcpts",  # seq+idx -> RcptRecord
    "vars",  # seq+idx -> msgpack variables (deleted when the recipient is final)
    "due",  # next_attempt_ms+seq+idx -> b"" (queued and deferred recipients)
    "idem",  # job id NUL tenant -> seq
    "tc",  # tenant NUL campaign NUL seq -> b""
    "dom",  # domain NUL seq+idx -> b"" (recipients not yet final)
    "left",  # seq -> u32 recipients not yet final
    "exp",  # expires_ms+seq -> b"" (jobs not yet finished)
    "purge",  # purge_ms+seq -> b"" (finished jobs)
    "supp",  # scope NUL kind target -> SuppressionEntry
    "supp_exp",  # expires_ms + supp key -> b""
    "fb_raw",  # report id -> RawReport (received, not yet processed)
    "fb_soft",  # tenant NUL address key NUL + time_ms -> b"" (soft bounces in the window)
    "fb_count",  # counter name -> u64 (reports by kind, complaints per campaign, ...)
    "kpi",  # minute (u32) + dimension -> msgpack {counter: n} (salvo.core.kpis)
    "pause",  # kind NUL scope NUL name -> Pause (operator pauses and cancels, core/pauses)
    "wh_out",  # webhook NUL u64 seq -> u64 event ms + event JSON (core/outbox)
    "wh_stat",  # webhook -> msgpack [pending, delivered, expired] (core/outbox)
    "warmup",  # source NUL provider -> LaneState (warm-up per lane, core/warmup_store)
    "cluster",  # suppression outbox and replication state (core/cluster_store)
    "keys",  # tenant NUL name NUL generation -> wrapped data key (core/spool_keys)
    "supp_h",  # scope NUL HMAC(address key) -> SuppressionEntry (erased addresses)
    "erase",  # request id -> erasure waiting for the event logs' scrub (core/erasure)
)
STORE_SUBDIR = "store"
_FILL = b"\0fill"  # meta keys of scrub_free_pages's temporary values
NODE_LOCK = "node.lock"  # taken by a running node before it opens the store (actors/supervisor)
MIB = 1 << 20


def _lmdb():
    import lmdb

    return lmdb


class Store:
    """An open salvo store in ``data_dir/store`` (created when ``data_dir`` is new).

    ``map_size`` is the initial map, ``max_map_size`` the cap, ``reserve`` the room kept
    free of submissions for outcome, expiry and purge writes.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        map_size: int = 64 * MIB,
        max_map_size: int = 16 * 1024 * MIB,
        reserve: int | None = None,
    ) -> None:
        lmdb = _lmdb()
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / STORE_SUBDIR
        self.max_map_size = max_map_size
        self.reserve = reserve if reserve is not None else max(max_map_size // 20, 256 * 1024)
        fresh = _check_directory(self.data_dir, self.path)
        try:
            self.env = lmdb.open(
                str(self.path),
                map_size=min(map_size, max_map_size),
                max_dbs=len(DB_NAMES) + 2,
                sync=True,
                metasync=True,
                readahead=False,
                max_readers=254,
            )
        except lmdb.Error as exc:
            raise StoreMismatchError(
                f"{self.path} is not a salvo store ({exc}); point --data at a salvo data "
                "directory or an empty one"
            ) from None
        self._gate = threading.Condition()
        self._readers = 0
        self._resizing = False
        self.dbs: dict[str, Any] = {}
        self._open_dbs(fresh)

    def _open_dbs(self, fresh: bool) -> None:
        with self.env.begin(write=True) as txn:
            names = {key for key, _ in txn.cursor()}
            if not fresh and b"meta" not in names:
                raise StoreMismatchError(f"{self.path} is an LMDB file but not a salvo store")
            for name in DB_NAMES:
                self.dbs[name] = self.env.open_db(name.encode(), txn=txn)
            meta = self.dbs["meta"]
            marker = txn.get(b"format", db=meta)
            if marker is None:
                txn.put(b"format", FORMAT, db=meta)
                txn.put(b"version", str(VERSION).encode(), db=meta)
            elif marker != FORMAT:
                raise StoreMismatchError(f"{self.path} holds {marker!r}, not a salvo store")
            elif int(txn.get(b"version", b"0", db=meta)) > VERSION:
                raise StoreMismatchError(
                    f"{self.path} was written by a newer salvo (format "
                    f"{txn.get(b'version', db=meta).decode()}); upgrade salvo"
                )
        self.page_size = self.env.stat()["psize"]

    # ---- transactions ------------------------------------------------------------------

    def write(self, fn: Callable[[Any], T], *, submit: bool = False) -> T:
        """Run ``fn(txn)`` in one write transaction and commit it durably.

        ``fn`` may run more than once (after the map grew); it must not keep state across
        calls. With ``submit=True`` the write is refused once the data would reach into
        the reserve kept for outcomes and purge.
        """
        lmdb = _lmdb()
        for _ in range(64):
            try:
                with self.env.begin(write=True) as txn:
                    result = fn(txn)
                    if submit and self.used_bytes(txn) > self.max_map_size - self.reserve:
                        raise SpoolFullError(
                            f"spool is full ({self.max_map_size // MIB} MiB cap, "
                            f"{self.reserve // 1024} KiB kept for deliveries); "
                            "retry later, after finished jobs are purged"
                        )
                return result
            except lmdb.MapFullError:
                if not self._grow():
                    raise SpoolFullError(
                        f"spool map is at its cap of {self.max_map_size // MIB} MiB; retry later"
                    ) from None
            except lmdb.MapResizedError:
                self._resize(0)  # another process grew the map: adopt its size
            except lmdb.DiskError as exc:
                raise SpoolFullError(f"disk full under {self.path}: {exc}; retry later") from None
            except lmdb.Error as exc:
                raise SpoolError(f"spool write failed: {exc}") from exc
        raise SpoolError("spool write kept failing after resizing the map")

    def read(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(txn)`` in a read transaction (never blocks the writer)."""
        lmdb = _lmdb()
        for _ in range(8):
            with self._reading():
                try:
                    with self.env.begin() as txn:
                        return fn(txn)
                except lmdb.MapResizedError:
                    pass
            self._resize(0)
        raise SpoolError("spool read kept failing: the map is being resized")

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        with self._gate:
            while self._resizing:
                self._gate.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._gate:
                self._readers -= 1
                self._gate.notify_all()

    def _resize(self, size: int) -> None:
        # set_mapsize invalidates every transaction of this process: wait for readers.
        with self._gate:
            self._resizing = True
            while self._readers:
                self._gate.wait()
            try:
                self.env.set_mapsize(size)
            finally:
                self._resizing = False
                self._gate.notify_all()

    def _grow(self) -> bool:
        current = self.env.info()["map_size"]
        if current >= self.max_map_size:
            return False
        self._resize(min(max(current * 2, current + MIB), self.max_map_size))
        return True

    # ---- introspection -----------------------------------------------------------------

    def used_bytes(self, txn: Any) -> int:
        """Bytes of pages holding data of every sub-database, as seen by ``txn``."""
        pages = 0
        for st in (txn.stat(), *(txn.stat(db) for db in self.dbs.values())):
            pages += st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
        return pages * self.page_size

    def file_size(self) -> int:
        """Size of the data file on disk."""
        return (self.path / "data.mdb").stat().st_size

    # ---- erasure: free pages and the file itself ------------------------------------------

    def scrub_free_pages(
        self,
        write: Callable[[Callable[[Any], Any]], Any] | None = None,
        *,
        chunk: int = 256,
        first: int = 0,
        max_pages: int = 1 << 22,
    ) -> int:
        """Overwrite the file's free pages with zeros; returns the pages filled.

        LMDB is copy-on-write: a rewritten or deleted record leaves its old bytes in a
        free page until the page is reused. Fill values of one overflow page each (taken
        from the free list first) are written until the file grows, then deleted: every
        page that was free and reusable now holds zeros. A page still held by an open read
        transaction (of any process) is not reusable yet: call again later.
        ``write(fn)``: how to run a write transaction (default :meth:`write`), at most
        ``chunk`` pages each, ``first`` pages in the first one: LMDB keeps the buffers of
        committed pages for reuse without clearing them; one transaction of more pages
        than it keeps takes them all and leaves them holding zeros.
        """
        write = write or self.write
        meta = self.dbs["meta"]
        size = self.page_size - 16  # one overflow page: the page header is 16 bytes
        zeros = bytes(size)
        filled = 0

        def nudge(txn: Any) -> None:
            txn.put(_FILL, b"", db=meta)
            txn.delete(_FILL, db=meta)

        # Pages freed by the last commit are reusable only two commits later.
        write(nudge)
        write(nudge)
        start = self.env.info()["last_pgno"]

        def fill(txn: Any, start: int, n: int) -> None:
            for i in range(start, start + n):
                txn.put(_FILL + i.to_bytes(4, "big"), zeros, db=meta)

        def drop(txn: Any) -> int:
            cur = txn.cursor(db=meta)
            n = 0
            if cur.set_range(_FILL):
                while n < chunk and cur.key().startswith(_FILL) and cur.delete():
                    n += 1
            return n

        try:
            while filled < max_pages:
                n = max(chunk, first) if not filled else chunk
                write(lambda txn, start=filled, n=n: fill(txn, start, n))
                filled += n
                if self.env.info()["last_pgno"] > start + n:
                    break  # the file grew: the free list is used up
        finally:
            while write(drop):
                pass
        return filled

    def rewrite_pages(
        self,
        names: list[str],
        write: Callable[[Callable[[Any], Any]], Any] | None = None,
        *,
        batch: int = 2000,
    ) -> int:
        """Make every page of these sub-databases be copied afresh.

        LMDB leaves a record's old bytes in the unused middle of a live page when the
        record shrinks, moves or goes, and this process's reused page buffers are not
        cleared. Putting a record back makes LMDB copy its page, used parts only, into a
        buffer that :meth:`scrub_free_pages` just filled with zeros: the copy has a zero
        gap. Call :meth:`scrub_free_pages` before (clean buffers) and after (the old pages
        are free now). Returns the write transactions made."""
        write = write or self.write
        done = 0
        for name in names:
            db = self.dbs[name]
            after: bytes | None = b""
            while after is not None:

                def touch(txn: Any, start: bytes = after, db: Any = db) -> bytes | None:
                    cur = txn.cursor(db=db)
                    if not cur.set_range(start):
                        return None
                    for n, (key, value) in enumerate(cur):
                        if n >= batch:
                            return bytes(key)
                        cur.put(key, value)  # not a no-op: the page gets copied
                    return None

                after = write(touch)
                done += 1
        return done

    def count_in_file(self, pattern: Any, *, block: int = 16 * MIB) -> int:
        """How often a bytes ``pattern`` (a compiled regex) occurs in ``data.mdb``,
        whatever page it is in (live, free or never used)."""
        overlap = 1024
        count = 0
        with open(self.path / "data.mdb", "rb") as f:
            tail = b""
            while chunk := f.read(block):
                data = tail + chunk
                # Count a match only where it starts before the overlap kept for the next
                # block (or anywhere in the last block).
                limit = len(data) - overlap if len(chunk) == block else len(data)
                count += sum(1 for m in pattern.finditer(data) if m.start() < limit)
                tail = data[limit:]
        return count

    def reader_check(self) -> int:
        """Clear reader slots left by dead processes; return how many were cleared."""
        return self.env.reader_check()

    def close(self) -> None:
        """Close the environment (no transaction of this process may be open)."""
        self.env.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_directory(data_dir: Path, store: Path) -> bool:
    """Create a missing data dir; refuse a non-empty one without a store. True when new."""
    if data_dir.exists() and not data_dir.is_dir():
        raise StoreMismatchError(f"{data_dir} is not a directory")
    if (store / "data.mdb").exists():
        return False
    if data_dir.exists() and any(p.name != NODE_LOCK for p in data_dir.iterdir()):
        raise StoreMismatchError(
            f"{data_dir} is not empty and holds no salvo store ({STORE_SUBDIR}/data.mdb); "
            "use an empty or new directory for --data"
        )
    store.mkdir(parents=True, exist_ok=True)
    return True
