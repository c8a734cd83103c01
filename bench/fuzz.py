"""Fuzz every parser that reads outside data: ``python -m salvo.bench.fuzz --runs N``.

Runs the targets of :mod:`salvo.bench.fuzz_targets` and prints, per target, the
executions, the executions per second and the crashes; each crashing input is saved under
``--out``/crashes/TARGET/. Engines:

* ``atheris`` (the ``fuzz`` extra): coverage-guided libFuzzer, one process per target
  (``--jobs`` at once), started from the target's seeds; the corpus it grows is kept
  under ``--out``/corpus/TARGET/ and reused by the next run. Stops a target at its first
  crash, a slow input (``--timeout`` seconds) or an out-of-memory.
* ``hypothesis``: in this process, random bytes mixed with the target's structured inputs;
  slower per execution, no coverage feedback. Stops a target at its first crash (shrunk).
* ``mutate``: in this process, the seeds then seeded random mutations of them (bit flips,
  inserts, deletes, repeats, splices), without coverage feedback: cheap and reproducible,
  what the test suite's smoke run uses.

``--engine auto`` (the default) takes atheris when it imports, Hypothesis otherwise.
``--replay FILE...`` runs saved inputs once against ``--target`` (exit 1 if one crashes).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

_DONE = re.compile(rb"Done (\d+) runs in (\d+) second")
_STAT = re.compile(rb"^#(\d+)\s", re.M)
_ARTIFACT = ("crash-", "timeout-", "oom-", "leak-", "slow-unit-")


@dataclass
class Result:
    target: str
    engine: str
    executions: int
    seconds: float
    crashes: int
    saved: list[str]
    detail: str = ""

    @property
    def rate(self) -> float:
        return self.executions / self.seconds if self.seconds > 0 else 0.0


def have_atheris() -> bool:
    return importlib.util.find_spec("atheris") is not None


def _save(folder: Path, data: bytes, kind: str = "crash") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}-{hashlib.sha1(data).hexdigest()}"
    path.write_bytes(data)
    return str(path)


# -- atheris --------------------------------------------------------------------------------


def run_atheris(name: str, runs: int, out: Path, *, seed: int, timeout: int, tmp: str) -> Result:
    from salvo.bench.fuzz_targets import TARGETS

    target = TARGETS[name]
    corpus = out / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    seeds = target.seeds()
    for data in seeds:
        _save(corpus, data, "seed")
    crashes = out / "crashes" / name
    crashes.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(crashes))
    max_len = max([4096, *(len(s) for s in seeds)])
    cmd = [
        sys.executable,
        "-m",
        "salvo.bench.fuzz_worker",
        name,
        f"-runs={runs}",
        f"-seed={seed}",
        f"-max_len={max_len}",
        f"-timeout={timeout}",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={crashes}/",
        str(corpus),
    ]
    env = {**os.environ, "SALVO_FUZZ_TMP": tmp}
    started = time.monotonic()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "wb") as fh:  # written as it goes: progress is visible
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, check=False)
    seconds = time.monotonic() - started
    log = (logs / f"{name}.log").read_bytes()
    done = _DONE.search(log)
    if done:
        executions = int(done.group(1))
    else:
        stats = _STAT.findall(log)
        executions = int(stats[-1]) if stats else 0
    saved = sorted(
        str(crashes / f) for f in set(os.listdir(crashes)) - before if f.startswith(_ARTIFACT)
    )
    detail = ""
    if proc.returncode != 0 and not saved:
        detail = f"exit status {proc.returncode}; see {out / 'logs' / (name + '.log')}"
    count = len(saved) or (1 if proc.returncode != 0 else 0)
    return Result(name, "atheris", executions, seconds, count, saved, detail)


# -- Hypothesis ------------------------------------------------------------------------------


def run_hypothesis(name: str, runs: int, out: Path | None, *, seed: int) -> Result:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    from salvo.bench.fuzz_targets import TARGETS, run_one

    target = TARGETS[name]
    count = [0]
    failing: list[bytes] = []
    started = time.monotonic()
    saved: list[str] = []
    for data in target.seeds():
        count[0] += 1
        try:
            run_one(target, data)
        except Exception:
            failing.append(data)
            break
    strategy = st.binary(max_size=512)
    if target.structured is not None:
        strategy = st.one_of(strategy, target.structured())

    @hseed(seed)
    @settings(
        max_examples=max(1, runs),
        database=None,
        deadline=None,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate, Phase.shrink],
    )
    @given(strategy)
    def fuzz(data: bytes) -> None:
        count[0] += 1
        try:
            run_one(target, data)
        except Exception:
            failing.append(data)
            raise

    detail = ""
    if not failing:
        try:
            fuzz()
        except Exception as exc:
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:300]
    seconds = time.monotonic() - started
    if failing and out is not None:
        saved.append(_save(out / "crashes" / name, failing[-1]))  # the shrunk one
    crashes = 1 if failing else 0
    return Result(name, "hypothesis", count[0], seconds, crashes, saved, detail)


# -- mutation (no engine needed: the suite's smoke run) ---------------------------------------


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """One of libFuzzer's simple mutations: flip, insert, delete, repeat or splice."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        at = rng.randint(0, len(buf))
        if op == 0 and buf:
            buf[min(at, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[at:at] = bytes([rng.choice((0, 10, 13, 32, 46, 60, 64, 255, rng.randrange(256)))])
        elif op == 2 and buf:
            del buf[at : at + rng.randint(1, 8)]
        elif op == 3 and buf:
            buf[at:at] = buf[at : at + rng.randint(1, 16)] * rng.randint(1, 8)
        elif op == 4 and pool:
            other = rng.choice(pool)
            cut = rng.randint(0, len(other))
            buf = buf[:at] + other[cut:]
        else:
            buf[at:at] = rng.randbytes(rng.randint(1, 8))
    return bytes(buf[:4096])


def run_mutate(name: str, runs: int, out: Path | None, *, seed: int) -> Result:
    from salvo.bench.fuzz_targets import TARGETS, run_one

    target = TARGETS[name]
    rng = random.Random(f"{seed}:{name}")
    pool = target.seeds() or [b""]
    started = time.monotonic()
    executions, failing, detail = 0, None, ""
    inputs = iter(pool)
    while executions < runs:
        data = next(inputs, None)
        if data is None:
            data = mutate(rng, rng.choice(pool), pool)
        executions += 1
        try:
            run_one(target, data)
        except Exception as exc:
            failing = data
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:300]
            break
        if len(pool) < 256 and rng.random() < 0.05:
            pool.append(data)  # no coverage to guide it: keep some inputs to build on
    seconds = time.monotonic() - started
    saved = []
    if failing is not None and out is not None:
        saved.append(_save(out / "crashes" / name, failing))
    return Result(name, "mutate", executions, seconds, int(failing is not None), saved, detail)


# -- replay and the table --------------------------------------------------------------------


def replay(name: str, files: list[str]) -> int:
    from salvo.bench.fuzz_targets import TARGETS, run_one

    target = TARGETS[name]
    bad = 0
    for file in files:
        try:
            run_one(target, Path(file).read_bytes())
            print(f"{file}: ok")
        except Exception:
            bad += 1
            print(f"{file}: CRASH")
            traceback.print_exc()
    return 1 if bad else 0


def table(results: list[Result]) -> str:
    rows = [("target", "engine", "executions", "exec/s", "seconds", "crashes")]
    for r in results:
        rows.append(
            (
                r.target,
                r.engine,
                f"{r.executions:,}",
                f"{r.rate:,.0f}",
                f"{r.seconds:,.0f}",
                str(r.crashes),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        cells = [
            c.ljust(w) if j < 2 else c.rjust(w)
            for j, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if i == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from salvo.bench.fuzz_targets import TARGETS

    ap = argparse.ArgumentParser(
        prog="python -m salvo.bench.fuzz", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--runs", type=int, default=10_000, help="executions per target")
    ap.add_argument("--target", action="append", choices=sorted(TARGETS), help="repeatable")
    ap.add_argument("--engine", choices=("auto", "atheris", "hypothesis", "mutate"), default="auto")
    ap.add_argument("--out", default="fuzz-out", help="corpus, crashes and logs go here")
    ap.add_argument("--seed", type=int, default=1, help="the engines' random seed")
    ap.add_argument("--jobs", type=int, default=1, help="atheris: targets run at once")
    ap.add_argument("--timeout", type=int, default=10, help="atheris: seconds one input may take")
    ap.add_argument("--list", action="store_true", help="list the targets and exit")
    ap.add_argument("--replay", nargs="+", metavar="FILE", help="run saved inputs once")
    args = ap.parse_args(argv)
    if args.list:
        for t in TARGETS.values():
            print(f"{t.name:12} {t.what}")
        return 0
    names = args.target or list(TARGETS)
    if args.replay:
        if len(names) != 1:
            ap.error("--replay needs one --target")
        return replay(names[0], args.replay)
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if have_atheris() else "hypothesis"
    elif engine == "atheris" and not have_atheris():
        ap.error("atheris is not installed (pip install 'salvo[fuzz]'); use --engine hypothesis")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"engine {engine}, {args.runs:,} executions per target, {len(names)} targets", flush=True)
    results: list[Result] = []
    tmp = tempfile.mkdtemp(prefix="salvo-fuzz-")
    try:
        if engine == "atheris":

            def one(name: str) -> Result:
                r = run_atheris(name, args.runs, out, seed=args.seed, timeout=args.timeout, tmp=tmp)
                print(f"  {name}: {r.executions:,} executions, {r.crashes} crashes", flush=True)
                return r

            with ThreadPoolExecutor(max(1, args.jobs)) as pool:
                results = list(pool.map(one, names))
        else:
            os.environ["SALVO_FUZZ_TMP"] = tmp
            run = run_hypothesis if engine == "hypothesis" else run_mutate
            for name in names:
                r = run(name, args.runs, out, seed=args.seed)
                print(f"  {name}: {r.executions:,} executions, {r.crashes} crashes", flush=True)
                results.append(r)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(table(results))
    for r in results:
        for path in r.saved:
            print(f"{r.target}: saved {path}")
        if r.detail:
            print(f"{r.target}: {r.detail}")
    return 1 if any(r.crashes for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
