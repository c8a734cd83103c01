"""``salvo demo``: the hot path on one core, then a real node delivering a campaign.

1. Renders and DKIM-signs a sample campaign on one core (RSA-2048 + Ed25519) and prints
   the rate: the native hot path alone.
2. Starts a real ``salvo node`` (its own config, data dir and free ports, in ``--out``),
   a local SMTP sink standing in for the providers, and submits a personalized campaign
   over ZeroMQ as a producer would. It waits until the sink has every message, checks
   them with independent implementations (dkimpy for the signatures, Python's ``email``
   package for the MIME structure, the Message-IDs against the producer's replies),
   counts the node's events, stops the node with SIGTERM and prints a summary.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

RECIPIENTS_PER_JOB = 100


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="render, sign and deliver a sample campaign locally")
    parser.add_argument("--recipients", type=int, default=5000, help="default 5000")
    parser.add_argument("--size", choices=("4k", "100k"), default="4k", help="message size")
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="default ./demo-out")
    parser.add_argument("--check", type=int, default=50, help="messages verified independently")
    parser.add_argument("--signers", type=int, help="node signer processes (default: cores)")
    parser.set_defaults(func=run_demo)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keys(out: Path) -> dict[str, tuple[str, Path]]:
    from salvo.core import dkimkeys

    keys = {}
    for algorithm, selector in (("rsa-sha256", "s2048"), ("ed25519-sha256", "ed1")):
        path = out / f"{selector}.pem"
        if not path.exists():
            path.write_bytes(dkimkeys.generate_private_key(algorithm))
        keys[algorithm] = (selector, path)
    return keys


def _hot_path(args: argparse.Namespace, keys: dict[str, tuple[str, Path]]) -> float:
    from salvo.ext.dkim import DKIMSigner, sign_many
    from salvo.ext.mime import MessageTemplate
    from salvo.testing import samples

    signers = [
        DKIMSigner("acme.example", sel, path.read_bytes(), algorithm=alg)
        for alg, (sel, path) in keys.items()
    ]
    template = MessageTemplate(**samples.campaign(args.size))
    people = list(samples.recipients(min(args.recipients, 5000)))
    started = time.process_time()
    for to, variables in people:
        message = template.render(to, variables)
        sign_many(message, signers) + message
    rate = len(people) / max(time.process_time() - started, 1e-9)
    print(f"1. hot path, one core: {rate:,.0f} messages/s rendered + signed (RSA-2048 + Ed25519)")
    return rate


def _config(out: Path, keys, sink_port: int, ingress: str, events: str, signers) -> Path:
    lines = [
        "[node]",
        'data_dir = "data"',
        *([f"signers = {signers}"] if signers else []),
        "[ingress]",
        f'listen = "{ingress}"',
        "[events]",
        f'publish = "{events}"',
        "[routes]",
        f'"*" = "127.0.0.1:{sink_port}"',
    ]
    for algorithm, (selector, path) in keys.items():
        lines += [
            '[[dkim."acme.example"]]',
            f'selector = "{selector}"',
            f'private_key = "{path.name}"',
            f'algorithm = "{algorithm}"',
        ]
    path = out / "node.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_demo(args: argparse.Namespace) -> int:
    from salvo.testing.sink import SinkThread

    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    keys = _keys(out)
    _hot_path(args, keys)

    sink = SinkThread()
    sink.stats.sample_every = max(1, args.recipients // max(args.check, 1))
    sink_port = sink.start()
    ingress = f"tcp://127.0.0.1:{_free_port()}"
    events = f"tcp://127.0.0.1:{_free_port()}"
    config = _config(out, keys, sink_port, ingress, events, args.signers)
    log_path = out / "node.log"
    print(f"2. a node ({config}), a local SMTP sink on 127.0.0.1:{sink_port}, a producer")
    with open(log_path, "ab") as log:
        node = subprocess.Popen(
            [sys.executable, "-m", "salvo", "node", "--config", str(config)],
            stdout=log,
            stderr=log,
        )
    try:
        return _drive(args, node, sink, ingress, out, keys, log_path)
    finally:
        if node.poll() is None:
            node.kill()
        sink.stop()


def _drive(args, node, sink, ingress, out, keys, log_path) -> int:
    from salvo.client import Producer
    from salvo.core import dkimkeys
    from salvo.testing import samples

    run_id = time.strftime("%Y%m%d%H%M%S")
    started = time.monotonic()
    accepted_ids: set[str] = set()
    statuses: Counter[str] = Counter()
    with Producer(ingress, timeout=30, attempts=10) as producer:
        jobs = samples.jobs(
            f"demo-{run_id}",
            args.recipients,
            RECIPIENTS_PER_JOB,
            size=args.size,
            tenant="acme",
            campaign="spring",
            traffic="marketing",
        )
        for reply in producer.submit_many(jobs):
            statuses[reply.status] += 1
            accepted_ids.update(a.message_id for a in reply.accepted)
    accepted_at = time.monotonic()
    expected = len(accepted_ids)
    deadline = accepted_at + 120
    while sink.stats.messages < expected and time.monotonic() < deadline:
        if node.poll() is not None:
            print(f"salvo demo: the node exited ({node.returncode}); see {log_path}")
            return 1
        time.sleep(0.05)
    delivered_at = time.monotonic()
    stats = sink.stats
    node.send_signal(signal.SIGTERM)
    code = node.wait(60)

    pems = [path.read_bytes() for _, path in keys.values()]
    kept = list(stats.samples)
    verified = sum(all(r.valid for r in dkimkeys.verify(m, pems)) for m in kept)
    parsed = sum(_parses(m) for m in kept)
    ids_match = stats.message_ids == {m.encode() for m in accepted_ids}
    event_counts = _count_events(out / "data" / "events" / "events.jsonl", run_id)

    accept_s = accepted_at - started
    deliver_s = delivered_at - started
    rows = [
        ("jobs submitted", f"{sum(statuses.values())} ({dict(statuses)})"),
        ("recipients accepted (durable)", f"{expected:,} in {accept_s:.2f} s"),
        ("messages at the sink", f"{stats.messages:,} in {deliver_s:.2f} s"),
        ("end to end", f"{stats.messages / max(deliver_s, 1e-9):,.0f} messages/s"),
        ("duplicates at the sink", f"{stats.duplicates}"),
        ("Message-IDs = the replies'", "yes" if ids_match else "NO"),
        ("DKIM verified by dkimpy", f"{verified} / {len(kept)}"),
        ("MIME parsed by Python email", f"{parsed} / {len(kept)}"),
        ("events (this run)", ", ".join(f"{k} {v}" for k, v in sorted(event_counts.items()))),
        ("node stopped by SIGTERM", f"exit {code}"),
        ("node data and logs", f"{out}/data, {log_path}"),
    ]
    for label, value in rows:
        print(f"   {label:<30} {value}")
    ok = (
        stats.messages == expected
        and stats.duplicates == 0
        and ids_match
        and verified == parsed == len(kept)
        and event_counts.get("delivered", 0) == expected
        and code == 0
    )
    if not ok:
        print("salvo demo: something above is not as it should be", file=sys.stderr)
    return 0 if ok else 1


def _count_events(path: Path, run_id: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    if path.exists():
        with open(path, "rb") as f:
            for line in f:
                event = json.loads(line)
                if event.get("job", "").startswith(f"demo-{run_id}-"):
                    counts[event["type"]] += 1
    return counts


def _parses(message: bytes) -> bool:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    return (
        not parsed.defects
        and parsed.get_body(("plain",)) is not None
        and parsed.get_body(("html",)) is not None
        and bool(parsed["Subject"])
    )
