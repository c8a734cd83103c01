"""CSV import and export of the suppression list.

Columns: ``address, tenant, reason, source, created, expires``. ``address`` is an address
or a domain; ``tenant`` empty means global; ``created`` and ``expires`` are ISO 8601 times
(UTC ``2024-05-01T12:00:00Z``; an offset or epoch seconds are also read) or empty (created:
now; expires: never). A header line is optional on import and always written on export.

Import is all or nothing: every line is validated first; any malformed line raises
:class:`CsvImportError` listing each bad line number and what is wrong, and nothing is
written. A valid file is written in one transaction.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from salvo.core import host
from salvo.core.errors import CsvImportError, InvalidAddressError
from salvo.core.suppression import SuppressionEntry, SuppressionStore

__all__ = ["COLUMNS", "export_csv", "format_time", "import_csv", "parse_time"]

COLUMNS = ("address", "tenant", "reason", "source", "created", "expires")

Progress = Callable[[str, int], None]


def parse_time(text: str) -> float:
    """ISO 8601 (naive = UTC) or epoch seconds to epoch seconds; raises ValueError."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def format_time(t: float | None) -> str:
    """Epoch seconds to ``YYYY-MM-DDTHH:MM:SSZ`` (empty for None)."""
    if t is None:
        return ""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time_column(name: str, text: str, default: float | None) -> float | None:
    if not text.strip():
        return default
    try:
        return parse_time(text)
    except ValueError:
        raise ValueError(
            f"{name}: {text!r} is not a time (use 2024-05-01T12:00:00Z or epoch seconds)"
        ) from None


def _read_rows(
    store: SuppressionStore, path: str, now: float, progress: Progress | None
) -> tuple[list[tuple[bytes, SuppressionEntry]], list[tuple[int, str]]]:
    items, problems = [], []
    with host.open_text(path) as fh:
        reader = csv.reader(fh if progress is None else _told(fh, progress))
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if line == 1 and [c.strip().lower() for c in row] == list(COLUMNS[: len(row)]):
                continue  # the header
            if not 1 <= len(row) <= len(COLUMNS):
                problems.append((line, f"expected 1 to {len(COLUMNS)} columns, got {len(row)}"))
                continue
            address, tenant, reason, source, created, expires = (*row, "", "", "", "", "")[:6]
            try:
                item = store.make_entry(
                    address,
                    tenant=tenant.strip(),
                    reason=reason.strip() or "manual",
                    source=source.strip() or "import",
                    created=_time_column("created", created, now),
                    expires=_time_column("expires", expires, None),
                )
            except InvalidAddressError as exc:
                problems.append((line, exc.detail + f" ({address!r})"))
            except ValueError as exc:
                problems.append((line, str(exc)))
            else:
                items.append(item)
    return items, problems


def _told(lines: Iterable[str], progress: Progress) -> Iterator[str]:
    for line in lines:
        progress("read", len(line))
        yield line


def _told_items(items: list, progress: Progress) -> Iterator:
    for item in items:
        yield item
        progress("written", 1)


def import_csv(
    store: SuppressionStore,
    path: str | os.PathLike[str],
    now: float,
    progress: Progress | None = None,
) -> int:
    """Import a CSV file; return the number of entries written (all or nothing).

    ``progress(phase, n)``: told each line's characters as it is ``"read"``, then each
    entry as it is ``"written"`` (in one transaction, after every line checked out).
    """
    try:
        items, problems = _read_rows(store, os.fspath(path), now, progress)
    except UnicodeDecodeError as exc:
        raise CsvImportError(os.fspath(path), [(0, f"not UTF-8 text: {exc}")]) from None
    except csv.Error as exc:
        raise CsvImportError(os.fspath(path), [(0, f"unreadable CSV: {exc}")]) from None
    if problems:
        raise CsvImportError(os.fspath(path), problems)
    if progress is not None:
        progress("checked", len(items))
        items = _told_items(items, progress)
    return store.store.write(lambda txn: store.put_in(txn, items))


def export_csv(store: SuppressionStore, path: str | os.PathLike[str]) -> int:
    """Write every entry (expired ones not yet purged included); return the count."""
    entries = store.entries()
    tmp = f"{os.fspath(path)}.tmp"
    with host.open_text(tmp, "w") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        writer.writerows(_row(e) for e in entries)
    host.replace(tmp, path)
    return len(entries)


def _row(e: SuppressionEntry) -> tuple[Any, ...]:
    return (e.target, e.tenant, e.reason, e.source, format_time(e.created), format_time(e.expires))
