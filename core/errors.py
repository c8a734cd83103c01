"""Errors of salvo's core: the root lives in :mod:`salvo.ext.errors`; these add scope.

``temporary`` says whether the same operation may succeed later (the node answers
"retry") or never will (the input or the directory must be fixed).
"""

from __future__ import annotations

from salvo.ext.errors import SalvoError

__all__ = [
    "CsvImportError",
    "InvalidAddressError",
    "SalvoError",
    "SpoolError",
    "SpoolFullError",
    "StartupError",
    "StoreMismatchError",
]


class InvalidAddressError(SalvoError, ValueError):
    """An email address or domain cannot be used (syntax, length, controls, bad IDN)."""

    def __init__(self, text: str, detail: str) -> None:
        super().__init__(text, detail)
        self.text = text
        self.detail = detail

    def __str__(self) -> str:
        return f"invalid address {self.text!r}: {self.detail}"


class SpoolError(SalvoError):
    """The spool store cannot do what was asked."""


class SpoolFullError(SpoolError):
    """No room for new data (map cap or disk full); committed data is intact. Retry later."""

    temporary = True


class StoreMismatchError(SpoolError):
    """The directory holds something other than a salvo store (or a newer format)."""


class StartupError(SalvoError):
    """A node cannot start: a port in use, a data dir it cannot use or that another node
    holds, a key it cannot read. The message is the one line ``salvo node`` prints;
    ``exit_status`` is its exit status (2: the config itself is wrong, 1: anything else).
    """

    def __init__(self, message: str, exit_status: int = 1) -> None:
        super().__init__(message)
        self.exit_status = exit_status


class CsvImportError(SalvoError, ValueError):
    """A CSV file has malformed lines; nothing of it was imported.

    ``problems`` lists ``(line_number, what_is_wrong)`` for every bad line.
    """

    def __init__(self, path: str, problems: list[tuple[int, str]]) -> None:
        super().__init__(path, problems)
        self.path = path
        self.problems = problems

    def __str__(self) -> str:
        shown = "; ".join(f"line {n}: {why}" for n, why in self.problems[:20])
        more = len(self.problems) - 20
        tail = f"; and {more} more" if more > 0 else ""
        return (
            f"{self.path}: {len(self.problems)} malformed line(s), nothing imported "
            f"(fix them and import again): {shown}{tail}"
        )
