"""``salvo bench``: salvo's end-to-end throughput, latency and footprint, and the
alternatives measured in the same run (``docs/bench.md`` explains every row).

Layout on loopback (ports from the OS):
- 127.0.0.60-69: the simulated providers of the salvo rows, one per ``--providers``
  (Postfix ``smtp-sink`` for the clean profile, the smart sink for ``realistic``);
- 127.0.0.70: ``smtp-source -> smtp-sink``; 127.0.0.71/72: the Postfix relay's smtpd and
  its sink; 127.0.0.73: the naive Python sender's sink; 127.0.0.79: the black hole of the
  ``--big`` row (nothing listens).

Rows run in turn (:func:`run`). A salvo row (:func:`salvo_run`) starts its sinks, a fresh
node (:class:`~salvo.bench.harness.Node`) and a Trio producer in this process; it polls
the sinks until every message is in (or, realistic profile, every recipient finished),
then stops the node and reads its event logs for the delivery times and counts. A row
that fails records its error and the next one runs. The alternatives of ``--compare``
are in ``bench/compare.py``. Every process started here is stopped on exit, on errors
and on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import trio

from salvo.bench import compare, harness
from salvo.bench.harness import PROGRESS, Node
from salvo.client import open_trio_producer
from salvo.testing import samples
from salvo.testing.postfix import SMTP_SINK, SmtpSink
from salvo.testing.procs import cpu_seconds, free_port, peak_rss
from salvo.testing.smartsink import SmartSink

PROVIDER_HOSTS = [f"127.0.0.{60 + i}" for i in range(10)]
CEILING_HOST = "127.0.0.70"
BLACKHOLE_HOST = "127.0.0.79"
SIGNERS = 2
MAX_CONNECTIONS = 32  # salvo's default per route: the alternatives get the same

# Smart-sink policies of the realistic profile.
REALISTIC = {
    "delay": 0.002,
    "defer_share": 0.01,
    "bounce_share": 0.02,
    "max_messages_per_connection": 100,
}
THROTTLING = REALISTIC | {"throttle_share": 0.5}
GRACE = 5.0  # seconds the other providers get once the healthy one has all its mail
REALISTIC_TRAFFIC = """
[traffic.default]
first_retry = "1s"
max_retry = "2s"
"""

# (full, quick) sizes of each row.
SIZES = {
    "main": (30_000, 3_000),
    "100k": (10_000, 1_000),
    "paced": (15_000, 1_500),
    "realistic": (12_000, 2_000),
    "ceiling": (50_000, 5_000),
    "postfix": (5_000, 600),
    "naive": (1_000, 150),
    "big": (1_000_000, 1_000_000),
}


@dataclass
class Options:
    size: str = "4k"
    dkim: str = "rsa"
    per_job: int = 1000
    providers: int = 1
    profile: str = "clean"
    messages: int | None = None
    quick: bool = False
    compare: bool = False
    big: bool = False
    out: Path = Path("bench-out")
    salvo_profile: Path | None = None


LOG_DIR: Path | None = None  # node logs of every row are copied here


# -- the producer ---------------------------------------------------------------------------


@dataclass
class Submitted:
    """What the producer knows: each recipient's submit time (Unix) by Message-ID."""

    submit_ts: dict[str, float] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    accepted: int = 0
    first: float = 0.0  # perf_counter of the first submit
    last_reply: float = 0.0
    done: bool = False


async def produce(
    ingress: str, jobs: list[dict], out: Submitted, window: int, rate: float | None
) -> None:
    """Submit ``jobs`` with ``window`` in flight; ``rate``: recipients/s to pace at."""
    slots = trio.Semaphore(window)
    sent_at: dict[str, float] = {}
    finished = trio.Event()
    pending = len(jobs)

    def on_reply(outcome) -> None:
        nonlocal pending
        slots.release()
        status = getattr(outcome, "status", "timeout")
        out.statuses[status] = out.statuses.get(status, 0) + 1
        for item in getattr(outcome, "accepted", ()):
            out.submit_ts[item.message_id] = sent_at[outcome.id]
            out.accepted += 1
        out.last_reply = time.perf_counter()
        pending -= 1
        if not pending:
            finished.set()

    async with open_trio_producer(ingress, timeout=60, max_in_flight=window) as producer:
        out.first = start = time.perf_counter()
        t0 = trio.current_time()
        submitted = 0
        for job in jobs:
            if rate:
                await trio.sleep_until(t0 + submitted / rate)
            await slots.acquire()
            sent_at[job["id"]] = time.time()
            producer.start_submit(job, on_reply)
            submitted += len(job["recipients"])
        await finished.wait()
    out.done = True
    del start


# -- one salvo run --------------------------------------------------------------------------


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    values = sorted(values)

    def at(q: float) -> float:
        return values[min(len(values) - 1, math.ceil(q * len(values)) - 1)]

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": values[-1]}


def read_events(node: Node) -> dict[str, list]:
    """Events of the node's JSONL logs by type: [(ts, message_id, recipient), ...]."""
    out: dict[str, list] = {}
    for path in node.events_paths():
        with path.open("rb") as f:
            for line in f:
                event = json.loads(line)
                out.setdefault(event["type"], []).append(
                    (event["ts"], event.get("message_id"), event.get("recipient"))
                )
    return out


def timeline(times: list[float], start: float, step: float) -> list[float]:
    """Deliveries per second in bins of ``step`` seconds from ``start``."""
    if not times:
        return []
    bins = [0] * (int((max(times) - start) / step) + 1)
    for t in times:
        bins[max(0, int((t - start) / step))] += 1
    return [n / step for n in bins]


def salvo_run(
    tmp: Path,
    name: str,
    *,
    messages: int,
    per_job: int,
    size: str = "4k",
    dkim: str = "rsa",
    providers: int = 1,
    policies: list[dict] | None = None,
    rate: float | None = None,
    wait_for: str = "all",
    profile: Path | None = None,
    extra: str = "",
    grace: float = 0.0,
    watch=None,
) -> dict:
    """A fresh node delivering ``messages`` to ``providers`` sinks (``smtp-sink``, or smart
    sinks answering by ``policies``); every figure of one salvo row. ``config``: TOML
    appended to the node's config (e.g. ``[spool] encrypt = false``).

    ``wait_for``: "all" = until the sinks have every message (clean), "finished" = until
    every recipient is delivered or bounced (realistic). ``extra``: more node config;
    ``grace``: seconds the other providers get once the first has all its mail (realistic;
    default :data:`GRACE`); ``watch``: called about every 50 ms while the row runs, ends it
    when it returns True.
    """
    folder = tmp / name
    folder.mkdir(parents=True)
    domains = [f"p{i}.example" for i in range(providers)]
    jobs = samples.jobs(name, messages, per_job, size=size, domains=domains, campaign="bench")
    with contextlib.ExitStack() as stack:
        key = harness.write_key(folder, dkim)  # the sinks verify samples with it
        sinks: list = []
        for i, host in enumerate(PROVIDER_HOSTS[:providers]):
            if policies is None:
                sinks.append(SmtpSink(folder, host))
            else:
                sinks.append(SmartSink(folder, host, policies[i], key))
            stack.callback(sinks[-1].stop)
        extra = (REALISTIC_TRAFFIC if policies is not None else "") + extra
        grace = grace or GRACE
        ingress = f"tcp://127.0.0.1:{free_port()}"
        events = f"tcp://127.0.0.1:{free_port()}"
        node = Node(
            folder / "node",
            {d: s.address for d, s in zip(domains, sinks, strict=True)},
            ingress=ingress,
            events=events,
            signers=SIGNERS,
            dkim=dkim,
            key=key.read_bytes() if key else None,
            extra=extra,
            profile=profile / name if profile else None,
        )
        stack.callback(node.stop)
        if LOG_DIR is not None:  # runs after node.stop: the whole log, also on errors
            LOG_DIR.mkdir(parents=True, exist_ok=True)
            stack.callback(shutil.copy, node.log, LOG_DIR / f"{name}.node.log")
        pids = {k: v for k, v in node.pids.items() if k in ("supervisor", "core")}
        pids |= {k: v for k, v in node.pids.items() if k.startswith("signer")}
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        threads0 = harness.core_threads(node.pids["core"])
        sink_cpu0 = [cpu_seconds(s.proc.pid) for s in sinks]
        own0 = time.process_time()
        sub = Submitted()
        timeout = (30 if policies is not None else 120) + messages / 200 + grace
        finished_count = _finished_counter(node, sinks, policies)
        share0 = (messages + providers - 1) // providers  # recipients of p0.example
        healthy_at: list[float | None] = [None]

        def first_done() -> bool:
            st = sinks[0].status()
            return st.get("messages", 0) + st.get("bounced", 0) >= share0

        async def run() -> float:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce, ingress, jobs, sub, 1000 if per_job < 10 else 50, rate)
                await trio.sleep(0)
                start = time.perf_counter()
                while True:
                    done = finished_count()
                    elapsed = time.perf_counter() - start
                    PROGRESS.show(
                        f"{name}: {elapsed:6.1f} s  accepted {sub.accepted:,}/{messages:,}  "
                        f"delivered {done:,} ({done / max(elapsed, 1e-9):,.0f}/s)"
                    )
                    if done >= messages and sub.done:
                        return time.perf_counter()
                    if policies is not None and sub.done:
                        # Realistic: the healthy first provider is what is measured; the
                        # others get a grace period, then the row reports what is left.
                        if first_done() and healthy_at[0] is None:
                            healthy_at[0] = time.perf_counter()
                        if healthy_at[0] and time.perf_counter() - healthy_at[0] > grace:
                            return time.perf_counter()
                    if watch is not None and watch():
                        return time.perf_counter()
                    if elapsed > timeout:
                        raise RuntimeError(
                            f"{name}: {done} of {messages} finished in {timeout:.0f} s; "
                            f"node log: {node.log}"
                        )
                    await trio.sleep(0.05)

        end = trio.run(run)
        cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
        threads = harness.core_threads(node.pids["core"])
        rss = {k: peak_rss(p) for k, p in pids.items()}
        cpu["producer (bench)"] = time.process_time() - own0
        rss["producer (bench)"] = harness.own_peak_rss()
        spool = harness.folder_size(node.data) - sum(
            harness.folder_size(p) for p in node.events_paths()
        )
        sink_stats = []
        for i, sink in enumerate(sinks):
            label = f"sink {sink.host}"
            if isinstance(sink, SmtpSink):
                cpu[label] = cpu_seconds(sink.proc.pid) - sink_cpu0[i]
                rss[label] = peak_rss(sink.proc.pid)
                sink_stats.append({"host": sink.host, "messages": sink.received()})
            else:
                stats = sink.finish()
                cpu[label] = sink.cpu - sink_cpu0[i]
                rss[label] = sink.rss
                sink_stats.append({"host": sink.host, **stats})
        stack.close()  # stop the node: its event logs are complete once it exits
        events = read_events(node)
    seconds = end - sub.first
    delivered = events.get("delivered", [])
    mids = [m for _, m, _ in delivered]
    latencies = [ts - sub.submit_ts[m] for ts, m, _ in delivered if m in sub.submit_ts]
    wall0 = min(sub.submit_ts.values()) if sub.submit_ts else 0.0
    delivered_ts = [ts for ts, _, _ in delivered]
    per_provider = {}
    for domain in domains:
        times = [ts for ts, _, rcpt in delivered if rcpt and ("@" + domain) in rcpt]
        times.sort()
        # The rate up to the provider's 95th percentile delivery: its last ones are its
        # retries (the realistic sinks answer 451 to 1% of recipients, retried 1-2 s
        # later), whose end is chance, not throughput.
        first = times[: max(1, int(len(times) * 0.95))]
        per_provider[domain] = {
            "delivered": len(times),
            "per_s": len(times) / (max(times) - wall0) if times else 0.0,
            "per_s_95": len(first) / (first[-1] - wall0) if times else 0.0,
        }
    row = {
        "kind": "salvo",
        "messages": messages,
        "per_job": per_job,
        "size": size,
        "dkim": dkim,
        "providers": providers,
        "profile": "clean" if policies is None else "realistic",
        "paced_rate": rate,
        "seconds": seconds,
        "accepted": sub.accepted,
        "statuses": sub.statuses,
        "accepted_per_s": sub.accepted / max(sub.last_reply - sub.first, 1e-9),
        "delivered_per_s": len(delivered) / seconds if policies is not None else messages / seconds,
        "msg_per_s": messages / seconds,
        "delivered_events": len(delivered),
        "unique_delivered": len(set(mids)),
        "bounced_events": len(events.get("bounced", [])),
        "unfinished": messages - len(delivered) - len(events.get("bounced", [])),
        "deferred_events": len(events.get("deferred", [])),
        "sink_messages": sum(s.get("messages", 0) for s in sink_stats),
        "sinks": sink_stats,
        "per_provider": per_provider,
        "latency_s": percentiles(latencies),
        "cpu_s": cpu,
        "cpu_us_per_msg": {k: v * 1e6 / messages for k, v in cpu.items()},
        "core_threads_us_per_msg": {
            k: (v - threads0[k]) * 1e6 / messages for k, v in threads.items()
        },
        "peak_rss_bytes": rss,
        "spool_bytes": spool,
        "timeline_step_s": 0.25,
        "timeline": timeline(delivered_ts, wall0, 0.25),
    }
    # Every message the sinks took is one delivered event, none arrived twice, and on a
    # clean row every message arrived. (With the realistic profile some recipients bounce
    # by design, 5xx share, or are still deferred when the row ends.)
    row["exactly_once"] = (
        row["delivered_events"] == row["unique_delivered"] == row["sink_messages"]
        and all(s.get("duplicates", 0) == 0 for s in sink_stats)
        and (policies is not None or row["delivered_events"] == messages)
    )
    if policies is not None:
        dkim_checked = sum(s.get("dkim_checked", 0) for s in sink_stats)
        row["dkim_checked"] = dkim_checked
        row["dkim_valid"] = sum(s.get("dkim_valid", 0) for s in sink_stats)
    return row


def _finished_counter(node: Node, sinks: list, policies):
    """A function giving how many recipients are finished so far."""
    if policies is None:
        return lambda: sum(s.received() for s in sinks)

    def finished() -> int:
        total = 0
        for s in sinks:
            st = s.status()
            total += st.get("messages", 0) + st.get("bounced", 0)
        return total

    return finished


# -- the --big row --------------------------------------------------------------------------


def big_row(tmp: Path, recipients: int, dkim: str) -> dict:
    """Peak RSS of the node with ``recipients`` queued for a black-holed route (nothing
    listens there: every connection is refused and the recipients wait for their retry)."""
    folder = tmp / "big"
    folder.mkdir()
    per_job = 1000
    ingress = f"tcp://127.0.0.1:{free_port()}"
    hole = f"{BLACKHOLE_HOST}:{free_port(BLACKHOLE_HOST)}"
    with contextlib.ExitStack() as stack:
        node = Node(
            folder / "node",
            {"p0.example": hole},
            ingress=ingress,
            events=f"tcp://127.0.0.1:{free_port()}",
            signers=SIGNERS,
            dkim=dkim,
        )
        stack.callback(node.stop)
        sub = Submitted()
        chunk = 100_000  # jobs are built a chunk at a time: the producer's memory stays small

        async def run() -> None:
            async with trio.open_nursery() as nursery:
                sent = 0

                async def feed() -> None:
                    nonlocal sent
                    for base in range(0, recipients, chunk):
                        jobs = samples.jobs(
                            f"big{base}", chunk, per_job, domains=["p0.example"], campaign="bench"
                        )
                        part = Submitted()
                        await produce(ingress, jobs, part, 50, None)
                        sub.accepted += part.accepted
                        sent += chunk
                    sub.done = True

                nursery.start_soon(feed)
                start = time.perf_counter()
                while not sub.done:
                    PROGRESS.show(
                        f"big: {time.perf_counter() - start:6.1f} s  queued {sub.accepted:,}/"
                        f"{recipients:,}  core RSS {peak_rss(node.pids['core']) / 2**20:,.0f} MiB"
                    )
                    await trio.sleep(0.2)

        start = time.perf_counter()
        trio.run(run)
        seconds = time.perf_counter() - start
        time.sleep(2)  # the scheduler claims what it can meanwhile
        pids = {k: v for k, v in node.pids.items() if k in ("supervisor", "core")}
        pids |= {k: v for k, v in node.pids.items() if k.startswith("signer")}
        rss = {k: peak_rss(p) for k, p in pids.items()}
        spool = harness.folder_size(node.data)
    return {
        "kind": "big",
        "recipients": recipients,
        "accepted": sub.accepted,
        "seconds": seconds,
        "accepted_per_s": sub.accepted / seconds,
        "peak_rss_bytes": rss,
        "spool_bytes": spool,
    }


# -- targets and the report -----------------------------------------------------------------


def _rate(rows: dict, name: str, key: str = "msg_per_s") -> float | None:
    row = rows.get(name)
    if not row or "error" in row or row.get(key) is None:
        return None
    return row[key]


def targets(rows: dict) -> list[dict]:
    """The targets (``docs/bench.md``) against this run's rows: value, threshold, met /
    MISSED / not run."""
    main4k = "salvo 4k rsa clean" if "salvo 4k rsa clean" in rows else None
    e2e = _rate(rows, main4k) if main4k else None
    rsa = _rate(rows, "openssl rsa2048 x2", "sign_per_s")
    out = []

    def add(what: str, value: float | None, threshold: float, above: bool, why: str = "") -> None:
        if value is None:
            status = "not run" + (f" ({why})" if why else "")
        else:
            status = "met" if (value >= threshold if above else value < threshold) else "MISSED"
        out.append({"target": what, "value": value, "threshold": threshold, "status": status})

    add("4 KB RSA clean e2e msg/s >= 4,500", e2e, 4500, True, "needs --size 4k --dkim rsa")
    add(
        "4 KB RSA e2e / openssl speed -multi 2 rsa2048 >= 0.58",
        e2e / rsa if e2e and rsa else None,
        0.58,
        True,
    )
    add("100 KB RSA e2e msg/s >= 1,500", _rate(rows, "salvo 100k rsa clean"), 1500, True)
    for alt, factor in (("postfix relay", 6), ("naive python", 30)):
        rate = _rate(rows, alt)
        add(
            f"salvo / {alt} >= {factor}x",
            e2e / rate if e2e and rate else None,
            factor,
            True,
            "needs --compare" if alt not in rows else rows[alt].get("error", ""),
        )
    paced = rows.get("salvo paced half rate")
    add(
        "p99 submit-to-250 at half the max rate < 1 s",
        paced["latency_s"]["p99"] if paced and "error" not in paced else None,
        1.0,
        False,
    )
    big = rows.get("salvo 1M queued")
    add(
        "peak RSS of the core with 1M recipients queued < 1 GB",
        big["peak_rss_bytes"]["core"] / 1e9 if big and "error" not in big else None,
        1.0,
        False,
        "opt-in: --big",
    )
    base, hit = rows.get("realistic, all healthy"), rows.get("realistic, p1 throttled 50%")
    ratio = None
    if base and hit and "error" not in base and "error" not in hit:
        ratio = hit["per_provider"]["p0.example"]["per_s_95"] / max(
            base["per_provider"]["p0.example"]["per_s_95"], 1e-9
        )
    add("realistic: healthy provider's msg/s while another throttles >= 0.90x", ratio, 0.9, True)
    return out


def _fmt(value, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def print_report(result: dict, file=sys.stdout) -> None:
    rows = result["rows"]
    ref = result.get("reference")
    ref_rate = _rate(rows, ref) if ref else None
    p = lambda *a: print(*a, file=file)  # noqa: E731
    p(f"\nsalvo bench  {result['date']}  {result['command']}")
    p(
        f"{'row':<34}{'msg/s':>9}{'acc/s':>9}{'p50 s':>7}{'p90 s':>7}{'p99 s':>7}"
        f"{'seconds':>8}{'msgs':>11}{'salvo/x':>9}"
    )
    for name, row in rows.items():
        if "error" in row:
            p(f"{name:<34}  not measured: {row['error']}")
            continue
        rate = row.get("msg_per_s", row.get("sign_per_s"))
        lat = row.get("latency_s", {})
        ratio = ""
        if row.get("kind") == "alternative" and ref_rate and rate:
            ratio = f"{ref_rate / rate:>8.1f}x"
        p(
            f"{name:<34}{_fmt(rate):>9}{_fmt(row.get('accepted_per_s')):>9}"
            f"{_fmt(lat.get('p50'), '.2f'):>7}{_fmt(lat.get('p90'), '.2f'):>7}"
            f"{_fmt(lat.get('p99'), '.2f'):>7}{_fmt(row.get('seconds'), '.1f'):>8}"
            f"{_fmt(row.get('messages', row.get('recipients'))):>11}{ratio:>9}"
        )
        if row.get("note"):
            p(f"{'':<4}{row['note']}")
    for name, row in rows.items():
        if row.get("kind") not in ("salvo", "big") or "error" in row:
            continue
        p(
            f"\n{name}: CPU us/msg, peak RSS MiB"
            + (f", spool {row['spool_bytes'] / 2**20:,.0f} MiB" if "spool_bytes" in row else "")
            + (f", exactly once: {row['exactly_once']}" if "exactly_once" in row else "")
            + (
                f", DKIM valid {row['dkim_valid']}/{row['dkim_checked']} sampled"
                if "dkim_checked" in row
                else ""
            )
        )
        cpu = row.get("cpu_us_per_msg", {})
        for proc, rss in row["peak_rss_bytes"].items():
            p(f"  {proc:<24}{_fmt(cpu.get(proc)):>8} us{rss / 2**20:>9,.0f} MiB")
            if proc == "core" and "core_threads_us_per_msg" in row:
                for thread, us in row["core_threads_us_per_msg"].items():
                    p(f"    {thread:<22}{us:>8,.0f} us")
        if cpu:
            p(f"  {'all':<24}{sum(cpu.values()):>8,.0f} us  (2 cores at 4,500 msg/s: 444 us)")
        if row.get("per_provider") and row["providers"] > 1:
            for domain, pp in row["per_provider"].items():
                p(
                    f"  to {domain:<21}{pp['delivered']:>8,} delivered {pp['per_s']:>8,.0f}/s"
                    f" (up to its 95th percentile: {pp['per_s_95']:,.0f}/s)"
                )
    p("\ntargets (issue 6), ratios against this run:")
    for t in result["targets"]:
        value = t["value"]
        shown = "-" if value is None else (f"{value:,.2f}" if value < 100 else f"{value:,.0f}")
        p(f"  {t['target']:<70}{shown:>10}  {t['status']}")


def chart(result: dict, path: Path) -> None:
    """Throughput over time of each salvo row, and latency percentiles, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {
        k: r for k, r in result["rows"].items() if r.get("kind") == "salvo" and "error" not in r
    }
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    for name, row in rows.items():
        step = row["timeline_step_s"]
        ax1.plot([i * step for i in range(len(row["timeline"]))], row["timeline"], label=name)
    ax1.set_xlabel("seconds since the first submit")
    ax1.set_ylabel("delivered messages/s (node events, 0.25 s bins)")
    ax1.set_title("throughput over time")
    ax1.legend(fontsize=7)
    names = list(rows)
    for i, q in enumerate(("p50", "p90", "p99")):
        values = [rows[n]["latency_s"][q] or 0 for n in names]
        ax2.bar([j + i * 0.27 for j in range(len(names))], values, width=0.27, label=q)
    ax2.set_xticks([j + 0.27 for j in range(len(names))])
    ax2.set_xticklabels(names, rotation=20, ha="right", fontsize=7)
    ax2.set_ylabel("seconds from submit to the remote 250")
    ax2.set_title("latency percentiles")
    ax2.legend()
    fig.suptitle(f"salvo bench {result['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- main -----------------------------------------------------------------------------------


def run(opts: Options, command: str) -> int:
    size = {k: v[1 if opts.quick else 0] for k, v in SIZES.items()}
    for tool in (SMTP_SINK, harness.SMTP_SOURCE):
        if not Path(tool).exists():
            print(f"{tool} is missing: apt-get install postfix", file=sys.stderr)
            return 2
    opts.out.mkdir(parents=True, exist_ok=True)
    global LOG_DIR
    LOG_DIR = opts.out / "logs"
    rows: dict[str, dict] = {}
    main_name = f"salvo {opts.size} {opts.dkim} {opts.profile}"
    previous = signal.signal(signal.SIGTERM, harness.interrupt)
    try:
        with harness.workdir() as tmp:

            def step(name: str, fn) -> dict | None:
                PROGRESS.done(f"{name} ...")
                try:
                    rows[name] = fn()
                except Exception as exc:  # the row says why; the other rows still run
                    while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
                        exc = exc.exceptions[0]
                    rows[name] = {"error": f"{type(exc).__name__}: {exc}"[:400]}
                return rows[name]

            step("openssl rsa2048 x2", lambda: harness.rsa_row(1 if opts.quick else 3))
            realistic = opts.profile == "realistic"
            main = step(
                main_name,
                lambda: salvo_run(
                    tmp,
                    "main",
                    messages=opts.messages or size["main"],
                    per_job=opts.per_job,
                    size=opts.size,
                    dkim=opts.dkim,
                    providers=max(opts.providers, 2) if realistic else opts.providers,
                    policies=[REALISTIC] * max(opts.providers, 2) if realistic else None,
                    profile=opts.salvo_profile,
                ),
            )
            if (opts.size, opts.dkim, opts.profile) != ("100k", "rsa", "clean"):
                step(
                    "salvo 100k rsa clean",
                    lambda: salvo_run(
                        tmp, "100k", messages=size["100k"], per_job=opts.per_job, size="100k"
                    ),
                )
            max_rate = main.get("msg_per_s") if main and "error" not in main else None
            if max_rate:
                rate = max_rate / 2
                step(
                    "salvo paced half rate",
                    lambda: (
                        salvo_run(
                            tmp,
                            "paced",
                            messages=min(size["paced"], int(rate * (4 if opts.quick else 10))),
                            per_job=10,
                            size=opts.size,
                            dkim=opts.dkim,
                            rate=rate,
                        )
                        | {"note": f"paced: {rate:,.0f} recipients/s submitted, jobs of 10"}
                    ),
                )
            for name, policies in (
                ("realistic, all healthy", [REALISTIC, REALISTIC]),
                ("realistic, p1 throttled 50%", [REALISTIC, THROTTLING]),
            ):
                step(
                    name,
                    lambda policies=policies, name=name: salvo_run(
                        tmp,
                        name.replace(",", "").replace(" ", "-").replace("%", ""),
                        messages=size["realistic"],
                        per_job=100,
                        size=opts.size,
                        dkim=opts.dkim,
                        providers=2,
                        policies=policies,
                    ),
                )
            if opts.compare:
                compare.run_all(tmp, rows, size, step, opts)
            if opts.big:
                step("salvo 1M queued", lambda: big_row(tmp, size["big"], opts.dkim))
    except KeyboardInterrupt:
        PROGRESS.done("interrupted: every process started here was stopped")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    reference = "salvo 4k rsa clean" if "salvo 4k rsa clean" in rows else main_name
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": command,
        "quick": opts.quick,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "reference": reference,
        "rows": rows,
    }
    result["targets"] = targets(rows)
    (opts.out / "bench.json").write_text(json.dumps(result, indent=2))
    chart(result, opts.out / "bench.png")
    print_report(result)
    print(f"\nwritten: {opts.out / 'bench.json'}, {opts.out / 'bench.png'}")
    if opts.salvo_profile:
        harness.print_profiles(opts.salvo_profile)
    return 0
