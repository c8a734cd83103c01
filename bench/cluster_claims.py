"""What claiming job ids in Redis adds to a group commit (docs/cluster.md).

``python -m salvo.bench.cluster_claims [--runs N]``: starts a throwaway ``redis-server``
(salvo.testing.redis) and times :meth:`salvo.actors.cluster_claims.Claims.claim` for
batches of 1, 100 and 1,000 new job ids (one script call per batch, through the node's
worker-thread Redis link); prints the median milliseconds per batch and microseconds per
job id.
"""

from __future__ import annotations

import argparse
import statistics
import time

import trio

from salvo.actors.cluster import RedisLink
from salvo.actors.cluster_claims import Claims
from salvo.core.cluster import ClusterKeys
from salvo.core.protocol import Job, Recipient
from salvo.testing.redis import RedisServer


async def _measure(url: str, runs: int) -> None:
    link = RedisLink(url, connect_timeout=1, command_timeout=5)
    claims = Claims(link, ClusterKeys("bench"), "a", ttl=3600, when_down="retry")
    rcpt = [Recipient(to="b@example.org")]
    try:
        for size in (1, 100, 1000):
            times = []
            for run in range(runs):
                jobs = [
                    Job(id=f"{size}-{run}-{k}", from_="a@example.org", recipients=rcpt)
                    for k in range(size)
                ]
                start = time.perf_counter()
                await claims.claim(jobs)
                times.append(time.perf_counter() - start)
            median = statistics.median(times)
            print(
                f"batch of {size:>5} job ids: {median * 1000:7.2f} ms per claim call, "
                f"{median / size * 1e6:7.1f} us per job id"
            )
        print(f"Redis round trips: {link.round_trips} for {sum((1, 100, 1000)) * runs} job ids")
    finally:
        link.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="batches per size (default 100)")
    args = parser.parse_args()
    with RedisServer() as server:
        trio.run(_measure, server.url, args.runs)


if __name__ == "__main__":
    main()
