"""A short, seeded fuzz run of every target (salvo.bench.fuzz): 0 crashes.

Each target gets its seeds and 2,000 seeded mutations of them, then 100 Hypothesis
examples (random bytes and the target's structured inputs), with fixed seeds: a failure
here reproduces with the same command. The long coverage-guided runs are in
docs/security.md.
"""

from __future__ import annotations

import pytest

from salvo.bench import fuzz
from salvo.bench.fuzz_targets import TARGETS, cleanup, run_one

MUTATIONS = 2_000
EXAMPLES = 100


@pytest.fixture(scope="module", autouse=True)
def _key_folder():
    # The compose target writes its DKIM key once, under a temporary folder.
    yield
    cleanup()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_survives_mutations(name: str, tmp_path) -> None:
    result = fuzz.run_mutate(name, MUTATIONS, tmp_path, seed=14)
    assert result.executions == MUTATIONS, result
    assert result.crashes == 0, (result.detail, result.saved)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_survives_hypothesis(name: str, tmp_path) -> None:
    result = fuzz.run_hypothesis(name, EXAMPLES, tmp_path, seed=14)
    assert result.executions >= EXAMPLES, result
    assert result.crashes == 0, (result.detail, result.saved)


def test_the_first_seed_is_a_good_input() -> None:
    # The first seed of each target is a good input (no error at all, not even a
    # documented one): it starts atheris deep in the parser. The others may be refused.
    for target in TARGETS.values():
        seeds = target.seeds()
        assert seeds, target.name
        target.run(seeds[0])
        for data in seeds[1:]:
            run_one(target, data)


def test_a_crash_is_counted_saved_and_replayable(tmp_path) -> None:
    # A target whose parser lets an undocumented error out is a finding: the runner
    # saves the input, prints it, and --replay runs it again.
    from dataclasses import replace

    def broken(data: bytes) -> None:
        if b"@" in data:
            raise KeyError("boom")

    TARGETS["_broken"] = replace(TARGETS["address"], name="_broken", run=broken)
    try:
        result = fuzz.run_mutate("_broken", 500, tmp_path, seed=1)
        assert result.crashes == 1 and result.saved
        assert "KeyError" in result.detail
        assert fuzz.replay("_broken", result.saved) == 1
    finally:
        del TARGETS["_broken"]


def test_the_command_prints_the_table(tmp_path, capsys) -> None:
    status = fuzz.main(
        ["--engine", "mutate", "--runs", "300", "--target", "ehlo", "--out", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "| ehlo" in out and "| mutate" in out and "300" in out
