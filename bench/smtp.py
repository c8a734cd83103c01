"""SMTP delivery throughput on one core: salvo's delivery path against Postfix's smtp-source.

    python -m salvo.bench.smtp [--quick] [--messages N] [--connections C] [--rounds R]

Both clients drive the same Postfix ``smtp-sink`` (started here on 127.0.0.x, free port)
with ~2 KB messages over reused connections, in the same run:

- ``smtp-source -s 50 -m N -l 2000 -d``: Postfix's C load generator (no pipelining), timed
  from start to exit.
- salvo: ``salvo.actors.delivery.Delivery``, the node's own delivery actor (its route
  queue, connection tasks, shaper and results accounting; each connection sends what is
  queued in pipelined ``send_many`` batches of up to ``BATCH``), fed by a bounded window
  of messages, in this one Trio process. Timed from the first message queued to the last
  ``Result``.

The client under test is pinned to one CPU and the sink to another when the machine has
two or more, so that "one core" means one core. The salvo row also reports its process
CPU time (``time.process_time``) over the wall time: near 1.0 means it used one core, all
of it. Rounds alternate between the two clients; the median is kept.

Targets: salvo >= 15,000 msg/s on one core, and >= 75% of smtp-source.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

import trio

from salvo.actors.delivery import BATCH, Delivery, Message, RouteSettings
from salvo.core.smtp import SMTPTimeouts

HOST = "127.0.0.7"
TARGET_RATE = 15_000
TARGET_RATIO = 0.75
BODY = 2000  # as smtp-source -l 2000


def _tool(name: str) -> str:
    path = shutil.which(name) or f"/usr/sbin/{name}"
    if not os.path.exists(path):
        raise SystemExit(f"{name} not found (Debian package postfix)")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _cpus() -> tuple[set[int] | None, set[int] | None]:
    """(client CPUs, sink CPUs): one each when there are two or more, else no pinning."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[0]}, {cpus[1]}


@contextlib.contextmanager
def smtp_sink(cpus: set[int] | None):
    port = _free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    cmd = [_tool("smtp-sink"), *user, "-m", "1000", f"{HOST}:{port}", "1000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if cpus:
            os.sched_setaffinity(proc.pid, cpus)
        for _ in range(300):
            with socket.socket() as s:
                if s.connect_ex((HOST, port)) == 0:
                    break
            time.sleep(0.01)
        else:
            raise SystemExit("smtp-sink does not listen")
        yield port
    finally:
        proc.kill()
        proc.wait()


def run_smtp_source(port: int, n: int, sessions: int, cpus: set[int] | None) -> float:
    """Messages per second of smtp-source, start to exit."""
    cmd = [_tool("smtp-source"), "-s", str(sessions), "-m", str(n), "-l", str(BODY), "-d"]
    cmd += ["-f", "bench@salvo.example", "-t", "sink@sink.example", f"{HOST}:{port}"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if cpus:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(proc.pid, cpus)
    _, err = proc.communicate(timeout=600)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"smtp-source failed: {err.decode()}")
    return n / elapsed


def _messages(n: int) -> list[Message]:
    body = (b"x" * 76 + b"\r\n") * (BODY // 78) + b"x" * (BODY % 78 - 2) + b"\r\n"
    out = []
    for i in range(n):
        rcpt = f"user{i}@sink.example"
        head = (
            f"From: bench@salvo.example\r\nTo: {rcpt}\r\nSubject: message {i}\r\n"
            f"Message-ID: <{i}.bench@salvo.example>\r\n\r\n"
        ).encode()
        out.append(Message(i, 0, rcpt, "bench@salvo.example", head + body))
    return out


def run_salvo(port: int, n: int, connections: int, window: int) -> tuple[float, float, int]:
    """(messages per second, CPU seconds per wall second, delivered) through ``Delivery``."""
    messages = _messages(n)
    settings = RouteSettings(
        ehlo="bench.salvo.example",
        max_connections=connections,
        max_messages_per_connection=1_000_000,
        tls="off",
        timeouts=SMTPTimeouts(connect=10, greeting=10, ehlo=10, mail=10, rcpt=10, data_end=10),
    )
    figures: list[float] = []
    delivered = 0

    async def main() -> None:
        nonlocal delivered
        send, receive = trio.open_memory_channel(math.inf)
        async with trio.open_nursery() as nursery:
            delivery = Delivery(send)
            await nursery.start(delivery.run)

            def put(message: Message) -> None:
                delivery.send(message, HOST, port, [], settings)

            cpu0, wall0 = time.process_time(), time.perf_counter()
            fed = 0
            while fed < min(window, n):
                put(messages[fed])
                fed += 1
            done = 0
            while done < n:
                # every result that is in, in one go: receive() yields to the scheduler
                # each time, and one result per turn would starve the route's queue
                results = [await receive.receive()]
                with contextlib.suppress(trio.WouldBlock):
                    while True:
                        results.append(receive.receive_nowait())
                for result in results:
                    delivered += result.outcome.is_delivered
                    if fed < n:
                        put(messages[fed])
                        fed += 1
                done += len(results)
            wall = time.perf_counter() - wall0
            figures.extend([n / wall, (time.process_time() - cpu0) / wall])
            nursery.cancel_scope.cancel()

    trio.run(main)
    return figures[0], figures[1], delivered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m salvo.bench.smtp", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer messages, one round")
    parser.add_argument("--messages", type=int, help="messages per client per round")
    parser.add_argument("--connections", type=int, default=50, help="for both clients")
    parser.add_argument("--window", type=int, default=5000, help="salvo messages queued")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--profile", help="cProfile the salvo client into this file")
    args = parser.parse_args(argv)
    n = args.messages or (20_000 if args.quick else 100_000)
    rounds = args.rounds or (1 if args.quick else 3)
    client_cpus, sink_cpus = _cpus()
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)
    source, salvo, cpu = [], [], []
    with smtp_sink(sink_cpus) as port:
        print(f"smtp-sink on {HOST}:{port}; {n} messages x {rounds} rounds", file=sys.stderr)
        run_salvo(port, min(n, 2000), args.connections, args.window)  # warm up
        for r in range(rounds):
            source.append(run_smtp_source(port, n, args.connections, client_cpus))
            if args.profile and r == rounds - 1:
                import cProfile

                with cProfile.Profile() as prof:
                    rate, share, delivered = run_salvo(port, n, args.connections, args.window)
                prof.dump_stats(args.profile)
            else:
                rate, share, delivered = run_salvo(port, n, args.connections, args.window)
            if delivered != n:
                raise SystemExit(f"salvo delivered {delivered} of {n}")
            salvo.append(rate)
            cpu.append(share)
            print(
                f"round {r + 1}: smtp-source {source[-1]:,.0f}/s, salvo {rate:,.0f}/s "
                f"(cpu {share:.2f})",
                file=sys.stderr,
            )
    s_rate, x_rate = statistics.median(source), statistics.median(salvo)
    ratio = x_rate / s_rate
    pinned = f"client on CPU {sorted(client_cpus)}" if client_cpus else "not pinned"
    print(f"SMTP to smtp-sink, {BODY} B bodies, {args.connections} connections, {pinned}")
    share = statistics.median(cpu)
    print(f"{'client':<38}{'msg/s':>10}{'CPU/wall':>10}{'msg/CPU-s':>11}")
    print(f"{'smtp-source -s C -l 2000 -d':<38}{s_rate:>10,.0f}")
    label = f"salvo Delivery (send_many, batches of {BATCH})"
    row = f"{label:<38}{x_rate:>10,.0f}{share:>10.2f}"
    print(f"{row}{x_rate / share:>11,.0f}")
    print(f"ratio salvo / smtp-source: {ratio:.2f}")
    ok = x_rate >= TARGET_RATE and ratio >= TARGET_RATIO
    print(
        f"target >= {TARGET_RATE:,} msg/s and >= {TARGET_RATIO:.0%} of smtp-source: "
        + ("met" if ok else "MISSED")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
