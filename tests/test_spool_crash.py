"""SIGKILL a child submitting through the Trio group-commit writer, 100 times."""

from __future__ import annotations

from pathlib import Path

from salvo.bench.spool_crash import run


def test_every_acked_job_survives_sigkill(tmp_path: Path) -> None:
    stats = run(100, str(tmp_path), per_dir=10, seed=1234)
    assert stats.kills == 100
    assert stats.acked > 100  # the children did commit work before being killed
    assert stats.lost == []
