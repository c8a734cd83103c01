"""A webhook receiver that refuses for ``--outage`` seconds, then comes back: does it get
every event the node published, once or more, in order per recipient?

``python -m salvo.bench.webhooks [--outage 600] [--rate 20] [--retry-max 60s] [--no-kill]``

A node (no DKIM: the signatures are not what is measured) delivers to a sink on loopback
while a producer submits ``--rate`` recipients per second for the whole outage; the
receiver answers 503 for the first half and drops connections for the second. Halfway,
the node is SIGKILLed and restarted (unless ``--no-kill``). Then the receiver answers 200
and the bench waits until every published event (the node's JSONL log) has arrived, and
prints one JSON object: events published and received, duplicates, order violations,
the seconds the backlog took to drain, the POSTs refused. docs/webhooks.md has a run.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import time

from salvo.bench.harness import Node, workdir
from salvo.client import Producer
from salvo.testing.procs import free_port, stop_process
from salvo.testing.samples import jobs as sample_jobs
from salvo.testing.sink import SinkThread
from salvo.testing.webhook_receiver import WebhookReceiver

TYPES = ("accepted", "delivered", "deferred", "bounced")
SECRET = b"bench-webhook-secret-0123456789abcdef"


def published(node: Node) -> list[tuple[str, str]]:
    out = []
    for path in node.events_paths():
        for line in path.open("rb"):
            if line.strip():
                e = json.loads(line)
                if e["type"] in TYPES:
                    out.append((e["message_id"], e["type"]))
    return out


def restart(node: Node) -> None:
    """SIGKILL the node's process group and start it again on the same data dir."""
    os.killpg(node.proc.pid, signal.SIGKILL)
    node.proc.wait(30)
    time.sleep(0.5)
    node.log = node.folder / f"node-{int(time.time())}.log"
    with open(node.log, "wb") as log:
        node.proc = subprocess.Popen(
            [sys.executable, "-m", "salvo", "node", "--config", str(node.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=node.folder,
            start_new_session=True,
        )
    node._wait_ready(1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m salvo.bench.webhooks", description=__doc__)
    p.add_argument("--outage", type=float, default=60.0, help="seconds the receiver refuses")
    p.add_argument("--rate", type=float, default=20.0, help="recipients submitted per second")
    p.add_argument("--retry-max", default="60s", help="the webhook's retry_max")
    p.add_argument("--no-kill", action="store_true", help="no SIGKILL halfway")
    p.add_argument("--drain-limit", type=float, default=900.0, help="seconds to wait after")
    args = p.parse_args(argv)
    sink = SinkThread("127.0.0.1")
    sink_port = sink.start()
    with workdir("salvo-bench-webhooks-") as tmp, WebhookReceiver(secret=SECRET) as receiver:
        (tmp / "node").mkdir()
        (tmp / "node" / "wh.secret").write_bytes(SECRET)
        extra = f"""
[[webhooks]]
name = "bench"
url = "{receiver.url}"
events = {json.dumps(list(TYPES))}
secret_file = "{tmp / "node" / "wh.secret"}"
retry_first = "1s"
retry_max = "{args.retry_max}"
"""
        receiver.mode = "503"
        node_dir = tmp / "node" / "n"
        node = Node(
            node_dir,
            {"example.org": f"127.0.0.1:{sink_port}"},
            ingress=f"tcp://127.0.0.1:{free_port()}",
            events=f"tcp://127.0.0.1:{free_port()}",
            signers=1,
            dkim="none",
            extra=extra,
        )
        try:
            report = _run(args, node, receiver)
        finally:
            stop_process(node.proc, timeout=60)
            sink.stop()
    print(json.dumps(report, indent=2))
    return 0 if report["missing"] == 0 and report["order_violations"] == 0 else 1


def _run(args: argparse.Namespace, node: Node, receiver: WebhookReceiver) -> dict:
    per_job = 10
    total = int(args.outage * args.rate)
    batches = sample_jobs("wh", max(per_job, total), per_job)
    start = time.monotonic()
    killed = args.no_kill
    sent = 0
    producer = Producer(node.ingress, timeout=30, attempts=5)
    try:
        for i, job in enumerate(batches):
            due = start + i * per_job / args.rate
            while time.monotonic() < due:
                time.sleep(min(0.2, due - time.monotonic()))
            elapsed = time.monotonic() - start
            if elapsed >= args.outage / 2 and receiver.mode == "503":
                receiver.mode = "drop"
            if not killed and elapsed >= args.outage / 2:
                producer.close()
                restart(node)
                producer = Producer(node.ingress, timeout=30, attempts=5)
                killed = True
            (reply,) = list(producer.submit_many([job]))
            sent += len(reply.accepted)
        while time.monotonic() < start + args.outage:
            time.sleep(0.2)
    finally:
        producer.close()
    pending_at_recovery = len(published(node))
    refused = receiver.refused
    receiver.mode = "ok"
    back = time.monotonic()
    want = published(node)
    drained = None
    while time.monotonic() < back + args.drain_limit:
        want = published(node)
        got = {(e["message_id"], e["type"]) for e in receiver.events()}
        finals = {m for m, t in want if t in ("delivered", "bounced")}
        if set(want) <= got and len(finals) >= sent:
            drained = time.monotonic() - back
            break
        time.sleep(0.5)
    else:
        print(f"not drained: {len(want)} published, {len(finals)} final", file=sys.stderr)
    events = receiver.events()
    ids = collections.Counter(e["id"] for e in events)
    seen: set[str] = set()
    order: dict[str, list[str]] = collections.defaultdict(list)
    for e in events:
        if e["id"] not in seen:
            seen.add(e["id"])
            order[e["message_id"]].append(e["type"])
    expect: dict[str, list[str]] = collections.defaultdict(list)
    for message_id, kind in want:
        expect[message_id].append(kind)
    got_pairs = {(e["message_id"], e["type"]) for e in events}
    return {
        "outage_s": args.outage,
        "sigkill_halfway": not args.no_kill,
        "recipients_accepted": sent,
        "events_published": len(want),
        "events_pending_at_recovery": pending_at_recovery,
        "events_received": len(events),
        "events_unique": len(ids),
        "duplicates": len(events) - len(ids),
        "missing": len(set(want) - got_pairs),
        "order_violations": sum(1 for m, kinds in expect.items() if order.get(m) != kinds),
        "posts_refused": refused,
        "bad_signatures": receiver.bad_signatures,
        "drain_s": None if drained is None else round(drained, 1),
    }


if __name__ == "__main__":
    sys.exit(main())
