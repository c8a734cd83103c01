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
import os
import pstats
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import trio

from salvo.bench import samples
from salvo.client import open_trio_producer
from salvo.core.dkimkeys import generate_private_key

INGRESS = "tcp://127.0.0.1:25557"
EVENTS = "tcp://127.0.0.1:25558"
SINK_HOST = "127.0.0.50"
CEILING_HOST = "127.0.0.51"
SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"
SIGNERS = 2
TICK = os.sysconf("SC_CLK_TCK")

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


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_listening(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {host}:{port}") from None
            time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def core_threads(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads, grouped: the main (Trio) thread, ZeroMQ's I/O
    threads, and the rest (Trio's worker threads: the spool's LMDB transactions)."""
    groups = {"core: trio thread": 0.0, "core: zmq threads": 0.0, "core: spool threads": 0.0}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue  # a worker thread that just ended
            cpu = (int(fields[11]) + int(fields[12])) / TICK
            if int(tid) == pid:
                groups["core: trio thread"] += cpu
            elif comm.startswith("ZMQ"):
                groups["core: zmq threads"] += cpu
            else:
                groups["core: spool threads"] += cpu
    return groups


def stop_process(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL to its process group if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group: also any orphaned child
    proc.wait()


class Sink:
    """A Postfix ``smtp-sink`` on (host, free port); ``stop_after`` = ``-M``: exit after N."""

    def __init__(self, folder: Path, host: str, stop_after: int | None = None) -> None:
        if not Path(SMTP_SINK).exists():
            raise SystemExit(f"{SMTP_SINK} is missing: apt-get install postfix")
        self.host, self.port = host, free_port(host)
        self.out = folder / f"sink-{host}-{self.port}.txt"
        self.cpu = 0.0
        cmd = [SMTP_SINK, "-c"]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]  # smtp-sink refuses to run as root without it
        if stop_after:
            cmd += ["-M", str(stop_after)]
        cmd += [f"{host}:{self.port}", "1000"]
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            wait_listening(host, self.port)
        except BaseException:
            self.stop()
            raise

    def exited(self) -> float | None:
        """None while it runs; once it has exited (``-M``), the CPU seconds it used."""
        if self.proc.returncode is not None:
            return self.cpu
        pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
        if pid == 0:
            return None
        self.proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        self.cpu = usage.ru_utime + usage.ru_stime
        return self.cpu

    def received(self) -> int:
        """Messages received so far (the last ``mesg=`` of ``-c``)."""
        counts = re.findall(rb"mesg=(\d+)", self.out.read_bytes()[-200:])
        return int(counts[-1]) if counts else 0

    def stop(self) -> None:
        stop_process(self.proc, timeout=5)


class Node:
    """``salvo node`` with a fresh data dir, a route to ``sink`` and an RSA-2048 DKIM key."""

    def __init__(
        self, folder: Path, sink: Sink, *, signers: int = SIGNERS, profile: Path | None = None
    ) -> None:
        self.folder = folder
        folder.mkdir(parents=True)
        (folder / "s1.pem").write_bytes(generate_private_key("rsa-sha256", 2048))
        (folder / "salvo.toml").write_text(
            f"""\
[node]
data_dir = "data"
signers = {signers}
hostname = "bench.salvo.test"
[ingress]
listen = "{INGRESS}"
[events]
publish = "{EVENTS}"
[routes]
"example.org" = "{sink.host}:{sink.port}"
[dkim."acme.example"]
selector = "s1"
private_key = "s1.pem"
algorithm = "rsa-sha256"
"""
        )
        self.log = folder / "node.log"
        env = dict(os.environ)
        env.pop("SALVO_PROFILE", None)
        if profile is not None:
            env["SALVO_PROFILE"] = str(profile)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "salvo", "node", "--config", str(folder / "salvo.toml")],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=folder,
                env=env,
                start_new_session=True,
            )
        try:
            self.pids = self._wait_ready(signers)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, signers: int, timeout: float = 60.0) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            ready = len(re.findall(r"signer \d+ \(pid \d+\) ready", text))
            if "node ready" in text and ready >= signers:
                return {
                    name: int(pid) for name, pid in re.findall(r"started (\S+) \(pid (\d+)\)", text)
                }
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"the node did not start; its log:\n{self.log.read_text()[-3000:]}")

    def delivered_events(self) -> int:
        """``delivered`` lines in the node's events.jsonl (read after :meth:`stop`)."""
        path = self.folder / "data" / "events" / "events.jsonl"
        if not path.exists():
            return 0
        return sum(1 for line in path.open("rb") if b'"type":"delivered"' in line)

    def stop(self) -> None:
        stop_process(self.proc, timeout=60)


# -- the producer ---------------------------------------------------------------------------


def make_jobs(run: str, messages: int, per_job: int) -> list[dict]:
    """``messages`` recipients of the 4 KB sample campaign, ``per_job`` to a job."""
    fields = samples.campaign("4k")
    template = {
        "from": fields["from_"],
        "subject": fields["subject"],
        "text": fields["text"],
        "html": fields["html"],
        "headers": fields["headers"],
        "campaign": "bench",
    }
    people = [{"to": to, "vars": v} for to, v in samples.recipients(messages)]
    return [
        {**template, "id": f"{run}-{n}", "recipients": people[i : i + per_job]}
        for n, i in enumerate(range(0, messages, per_job))
    ]


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
    batch = make_jobs(name, jobs * per_job, per_job)
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
    batch = make_jobs(name, messages, per_job)
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


def ceiling_row(tmp: Path, messages: int) -> dict:
    """Postfix smtp-source -> smtp-sink, 4 KB, 50 reused sessions."""
    with contextlib.ExitStack() as stack:
        sink = Sink(tmp, CEILING_HOST)
        stack.callback(sink.stop)
        start = time.perf_counter()
        subprocess.run(
            [
                *(SMTP_SOURCE, "-s", "50", "-m", str(messages), "-l", "4096", "-d"),
                *("-f", "bench@acme.example", "-t", "user@example.org"),
                f"{sink.host}:{sink.port}",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - start
        received = sink.received()
    return {
        "messages": messages,
        "received": received,
        "seconds": seconds,
        "msg_per_s": messages / seconds,
    }


def rsa_row(seconds: int) -> dict:
    """RSA-2048 signatures/s on both cores: ``openssl speed -multi 2 -mr rsa2048``."""
    out = subprocess.run(
        ["openssl", "speed", "-seconds", str(seconds), "-multi", "2", "-mr", "rsa2048"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    total = [line for line in out.splitlines() if line.startswith("+F2:")]
    return {"sign_per_s": float(total[-1].split(":")[3])}


# -- profiles -------------------------------------------------------------------------------


def print_profiles(folder: Path, top: int = 25) -> None:
    for path in sorted(folder.glob("*/*.prof")):
        stats = pstats.Stats(str(path))
        label = f"{path.parent.name}/{path.name}"
        print(f"\n--- profile {label}: total {stats.total_tt:.2f} s (top {top} by cumulative)")
        stats.sort_stats("cumulative").print_stats(top)
        print(f"--- profile {label}: top {top} by own time")
        stats.sort_stats("tottime").print_stats(top)


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


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="salvo-bench-node-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


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
    signal.signal(signal.SIGTERM, _interrupt)
    with workdir() as tmp:
        steps = [
            ("rsa", lambda: rsa_row(1 if args.quick else 3)),
            ("ceiling", lambda: ceiling_row(tmp, size["ceiling"])),
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
