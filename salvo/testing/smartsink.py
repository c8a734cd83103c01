"""The smart sink (:mod:`salvo.testing.sink`) as its own process, and the handle that
starts it (:class:`SmartSink`).

    python -m salvo.testing.smartsink --host 127.0.0.60 --status FILE [--policy JSON]
        [--key PEM] [--sample-every N]

Prints the bound port on stdout, then serves until SIGTERM or SIGINT. Every 0.2 s and
at exit it writes its counters to ``--status`` (JSON, replaced atomically); at exit it
also checks the DKIM signatures of the sampled messages with dkimpy against ``--key``
(``dkim_checked``, ``dkim_valid``). Its own process, so that its CPU and memory are
counted apart from those of whoever drives the load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import trio

from salvo.core.dkimkeys import verify
from salvo.testing.procs import cpu_seconds, peak_rss, stop_process
from salvo.testing.sink import SinkPolicy, SinkStats, serve_sink


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
        "rate_limited": stats.rate_limited,
        "per_second": {str(k): v for k, v in sorted(stats.per_second.items())},
    }


def _write(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _check_dkim(samples: list[bytes], key: Path | None) -> dict:
    if key is None or not samples:
        return {"dkim_checked": 0, "dkim_valid": 0}
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
    parser = argparse.ArgumentParser(prog="python -m salvo.testing.smartsink")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--status", type=Path, required=True)
    parser.add_argument("--policy", default="{}", help="SinkPolicy fields as JSON")
    parser.add_argument("--key", type=Path, help="the DKIM private key to verify samples")
    parser.add_argument("--sample-every", type=int, default=100)
    args = parser.parse_args(argv)
    final = trio.run(_main, args)
    _write(args.status, final | {"final": True})
    return 0


class SmartSink:
    """``python -m salvo.testing.smartsink`` on ``host`` (a free port), answering by
    ``policy`` (:class:`~salvo.testing.sink.SinkPolicy` fields); verifies the DKIM
    signatures of its samples against ``key`` when given."""

    def __init__(self, folder: Path, host: str, policy: dict, key: Path | None) -> None:
        self.host = host
        self.status_path = folder / f"smartsink-{host}.json"
        cmd = [sys.executable, "-m", "salvo.testing.smartsink", "--host", host]
        cmd += ["--status", str(self.status_path), "--policy", json.dumps(policy)]
        if key is not None:
            cmd += ["--key", str(key)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, start_new_session=True, text=True)
        try:
            self.port = int(self.proc.stdout.readline())
        except BaseException:
            self.stop()
            raise
        self.cpu = 0.0
        self.rss = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def status(self) -> dict:
        """Its latest counters (empty before the first write)."""
        with contextlib.suppress(OSError, ValueError):
            return json.loads(self.status_path.read_text())
        return {}

    def received(self) -> int:
        return self.status().get("messages", 0)

    def finish(self) -> dict:
        """Stop it; its final counters (DKIM checks included). ``cpu`` and ``rss`` then
        hold what the process used."""
        self.cpu = cpu_seconds(self.proc.pid)
        self.rss = peak_rss(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(60)
        self.stop()
        return self.status()

    def stop(self) -> None:
        stop_process(self.proc, timeout=5)


if __name__ == "__main__":
    sys.exit(main())
