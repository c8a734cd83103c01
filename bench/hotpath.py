"""Render + DKIM-sign throughput on one core, against baselines measured in the same run.

    python -m salvo.bench.hotpath [--seconds S] [--rounds R] [--json FILE]

Rows: salvo's hot path (``MessageTemplate.render`` + ``DKIMSigner.sign``) for a ~4 KB and a
~100 KB personalized multipart/alternative message with RSA-2048 and Ed25519 (placeholders
only), and for a ~4 KB one in the template language ("jinja": a loop over 5 order items,
two conditionals, filters; ``samples.rich_campaign``); the bare
OpenSSL signature of a 32-byte digest through ``cryptography`` (the physical limit); and
what a Python user writes today: the ``email`` package + dkimpy. Rates are per CPU second
of this process (``time.process_time``), so that a busy neighbour on a shared machine
slows the run but does not skew the figures; rounds of all rows are interleaved and the
median round is kept.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, utils
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from salvo.core.dkimkeys import generate_private_key
from salvo.ext.dkim import DKIMSigner
from salvo.ext.mime import MessageTemplate
from salvo.testing import samples

DOMAIN, SELECTOR = "acme.example", "s1"

# Targets, checked against the baselines of the same run.
TARGETS = [
    ("salvo 4k rsa", ">= 0.90 x bare RSA", lambda r: r["salvo 4k rsa"] / r["bare rsa-2048"], 0.90),
    (
        "salvo 4k jinja rsa",
        ">= 0.85 x bare RSA",
        lambda r: r["salvo 4k jinja rsa"] / r["bare rsa-2048"],
        0.85,
    ),
    ("salvo 4k ed25519", ">= 15,000/s", lambda r: r["salvo 4k ed25519"], 15000),
    ("salvo 100k rsa", ">= 1,500/s", lambda r: r["salvo 100k rsa"], 1500),
    (
        "salvo 4k rsa",
        ">= 25 x email+dkimpy",
        lambda r: r["salvo 4k rsa"] / r["email+dkimpy 4k rsa"],
        25,
    ),
]


def _salvo(size: str, pem: bytes, algorithm: str) -> Callable[[int], None]:
    if size == "4k jinja":
        template = MessageTemplate(**samples.rich_campaign())
        people = list(samples.rich_recipients(1000))
    else:
        template = MessageTemplate(**samples.campaign(size))
        people = list(samples.recipients(1000))
    signer = DKIMSigner(DOMAIN, SELECTOR, pem, algorithm=algorithm)

    def run(n: int) -> None:
        for i in range(n):
            to, variables = people[i % 1000]
            message = template.render(to, variables)
            signer.sign(message) + message

    return run


def _bare_rsa(pem: bytes) -> Callable[[int], None]:
    key = load_pem_private_key(pem, None)
    digest = bytes(range(32))
    algorithm = utils.Prehashed(hashes.SHA256())

    def run(n: int) -> None:
        for _ in range(n):
            key.sign(digest, padding.PKCS1v15(), algorithm)

    return run


def _bare_ed25519() -> Callable[[int], None]:
    key = ed25519.Ed25519PrivateKey.generate()
    digest = bytes(range(32))

    def run(n: int) -> None:
        for _ in range(n):
            key.sign(digest)

    return run


_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def _email_dkimpy(size: str, pem: bytes) -> Callable[[int], None]:
    """What a careful Python user writes: substitution, ``email`` to build, dkimpy to sign."""
    import dkim

    fields = samples.campaign(size)
    people = list(samples.recipients(1000))
    signed_headers = [b"from", b"to", b"subject", b"date", b"message-id", b"reply-to"]

    def fill(text: str, variables: dict) -> str:
        return _PLACEHOLDER.sub(lambda m: str(variables[m.group(1)]), text)

    def run(n: int) -> None:
        for i in range(n):
            to, variables = people[i % 1000]
            msg = EmailMessage()
            msg["From"] = fields["from_"]
            msg["To"] = to
            msg["Subject"] = fill(fields["subject"], variables)
            msg["Date"] = format_datetime(datetime.now(UTC))
            msg["Message-ID"] = make_msgid(domain=DOMAIN)
            for name, value in fields["headers"].items():
                msg[name] = fill(value, variables)
            msg.set_content(fill(fields["text"], variables))
            msg.add_alternative(fill(fields["html"], variables), subtype="html")
            data = msg.as_bytes(policy=SMTP)
            dkim.sign(data, SELECTOR.encode(), DOMAIN.encode(), pem, include_headers=signed_headers)

    return run


def _rate(run: Callable[[int], None], seconds: float) -> float:
    """Operations per CPU second, running batches until ``seconds`` of CPU have passed."""
    run(2)  # warm caches outside the measurement
    n, batch, spent = 0, 1, 0.0
    while spent < seconds:
        start = time.process_time()
        run(batch)
        spent += time.process_time() - start
        n += batch
        batch = min(batch * 2, 4096)
    return n / spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m salvo.bench.hotpath", description=__doc__)
    parser.add_argument("--seconds", type=float, default=0.6, help="CPU seconds per row, per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    print("generating keys ...", file=sys.stderr)
    rsa_pem = generate_private_key("rsa-sha256", 2048)
    ed_pem = generate_private_key("ed25519-sha256")
    rows: dict[str, Callable[[int], None]] = {
        "bare rsa-2048": _bare_rsa(rsa_pem),
        "bare ed25519": _bare_ed25519(),
        "salvo 4k rsa": _salvo("4k", rsa_pem, "rsa-sha256"),
        "salvo 4k jinja rsa": _salvo("4k jinja", rsa_pem, "rsa-sha256"),
        "salvo 4k ed25519": _salvo("4k", ed_pem, "ed25519-sha256"),
        "salvo 4k jinja ed25519": _salvo("4k jinja", ed_pem, "ed25519-sha256"),
        "salvo 100k rsa": _salvo("100k", rsa_pem, "rsa-sha256"),
        "salvo 100k ed25519": _salvo("100k", ed_pem, "ed25519-sha256"),
        "email+dkimpy 4k rsa": _email_dkimpy("4k", rsa_pem),
    }
    sizes = {
        size: len(MessageTemplate(**samples.campaign(size)).render(*next(samples.recipients(1))))
        for size in ("4k", "100k")
    }
    rich = MessageTemplate(**samples.rich_campaign())
    sizes["4k jinja"] = len(rich.render(*next(samples.rich_recipients(1))))
    rounds: dict[str, list[float]] = {name: [] for name in rows}
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds} ...", file=sys.stderr)
        for name, run in rows.items():
            # The pure-Python baseline is slow: one short round of it is enough.
            if name.startswith("email") and r > 0:
                continue
            rounds[name].append(_rate(run, args.seconds))
    rates = {name: statistics.median(values) for name, values in rounds.items()}

    print(f"\nrender + DKIM sign, one core, per CPU second (median of {args.rounds} rounds)")
    print(
        f"message sizes: 4k = {sizes['4k']:,} bytes, 4k jinja = {sizes['4k jinja']:,} bytes, "
        f"100k = {sizes['100k']:,} bytes (unsigned)"
    )
    print(f"{'row':<24}{'msg/s':>12}{'us/msg':>10}{'vs bare sig':>13}{'vs email+dkimpy':>17}")
    for name, rate in rates.items():
        bare = rates["bare ed25519" if "ed25519" in name else "bare rsa-2048"]
        baseline = rates["email+dkimpy 4k rsa"]
        ratios = f"{rate / bare:>12.2f}x{rate / baseline:>16.1f}x"
        print(f"{name:<24}{rate:>12,.0f}{1e6 / rate:>10.1f}{ratios}")
    for row in ("salvo 4k rsa", "salvo 4k jinja rsa"):
        overhead = 1e6 / rates[row] - 1e6 / rates["bare rsa-2048"]
        print(f"\n{row}: everything but the signature costs {overhead:.1f} us per message")
    print("\ntargets")
    results = []
    for row, goal, measure, threshold in TARGETS:
        value = measure(rates)
        met = value >= threshold
        results.append({"row": row, "target": goal, "value": value, "met": met})
        print(f"  {row:<20} {goal:<22} {value:>12,.2f}  {'met' if met else 'MISSED'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rates": rates, "sizes": sizes, "targets": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
