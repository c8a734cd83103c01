"""What encryption at rest costs, end to end, measured in one run.

``python -m salvo.bench.encryption [--pairs N] [--messages M] [--micro]``: the main row of
``salvo bench`` (4 KB, RSA-2048, a clean ``smtp-sink``, jobs of 1,000, 2 signers) run
``2 N`` times, each on a fresh data dir, alternately with the spool encrypted (the
default) and with ``[spool] encrypt = false`` (on/off, then off/on, ... so that a drift
of the machine's load hits both alike). Prints each run and the medians of end-to-end
msg/s and of the node's CPU-microseconds per message, as ``salvo.bench.bookkeeping``.

``--micro`` times the code alone on one core, per message, with the sample campaign's
jobs and variables: (a) the crypto itself, as the spool calls it (seal each recipient's
variables and draw its nonce at submit, open them at claim, seal and open the job's
content once per job of 1,000); (b) ``Spool.submit_many`` then ``claim_due`` in LMDB
with encryption on and off, best of ``--repeat`` each (this includes the larger records
written). Divided by the node's CPU per message, they bound the cost without the noise
of whole runs on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import msgspec

from salvo.bench import harness, onoff, suite

PER_JOB = 1000
OFF = "\n[spool]\nencrypt = false\n"


def one_run(tmp: Path, name: str, mode: str, messages: int) -> dict:
    row = suite.salvo_run(
        tmp, name, messages=messages, per_job=PER_JOB, extra="" if mode == "on" else OFF
    )
    return onoff.figures(row, mode, name)


def _sample_jobs(messages: int):
    from salvo.core.protocol import Job
    from salvo.testing import samples

    return [
        msgspec.convert(j, Job, from_attributes=False)
        for j in samples.jobs("micro", messages, PER_JOB, size="4k", tenant="acme")
    ]


def micro_crypto(messages: int = 50_000) -> float:
    """CPU-us per message of the crypto calls alone (see the module's doc)."""
    from salvo.core import spool_crypto as sc

    jobs = _sample_jobs(messages)
    cipher = sc.aead(os.urandom(32))
    encode = msgspec.msgpack.Encoder().encode
    plain_vars = [[encode(r.vars) for r in j.recipients] for j in jobs]
    bodies = [encode((j.subject, j.text, j.html, j.headers, j.raw)) for j in jobs]
    t = time.process_time()
    sealed_vars, sealed_bodies = [], []
    for seq, (job_vars, body) in enumerate(zip(plain_vars, bodies, strict=True)):
        nonces = os.urandom(sc.NONCE_BYTES * (len(job_vars) + 1))
        sealed_bodies.append(sc.seal(cipher, 1, nonces[:12], body, sc.job_ad(seq)))
        sealed_vars.append(
            [
                sc.seal(cipher, 1, nonces[12 * (i + 1) : 12 * (i + 2)], v, sc.vars_ad(seq, i))
                for i, v in enumerate(job_vars)
            ]
        )
    for seq, (job_vars, body) in enumerate(zip(sealed_vars, sealed_bodies, strict=True)):
        sc.open_sealed(cipher, body, sc.job_ad(seq))
        for i, v in enumerate(job_vars):
            sc.open_sealed(cipher, v, sc.vars_ad(seq, i))
    return (time.process_time() - t) * 1e6 / messages


def micro_spool(messages: int = 20_000, repeat: int = 3) -> dict[str, float]:
    """CPU-us per message of submit + claim in LMDB, on and off (best of ``repeat``)."""
    from salvo.core.spool import Spool

    jobs = _sample_jobs(messages)
    key = os.urandom(32)
    best = {"on": float("inf"), "off": float("inf")}
    with harness.workdir() as tmp:
        for r in range(repeat):
            for mode in ("on", "off") if r % 2 == 0 else ("off", "on"):
                spool = Spool.open(tmp / f"{mode}-{r}", master_key=key, encrypt=mode == "on")
                now = time.time()
                t = time.process_time()
                for i in range(0, len(jobs), 10):
                    spool.submit_many(jobs[i : i + 10], now)
                got = 0
                while got < messages:
                    claim = spool.claim_due(now + 1, 4096)
                    if not claim.claimed:
                        break
                    got += len(claim.claimed)
                spent = time.process_time() - t
                spool.close()
                assert got == messages, (mode, got)
                best[mode] = min(best[mode], spent * 1e6 / messages)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m salvo.bench.encryption")
    parser.add_argument("--pairs", type=int, default=5, help="on/off pairs (default 5)")
    parser.add_argument("--messages", type=int, default=20_000, help="per run (default 20,000)")
    parser.add_argument("--json", type=Path, help="also write the runs and medians here")
    parser.add_argument("--micro", action="store_true", help="also time the code itself")
    parser.add_argument("--repeat", type=int, default=3, help="micro spool runs per mode")
    args = parser.parse_args(argv)
    result: dict = {}
    if args.micro:
        crypto = micro_crypto()
        spool = micro_spool(repeat=args.repeat)
        result["micro"] = {"crypto_us_per_msg": crypto, "spool_us_per_msg": spool}
        print(f"crypto code alone: {crypto:.2f} CPU-us per message (one core)")
        print(
            f"spool submit + claim: on {spool['on']:.1f}, off {spool['off']:.1f} CPU-us per "
            f"message (best of {args.repeat}): {spool['on'] - spool['off']:+.1f}",
            flush=True,
        )
    runs: list[dict] = []
    if args.pairs:
        runs = onoff.run_pairs(
            "encryption",
            args.pairs,
            lambda tmp, name, mode: one_run(tmp, name, mode, args.messages),
        )
        result |= onoff.summarize(runs)
        onoff.print_medians(result, args.pairs, args.messages)
        off = result["off"]
        if args.micro:
            m = result["micro"]
            share = m["crypto_us_per_msg"] / off["cpu_us_per_msg"]
            spool_share = (m["spool_us_per_msg"]["on"] - m["spool_us_per_msg"]["off"]) / off[
                "cpu_us_per_msg"
            ]
            print(f"  crypto code / node CPU per msg (off): {share:.2%}")
            print(f"  spool on-off difference / node CPU per msg (off): {spool_share:.2%}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, **result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
