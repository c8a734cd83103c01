"""The smart sink (``bench/sink.py``) as its own process, for ``salvo bench``.

    python -m salvo.bench.smartsink --host 127.0.0.60 --status FILE [--policy JSON]
        [--key PEM] [--sample-every N]

Prints the bound port on stdout, then serves until SIGTERM or SIGINT. Every 0.2 s and
at exit it writes its counters to ``--status`` (JSON, replaced atomically); at exit it
also checks the DKIM signatures of the sampled messages with dkimpy against ``--key``
(``dkim_checked``, ``dkim_valid``). Its own process, so that its CPU and memory are
counted apart from the producer's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import trio

from salvo.bench.sink import SinkPolicy, SinkStats, serve_sink


def _status(stats: SinkStats) -> dict:
    return {
        "connections": stats.connections,
        "messages": stats.messages,
        "recipients": stats.recipients,
        "bytes": stats.bytes,
        "deferred": stats.deferred,
        "bounced": stats.bounced,
        "duplicates": stats.duplicates,
        "unique_message_ids": len(stats.message_ids),
    }


def _write(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _check_dkim(samples: list[bytes], key: Path | None) -> dict:
    if key is None or not samples:
        return {"dkim_checked": 0, "dkim_valid": 0}
    from salvo.core.dkimkeys import verify

    pem = key.read_bytes()
    valid = 0
    for message in samples:
        results = verify(message, [pem])
        valid += bool(results) and all(r.valid for r in results)
    return {"dkim_checked": len(samples), "dkim_valid": valid}


async def _main(args: argparse.Namespace) -> dict:
    policy = SinkPolicy(**json.loads(args.policy))
    stats = SinkStats(sample_every=args.sample_every)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_sink, args.host, 0, stats, policy)
            print(port, flush=True)

            async def report() -> None:
                while True:
                    _write(args.status, _status(stats))
                    await trio.sleep(0.2)

            nursery.start_soon(report)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()
    return _status(stats) | _check_dkim(stats.samples, args.key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m salvo.bench.smartsink")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--status", type=Path, required=True)
    parser.add_argument("--policy", default="{}", help="SinkPolicy fields as JSON")
    parser.add_argument("--key", type=Path, help="the DKIM private key to verify samples")
    parser.add_argument("--sample-every", type=int, default=100)
    args = parser.parse_args(argv)
    final = trio.run(_main, args)
    _write(args.status, final | {"final": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
