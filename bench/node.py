"""Throughput of one salvo node, end to end, against baselines measured in the same run.

    python -m salvo.bench.node [--quick] [--json FILE] [--profile DIR]

Every row starts a fresh node (``salvo node``, 2 signer processes, its spool durable in
a new temporary folder on disk) with a route for the recipients' domain to a local
Postfix ``smtp-sink``, and DKIM RSA-2048 for the From domain: the configuration of a
real sender on this machine.

Rows
- **accepted**: jobs per second acked by the node to one producer (``salvo.client``,
  many jobs in flight), from the first submit to the last reply; 1 recipient per job and
  1,000 recipients per job. The node runs *with* its route to the sink, so it claims,
  signs and delivers what it accepted while the producer keeps submitting: the figure
  is intake while the node does its real work, not intake into an idle queue.
- **end to end**: 4 KB personalized messages (``bench/samples.py``), from the first submit
  until ``smtp-sink -M N`` has received the N-th message and exited (exact: the sink
  counts the final dots). Jobs of 1,000 recipients (a campaign) and of 1 recipient
  (transactional). CPU seconds of each process over that window are printed per message.
- **ceilings** measured in the same run: Postfix's ``smtp-source -> smtp-sink`` over
  loopback (4 KB, 50 reused sessions: raw SMTP with no MIME, DKIM or spool work), and
  RSA-2048 signatures on both cores (``openssl speed -multi 2``: the physical limit of
  RSA-signed mail).
- **references** from issue 4 and TARGETS.md, *not measured in this run*.

``--profile DIR`` runs the node of the 1,000-recipient end-to-end row with
``SALVO_PROFILE=DIR`` (cProfile in the core and signer processes, see actors/node.py) and
prints the top functions of each process.

Ports: ingress tcp://127.0.0.1:25557, events tcp://127.0.0.1:25558, sinks on 127.0.0.50
and 127.0.0.51 (free ports). Every process started here is stopped on exit or error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from pathlib import Path

import trio

from salvo.bench import harness, samples
from salvo.bench.harness import (
    SMTP_SINK,
    SMTP_SOURCE,
    Sink,
    ceiling_row,
    core_threads,
    cpu_seconds,
    interrupt,
    print_profiles,
    rsa_row,
    workdir,
)
from salvo.client import open_trio_producer

INGRESS = "tcp://127.0.0.1:25557"
EVENTS = "tcp://127.0.0.1:25558"
SINK_HOST = "127.0.0.50"
CEILING_HOST = "127.0.0.51"
SIGNERS = 2

# Figures of issue 4 / TARGETS.md / issue 6: printed for orientation, never measured here.
REFERENCES = [
    ("Postfix 3.7 relay -> smtp-sink, no DKIM", 620.0),
    ("asyncio + aiosmtplib, no DKIM or MIME", 5000.0),
    ("issue 6 target: e2e, RSA-2048, 2 cores", 4500.0),
]

SIZES = {
    # row: (full, quick)
    "accept_1": (20_000, 2_000),  # jobs of 1 recipient
    "accept_1000": (100, 10),  # jobs of 1,000 recipients
    "e2e_1000": (30_000, 3_000),  # messages, in jobs of 1,000 recipients
    "e2e_1": (10_000, 1_000),  # messages, in jobs of 1 recipient
    "ceiling": (100_000, 20_000),  # smtp-source messages
}


# -- processes ------------------------------------------------------------------------------


def Node(folder: Path, sink: Sink, *, signers: int = SIGNERS, profile: Path | None = None):
    """A node with a route for example.org to ``sink`` and an RSA-2048 DKIM key."""
    return harness.Node(
        folder,
        {"example.org": sink.address},
        ingress=INGRESS,
        events=EVENTS,
        signers=signers,
        dkim="rsa",
        profile=profile,
    )


# -- the producer ---------------------------------------------------------------------------


async def submit_all(jobs: list[dict], window: int) -> dict:
    """Submit every job; the time from the first submit to the last reply, and the tally."""
    statuses: dict[str, int] = {}
    accepted = 0
    times = []
    # The client's default timeout: a lost reply costs what it costs a real producer.
    async with open_trio_producer(INGRESS, timeout=30, max_in_flight=window) as producer:
        started = time.perf_counter()
        async for reply in producer.submit_many(jobs, window=window):
            times.append(time.perf_counter() - started)
            statuses[reply.status] = statuses.get(reply.status, 0) + 1
            accepted += len(reply.accepted)
        elapsed = time.perf_counter() - started
    # A pause of seconds between replies means the rest waited for the client's resend
    # timeout: their first reply was lost. Count those, and the rate of the others.
    on_time = next((i for i in range(1, len(times)) if times[i] - times[i - 1] > 5), len(times))
    return {
        "started": started,
        "seconds": elapsed,
        "on_time": on_time,
        "on_time_seconds": times[on_time - 1] if times else 0.0,
        "late_replies": len(times) - on_time,
        "statuses": statuses,
        "accepted": accepted,
    }


# -- rows -----------------------------------------------------------------------------------


def accept_row(tmp: Path, name: str, jobs: int, per_job: int, window: int) -> dict:
    """Jobs/s acked by a node that delivers to a sink meanwhile."""
    batch = samples.jobs(name, jobs * per_job, per_job, campaign="bench")
    with contextlib.ExitStack() as stack:
        sink = Sink(tmp, SINK_HOST)
        stack.callback(sink.stop)
        node = Node(tmp / name, sink)
        stack.callback(node.stop)
        result = trio.run(submit_all, batch, window)
        delivered_meanwhile = sink.received()
    if result["statuses"] != {"accepted": jobs} or result["accepted"] != jobs * per_job:
        raise RuntimeError(f"{name}: unexpected replies {result['statuses']}")
    seconds = result["seconds"]
    return {
        "jobs": jobs,
        "recipients": jobs * per_job,
        "seconds": seconds,
        "jobs_per_s": jobs / seconds,
        "recipients_per_s": jobs * per_job / seconds,
        "jobs_per_s_on_time": result["on_time"] / result["on_time_seconds"],
        "late_replies": result["late_replies"],
        "delivered_meanwhile": delivered_meanwhile,
    }


def e2e_row(
    tmp: Path, name: str, messages: int, per_job: int, window: int, profile: Path | None = None
) -> dict:
    """Messages/s from the first submit until the sink has received all of them."""
    batch = samples.jobs(name, messages, per_job, campaign="bench")
    with contextlib.ExitStack() as stack:
        sink = Sink(tmp, SINK_HOST, stop_after=messages)
        stack.callback(sink.stop)
        node = Node(tmp / name, sink, profile=profile / name if profile else None)
        stack.callback(node.stop)
        pids = {"core": node.pids["core"]}
        pids |= {k: v for k, v in node.pids.items() if k.startswith("signer")}
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        threads0 = core_threads(node.pids["core"])
        own0 = time.process_time()
        timeout = 60 + messages / 200

        async def run() -> dict:
            out: dict = {}

            async def producer() -> None:
                out.update(await submit_all(batch, window))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(producer)
                start = time.perf_counter()
                while (sink_cpu := sink.exited()) is None:
                    if time.perf_counter() - start > timeout:
                        raise RuntimeError(
                            f"{name}: the sink got {sink.received()} of {messages} "
                            f"in {timeout:.0f} s; node log: {node.log}"
                        )
                    await trio.sleep(0.002)
                out["done"] = time.perf_counter()
                out["cpu"] = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
                threads = core_threads(node.pids["core"])
                out["threads"] = {k: v - threads0[k] for k, v in threads.items()}
                out["cpu"]["smtp-sink"] = sink_cpu
            return out

        out = trio.run(run)
        out["cpu"]["producer (bench)"] = time.process_time() - own0
        stack.close()  # stop the node now: its event log is complete after it exits
        delivered = node.delivered_events()
    seconds = out["done"] - out["started"]
    if out["accepted"] != messages:
        raise RuntimeError(f"{name}: {out['accepted']} of {messages} accepted: {out['statuses']}")
    return {
        "messages": messages,
        "per_job": per_job,
        "seconds": seconds,
        "msg_per_s": messages / seconds,
        "accepted_after_s": out["seconds"],
        "delivered_events": delivered,
        "cpu_us_per_msg": {k: v * 1e6 / messages for k, v in out["cpu"].items()},
        "cpu_cores": {k: v / seconds for k, v in out["cpu"].items()},
        "core_threads_us_per_msg": {k: v * 1e6 / messages for k, v in out["threads"].items()},
    }


# -- main -----------------------------------------------------------------------------------


def report(rows: dict[str, dict]) -> None:
    """Print the table (rows missing from a ``--rows`` subset are left out)."""
    nan = float("nan")
    rsa = rows.get("rsa", {}).get("sign_per_s", nan)
    ceiling = rows.get("ceiling", {}).get("msg_per_s", nan)
    target = REFERENCES[2][1]
    e2e = [key for key in ("e2e_1000", "e2e_1") if key in rows]
    print("\nsalvo node, one producer, 2 signers, durable spool, DKIM RSA-2048, 4 KB messages")
    print(f"{'row':<52}{'per s':>10}{'seconds':>9}{'vs SMTP':>9}{'vs RSA':>8}{'vs 4,500':>10}")

    def line(label: str, rate: float, seconds: float | str = "", ratios: bool = False) -> None:
        sec = f"{seconds:>9.2f}" if isinstance(seconds, float) else f"{seconds:>9}"
        extra = ""
        if ratios:
            extra = f"{rate / ceiling:>8.2f}x{rate / rsa:>7.2f}x{rate / target:>9.2f}x"
        print(f"{label:<52}{rate:>10,.0f}{sec}{extra}")

    for key, per_job in (("accept_1", 1), ("accept_1000", 1000)):
        if key not in rows:
            continue
        r = rows[key]
        line(
            f"accepted jobs/s, {per_job:,} rcpt/job ({r['jobs']:,} jobs)",
            r["jobs_per_s"],
            r["seconds"],
        )
        line(
            f"  = recipients/s (delivered meanwhile: {r['delivered_meanwhile']:,})",
            r["recipients_per_s"],
        )
        if r["late_replies"]:
            line(
                f"  {r['late_replies']:,} replies LOST (resent); jobs/s of the rest",
                r["jobs_per_s_on_time"],
            )
    for key in e2e:
        r = rows[key]
        label = f"e2e msg/s into smtp-sink, {r['per_job']:,} rcpt/job ({r['messages']:,})"
        line(label, r["msg_per_s"], r["seconds"], ratios=True)
    if "ceiling" in rows:
        label = "ceiling: smtp-source -> smtp-sink, 4 KB, 50 sessions"
        line(label, ceiling, rows["ceiling"]["seconds"], True)
    if "rsa" in rows:
        line("ceiling: RSA-2048 signatures/s, 2 cores (openssl)", rsa, "", True)
    print("references, NOT measured in this run:")
    for label, rate in REFERENCES:
        line(f"  {label}", rate, "-", True)
    for key in e2e:
        ratio = rows[key]["msg_per_s"] / REFERENCES[0][1]
        print(f"{'  salvo ' + key + ' / Postfix relay reference':<52}{ratio:>10.1f}x")

    for key in e2e:
        r = rows[key]
        print(
            f"\n{key}: CPU per delivered message (us) and cores busy; all acked after "
            f"{r['accepted_after_s']:.2f} s; delivered events {r['delivered_events']:,}"
        )
        for proc, us in r["cpu_us_per_msg"].items():
            print(f"  {proc:<20}{us:>10.0f} us{r['cpu_cores'].get(proc, 0):>8.2f} cores")
            if proc == "core":
                for thread, t_us in r["core_threads_us_per_msg"].items():
                    print(f"    {thread:<20}{t_us:>8.0f} us")
        total = sum(r["cpu_us_per_msg"].values())
        print(f"  {'all':<20}{total:>10.0f} us   (2 cores at 4,500 msg/s allow 444 us)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m salvo.bench.node", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few thousand messages (CI smoke)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--profile", type=Path, help="cProfile the e2e rows' nodes into DIR")
    parser.add_argument(
        "--rows", help="comma-separated subset: rsa,ceiling,accept_1,accept_1000,e2e_1000,e2e_1"
    )
    args = parser.parse_args(argv)
    size = {k: v[1 if args.quick else 0] for k, v in SIZES.items()}
    for tool in (SMTP_SINK, SMTP_SOURCE):
        if not Path(tool).exists():
            print(f"{tool} is missing: apt-get install postfix", file=sys.stderr)
            return 2

    rows: dict[str, dict] = {}
    # Ctrl-C or SIGTERM: unwind through every stop() below.
    signal.signal(signal.SIGTERM, interrupt)
    with workdir() as tmp:
        steps = [
            ("rsa", lambda: rsa_row(1 if args.quick else 3)),
            ("ceiling", lambda: ceiling_row(tmp, CEILING_HOST, size["ceiling"])),
            ("accept_1", lambda: accept_row(tmp, "accept_1", size["accept_1"], 1, 1000)),
            ("accept_1000", lambda: accept_row(tmp, "accept_1000", size["accept_1000"], 1000, 50)),
            (
                "e2e_1000",
                lambda: e2e_row(tmp, "e2e_1000", size["e2e_1000"], 1000, 50, args.profile),
            ),
            ("e2e_1", lambda: e2e_row(tmp, "e2e_1", size["e2e_1"], 1, 1000, args.profile)),
        ]
        wanted = set(args.rows.split(",")) if args.rows else {name for name, _ in steps}
        for name, step in steps:
            if name not in wanted:
                continue
            print(f"{name} ...", file=sys.stderr, flush=True)
            rows[name] = step()

    report(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"quick": args.quick, "rows": rows, "references": dict(REFERENCES)}, f, indent=2
            )
    if args.profile:
        print_profiles(args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
