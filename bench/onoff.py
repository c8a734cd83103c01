"""End-to-end on/off comparisons measured in one run (the bookkeeping's and the
encryption's costs): the main row of ``salvo bench`` run ``2 N`` times, alternately with
the feature on and off (on/off, then off/on, ... so that a drift of the machine's load
hits both alike), and the medians of msg/s and of the node's CPU per message."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

from salvo.bench import harness

NODE_PROCESSES = ("supervisor", "core", "signer")
FIGURES = ("msg_per_s", "cpu_us_per_msg", "core_us_per_msg")


def node_cpu_us(row: dict) -> float:
    """CPU-microseconds per message of the node's own processes."""
    per = row["cpu_us_per_msg"]
    return sum(v for k, v in per.items() if k.startswith(NODE_PROCESSES))


def figures(row: dict, mode: str, name: str) -> dict:
    """One run's figures (``row``: a ``suite.salvo_run`` row), checked exactly once."""
    if not row["exactly_once"]:
        raise RuntimeError(f"{name}: not every message arrived exactly once")
    return {
        "mode": mode,
        "msg_per_s": row["msg_per_s"],
        "cpu_us_per_msg": node_cpu_us(row),
        "core_us_per_msg": row["cpu_us_per_msg"].get("core", 0.0),
    }


def run_pairs(label: str, pairs: int, one_run: Callable[[Path, str, str], dict]) -> list[dict]:
    """``pairs`` on/off pairs of ``one_run(tmp, name, mode)``, each printed as it ends."""
    runs: list[dict] = []
    with harness.workdir() as tmp:
        for i in range(pairs):
            for mode in ("on", "off") if i % 2 == 0 else ("off", "on"):
                run = one_run(tmp, f"{mode}-{i}", mode)
                runs.append(run)
                print(
                    f"pair {i + 1} {label} {mode:>3}: {run['msg_per_s']:8,.0f} msg/s  "
                    f"node {run['cpu_us_per_msg']:6.1f} CPU-us/msg  "
                    f"(core {run['core_us_per_msg']:5.1f})",
                    flush=True,
                )
    return runs


def summarize(runs: list[dict]) -> dict:
    out: dict = {}
    for mode in ("on", "off"):
        mine = [r for r in runs if r["mode"] == mode]
        out[mode] = {key: statistics.median(r[key] for r in mine) for key in FIGURES}
    on, off = out["on"], out["off"]
    out["throughput_cost"] = 1 - on["msg_per_s"] / off["msg_per_s"]
    out["cpu_cost"] = on["cpu_us_per_msg"] / off["cpu_us_per_msg"] - 1
    return out


def print_medians(result: dict, pairs: int, messages: int) -> None:
    print(f"\nmedians of {pairs} runs each, {messages:,} messages per run:")
    print(f"  {'':4} {'msg/s':>9} {'node CPU-us/msg':>16} {'core CPU-us/msg':>16}")
    for mode in ("on", "off"):
        m = result[mode]
        print(
            f"  {mode:4} {m['msg_per_s']:9,.0f} {m['cpu_us_per_msg']:16.1f} "
            f"{m['core_us_per_msg']:16.1f}"
        )
    print(f"  throughput cost (1 - on/off msg/s):   {result['throughput_cost']:+.1%}")
    print(f"  CPU cost (on/off node CPU per msg - 1): {result['cpu_cost']:+.1%}")
