"""The scheduler's outcome commits on Trio's MockClock: a result waits at most the outcome
window before its commit starts, and results that arrive together share one commit. This
bounds the time from a destination's 250 to the durable record (the duplicate window after
a crash, docs/spool.md). The spool writer is a recorder here: no LMDB, no threads."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from salvo.actors.delivery import Delivery, Message, Result
from salvo.actors.scheduler import Scheduler
from salvo.core import policy
from salvo.core.config import parse_config
from salvo.core.smtp import Outcome, Reply

COMMIT = 0.003  # seconds each recorded commit takes


class Writer:
    """Records each commit's outcomes and the (mock) time it started."""

    def __init__(self) -> None:
        self.spool = None
        self.commits: list[tuple[float, list[int]]] = []

    async def record_outcomes(self, outcomes, book=None, also=None):
        self.commits.append((trio.current_time(), [o.idx for o in outcomes]))
        await trio.sleep(COMMIT)
        return []


def _result(idx: int) -> Result:
    reply = Reply(250, (2, 0, 0), ("ok",))
    message = Message(1, idx, f"r{idx}@example.org", "news@acme.example", b"")
    return Result(message, Outcome.delivered(message.rcpt, reply), "mx.example", "")


async def _run(tmp_path: Path, arrivals: list[tuple[float, int]]) -> list[tuple[float, list]]:
    """Send each result at its time (seconds from the start); the commits, with their start
    times from the same origin."""
    config = parse_config('[node]\ndata_dir = "data"\n', base_dir=str(tmp_path))
    writer = Writer()
    results_send, results_recv = trio.open_memory_channel[Result](1000)
    events_send, _events_recv = trio.open_memory_channel(1000)
    delivery = Delivery(results_send)
    scheduler = Scheduler(config, writer, delivery, results_recv, results_send, events_send)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(scheduler.run_outcomes)
        start = trio.current_time()
        for at, idx in arrivals:
            await trio.sleep_until(start + at)
            results_send.send_nowait(_result(idx))
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    return [(at - start, idx) for at, idx in writer.commits]


def test_results_wait_at_most_the_outcome_window_and_one_commit(tmp_path: Path):
    window = policy.OUTCOME_WINDOW
    arrivals = [
        (0.0, 0),
        (0.0, 1),
        (window / 2, 2),  # within the first one's window: the same commit
        (5.0, 3),
        (5.0 + window + COMMIT / 2, 4),  # while 3's commit runs: the next one
        (6.0, 5),
    ]
    clock = trio.testing.MockClock(autojump_threshold=0)
    commits = trio.run(_run, tmp_path, arrivals, clock=clock)
    assert [idx for _, idx in commits] == [[0, 1, 2], [3], [4], [5]]
    arrived = {idx: at for at, idx in arrivals}
    for at, idx in commits:
        waited = at - arrived[idx[0]]  # the oldest result of a commit waited longest
        assert 0 <= waited <= window + COMMIT + 1e-9, commits
