"""Crash-test child: submit jobs through the group-commit writer until killed.

``python -m salvo.bench.spool_crash_child PREFIX``: imports, then reads the spool
directory from stdin (so the parent can overlap start-up with the previous cycle), prints
``imported``, opens the spool (recovering it), prints ``ready``, then runs several
submitting tasks and prints ``<id> <recipients>`` for each job right after its commit.
"""

from __future__ import annotations

import sys

import trio

from salvo.actors.spool_writer import SpoolWriter
from salvo.core.protocol import Job, Recipient
from salvo.core.spool import Spool

SUBMITTERS = 6


async def _submitter(writer: SpoolWriter, prefix: str, task: int) -> None:
    out = sys.stdout
    for k in range(1_000_000):
        job_id = f"{prefix}-{task}-{k}"
        n = 1 + k % 3
        rcpts = [
            Recipient(to=f"r{i}@d{k % 7}.example", vars={"k": k, "pad": "x" * 200})
            for i in range(n)
        ]
        job = Job(id=job_id, from_="crash@salvo.example", recipients=rcpts, text="crash")
        reply = (await writer.submit(job)).reply
        if reply.status != "accepted" or len(reply.accepted) != n:
            raise SystemExit(f"unexpected reply {reply}")
        out.write(f"{job_id} {n}\n")
        out.flush()


async def _main(data_dir: str, prefix: str) -> None:
    # A small initial map: the map grows (set_mapsize) while the child is being killed.
    spool = Spool.open(data_dir, map_size=1 << 20)
    writer = SpoolWriter(spool, max_jobs=64)
    print("ready", flush=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        for task in range(SUBMITTERS):
            nursery.start_soon(_submitter, writer, prefix, task)


def main() -> None:
    """Entry point (see the module docstring)."""
    data_dir = sys.stdin.readline().strip()
    if not data_dir:
        return
    print("imported", flush=True)
    trio.run(_main, data_dir, sys.argv[1])


if __name__ == "__main__":
    main()
