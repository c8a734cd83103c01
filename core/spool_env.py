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
)
STORE_SUBDIR = "store"
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
