"""``salvo warmup status``: each warming (source, provider), its step, today's cap and use,
and why it held (docs/warmup.md). Reads the spool (read transactions: safe beside a
running node)."""

from __future__ import annotations

import argparse
import json
import time

from salvo.core import host
from salvo.core.config import load_config
from salvo.core.spool import Spool
from salvo.core.spool_env import Store
from salvo.core.warmup import Plan, cap_of, day_of, roll


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "warmup",
        help="warm-up of new source addresses",
        description="The warm-up plans of source addresses, per provider.",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = sub.add_parser("status", help="step, cap, use today and state of each warming lane")
    s.add_argument("--config", help="the node's config file (default: the embedded one)")
    s.add_argument("--data", help="data directory (default: the config's [node] data_dir)")
    s.add_argument("--json", action="store_true", help="one JSON object per lane, in a list")
    s.set_defaults(func=_status)


def rows(config, spool: Spool, now: float) -> list[dict]:
    """One row per lane the spool knows, and one per warming source without mail yet."""
    plans = {n: Plan.of(n, p, host.time_zone(p.timezone)) for n, p in config.warmup.items()}
    warming = config.warming_sources()
    out = []
    seen = set()
    for source, provider, stored in spool.warmup.lanes():
        seen.add(source)
        plan = plans.get(warming.get(source, ""))
        row = {"source": source, "provider": provider, "plan": stored.plan}
        if plan is None:  # no longer warming: the record as last written
            row.update(step=stored.step + 1, cap=None, used=stored.sent)
            row.update(state="not warming", why="no plan in the config for this source")
        else:
            s = roll(stored, plan, day_of(now, plan.tz))
            if s.plan != plan.name:
                s = stored  # written under another plan; the node restarts it
            cap = cap_of(s, plan)
            row.update(plan=plan.name, step=s.step + 1, steps=len(plan.daily), cap=cap)
            row.update(used=s.sent, delivered=s.delivered, deferred=s.deferred)
            row.update(bounced=s.bounced, complained=s.complained, state=s.state, why=s.why)
        out.append(row)
    for source, name in sorted(warming.items()):
        if source not in seen:
            plan = plans[name]
            out.append(
                {
                    "source": source,
                    "provider": "*",
                    "plan": name,
                    "step": 1,
                    "steps": len(plan.daily),
                    "cap": plan.daily[0],
                    "used": 0,
                    "state": "started",
                    "why": "no mail sent yet",
                }
            )
    return out


def _status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    data = args.data or config.data_dir
    spool = Spool(Store(data))  # read only: no recover(), that is the node's
    try:
        table = rows(config, spool, time.time())
    finally:
        spool.close()
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    if not table:
        print("no warming sources ([pools.NAME] warmup) and no warm-up records")
        return 0
    head = f"{'source':<16} {'provider':<24} {'plan':<12} {'step':>7} {'cap':>8} {'used':>8}  state"
    print(head)
    for r in table:
        step = f"{r['step']}/{r.get('steps', '?')}"
        cap = "-" if r["cap"] is None else str(r["cap"])
        why = f" ({r['why']})" if r.get("why") else ""
        print(
            f"{r['source']:<16} {r['provider']:<24} {r['plan']:<12} {step:>7} {cap:>8} "
            f"{r['used']:>8}  {r['state']}{why}"
        )
    return 0
