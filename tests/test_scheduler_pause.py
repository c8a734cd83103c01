"""The scheduler and a dead destination: a real spool, scheduler and delivery, smart sinks
on 127.0.0.x; only the signer link is replaced, by a recorder that "signs" at once.

A provider that refuses every connection pauses; the deferral carries the pause's end and
the spool's next attempt is not earlier. While it is paused, its claimed recipients go back
to the spool unsigned (no sign batch, no event), due when the pause ends; another
provider's recipients still go out. Every wait is bounded.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import trio

from salvo.actors.delivery import Delivery, Result
from salvo.actors.scheduler import Scheduler
from salvo.actors.spool_writer import SpoolWriter
from salvo.core.config import parse_config
from salvo.core.messages import Content, SignItem
from salvo.core.protocol import Job, Recipient
from salvo.core.spool import Spool
from salvo.testing.sink import SinkPolicy, SinkStats, serve_sink

BOUND = 30  # seconds: every wait ends well within this
PAUSE = 60.0  # connect_backoff: the first pause
SPREAD = 6.0  # after_pause: up to a tenth of the pause
BODY = b"From: news@acme.example\r\nSubject: hi\r\n\r\nhello\r\n"


class Signers:
    """Stands in for the signer processes: records every sign batch, answers at once."""

    def __init__(self) -> None:
        self.batches: list[list[SignItem]] = []
        self.scheduler: Scheduler | None = None

    def submit(self, job: int, content: Content, items: list[SignItem]) -> None:
        self.batches.append(items)
        for item in items:
            self.scheduler.on_signed(item.seq, item.idx, BODY, "")

    def signed(self) -> set[str]:
        return {item.to for batch in self.batches for item in batch}


def job(job_id: str, recipients: list[str]) -> Job:
    return Job(
        id=job_id,
        from_="news@acme.example",
        recipients=[Recipient(to=r) for r in recipients],
        subject="hi",
        text="hello",
    )


async def wait_until(predicate, what: str) -> None:
    with trio.move_on_after(BOUND):
        while not predicate():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"not within {BOUND} s: {what}")


def test_a_paused_provider_gets_no_signing_and_its_deferrals_wait_for_the_pause(tmp_path: Path):
    trio.run(_test_a_paused_provider, tmp_path)


async def _test_a_paused_provider(tmp_path: Path) -> None:
    ok, dead = SinkStats(), SinkStats()
    spool = Spool.open(tmp_path / "data", map_size=16 << 20)
    writer = SpoolWriter(spool)
    seen: list[Result] = []  # every result delivery gives the scheduler
    signers = Signers()
    try:
        async with trio.open_nursery() as nursery:
            okport = await nursery.start(serve_sink, "127.0.0.31", 0, ok, SinkPolicy())
            deadport = await nursery.start(
                serve_sink, "127.0.0.32", 0, dead, SinkPolicy(throttle_share=1.0)
            )
            # The retry schedule (1-2 s) is shorter than the pause: the hint decides.
            config = parse_config(
                f"""
[node]
data_dir = "{tmp_path / "data"}"
hostname = "node.salvo.test"
[routes]
"ok.test" = "127.0.0.31:{okport}"
"dead.test" = "127.0.0.32:{deadport}"
[providers.default]
connect_backoff = "{PAUSE:.0f}s"
[traffic.default]
first_retry = "1s"
max_retry = "2s"
"""
            )
            tap_send, tap_recv = trio.open_memory_channel[Result](math.inf)
            results_send, results_recv = trio.open_memory_channel[Result](math.inf)
            events_send, events_recv = trio.open_memory_channel(math.inf)
            delivery = Delivery(tap_send)
            scheduler = Scheduler(config, writer, delivery, results_recv, results_send, events_send)
            signers.scheduler = scheduler
            scheduler.dispatcher = signers

            async def relay() -> None:
                async for result in tap_recv:
                    seen.append(result)
                    results_send.send_nowait(result)

            nursery.start_soon(writer.run)
            await nursery.start(delivery.run)
            nursery.start_soon(relay)
            nursery.start_soon(scheduler.run_outcomes)
            nursery.start_soon(scheduler.run_claims)
            provider = f"route:127.0.0.32:{deadport}"

            # 1. The dead destination: one attempt, a pause, a deferral until its end.
            before = time.time()
            await writer.submit(job("j1", ["a@dead.test"]))
            (seq1,) = spool.find_jobs("j1")
            await wait_until(lambda: spool.get_recipient(seq1, 0).state == "deferred", "a deferral")
            deferral = spool.get_recipient(seq1, 0)
            (result,) = seen
            assert result.retry_at is not None and delivery.paused_for(provider) > 0
            assert deferral.next_attempt >= result.retry_at - 1e-3  # ms in the due index
            assert before + PAUSE <= deferral.next_attempt <= time.time() + PAUSE + SPREAD
            assert dead.connections == 1

            # 2. While paused: its recipients go back unsigned; the other provider's go out.
            signed_before = len(signers.batches)
            dead_rcpts = [f"b{i}@dead.test" for i in range(3)]
            ok_rcpts = [f"c{i}@ok.test" for i in range(3)]
            await writer.submit(job("j2", dead_rcpts + ok_rcpts))
            (seq2,) = spool.find_jobs("j2")

            def handed_back() -> bool:
                records = [spool.get_recipient(seq2, i) for i in range(3)]
                return all(r.last is not None and "paused" in r.last.text for r in records)

            await wait_until(lambda: ok.messages == 3, "the other provider's mail")
            await wait_until(handed_back, "the hand-back")
            await wait_until(
                lambda: all(spool.get_recipient(seq2, i).state == "delivered" for i in (3, 4, 5)),
                "the other provider's outcomes recorded",
            )
            after = time.time()
            events = []
            while True:
                try:
                    events += events_recv.receive_nowait()
                except trio.WouldBlock:
                    break
            nursery.cancel_scope.cancel()
        records = [spool.get_recipient(seq2, i) for i in range(6)]
    finally:
        writer.close()
        spool.close()
    new_batches = signers.batches[signed_before:]
    assert {item.to for batch in new_batches for item in batch} == set(ok_rcpts)
    assert "b0@dead.test" not in signers.signed()
    assert dead.connections == 1  # no attempt while paused
    for record in records[:3]:
        assert record.state == "queued" and record.attempts == 0
        assert f"{provider}: paused for" in record.last.text
        assert before + PAUSE <= record.next_attempt <= after + PAUSE + SPREAD
    assert [r.state for r in records[3:]] == ["delivered"] * 3
    # Hand-backs were never tried: no event names them.
    assert not {e.recipient for e in events} & set(dead_rcpts)
