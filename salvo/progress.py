"""Progress of long command-line work: a bar on stderr when it is a terminal, nothing when
it is piped or redirected (so logs and scripts get only the results)."""

from __future__ import annotations

import sys
from typing import IO

from tqdm import tqdm


def is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def progress_bar(
    desc: str, *, total: float | None = None, unit: str = "it", file: IO[str] | None = None
) -> tqdm:
    """A bar for ``total`` units (bytes are scaled: KB, MB), or a counter without one."""
    stream = file if file is not None else sys.stderr
    return tqdm(
        desc=desc,
        total=total or None,
        unit=unit,
        unit_scale=unit == "B",
        unit_divisor=1024 if unit == "B" else 1000,
        file=stream,
        disable=not is_terminal(stream),
        dynamic_ncols=True,
        mininterval=0.2,
        leave=True,
    )
