"""The duplicate window under SIGKILL, against a receiver as slow as a real one.

A message is sent twice only if the node dies between the destination's 250 and the
durable ``delivered`` record (docs/spool.md). That window must stay about one outcome
window plus one commit, whatever the receiver's speed: here each message costs the
receiver 2 ms of blocking work (as a DKIM-verifying server does), over 20 connections.

A message can be sent a third time only if two kills each come within its window: after a
restart, the recipients recovered from in-flight are the oldest and go out first, spread
over every connection's pipelined batch; a kill once the node has delivered more than
those must find them recorded. Kills closer together than that can make more copies of
one message: at-least-once delivery cannot promise better.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from nodeutil import (
    AioSink,
    ContinuousProducer,
    NodeProcess,
    NodeSetup,
    missing_acked,
    wait_for,
)

from salvo.actors.delivery import BATCH

KILLS = 5
CONNECTIONS = 20
RECEIVER_COST = 0.002  # seconds of blocking work per message at the receiver
MAX_DUPLICATES_PER_KILL = 100
MAX_READY = 512  # in flight at most: what a kill can leave to recover
# Deliveries after a restart by which every recovered recipient has been sent again: they
# are at most MAX_READY, queued first, and each connection finishes its batch.
RECOVERED_SENT = MAX_READY + CONNECTIONS * BATCH
SETTLE_BOUND = 180.0  # seconds for the last start to deliver what is left


class _SlowHandler:
    """The sink's handler, with a blocking cost per message: the receiver's event loop does
    nothing else meanwhile, so 20 connections share one slow server."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.cost = RECEIVER_COST
        self.times: list[float] = []  # when each of the sink's messages got its 250

    async def handle_RCPT(self, *args):
        return await self.inner.handle_RCPT(*args)

    async def handle_DATA(self, server, session, envelope):
        time.sleep(self.cost)
        reply = await self.inner.handle_DATA(server, session, envelope)
        self.times.append(time.time())
        return reply


def _windows(sink: AioSink, times: list[float], events: list[dict], until: float) -> list[float]:
    """Seconds from each delivered message's 250 to its ``delivered`` record, for the 250s
    before ``until``."""
    received: dict[str, list[float]] = {}
    for message, at in zip(sink.snapshot(), times, strict=False):
        if at < until:
            received.setdefault(message.message_id or "", []).append(at)
    out = []
    for e in events:
        if e["type"] == "delivered" and e["message_id"] in received:
            before = [t for t in received[e["message_id"]] if t <= e["ts"]]
            if before:
                out.append(e["ts"] - max(before))
    return sorted(out)


def test_sigkills_against_a_slow_receiver_duplicate_little_and_lose_nothing(tmp_path: Path):
    rng = random.Random(11)
    with AioSink("127.0.0.9") as sink:
        handler = sink._controller.handler = _SlowHandler(sink._controller.handler)
        setup = NodeSetup(
            tmp_path / "node",
            {"example.org": sink.address},
            signers=1,
            max_ready=MAX_READY,
            first_retry="1s",
            max_retry="2s",
            extra=f"max_connections = {CONNECTIONS}\n",
        )
        node = NodeProcess(setup)
        delivered_before_kill = []
        try:
            with ContinuousProducer(setup.endpoint, "win", window=16, seed=3) as producer:
                for _ in range(KILLS):
                    node.start()
                    # Under load: deliveries flowing, a backlog queued behind them.
                    start = len(sink.snapshot()) + RECOVERED_SENT
                    assert wait_for(lambda s=start: len(sink.snapshot()) > s, 60, 0.05), node.log()[
                        -3000:
                    ]
                    time.sleep(rng.uniform(0.0, 0.5))
                    node.kill()
                    delivered_before_kill.append(len(sink.snapshot()))
                node.start()
                wait_for(lambda: producer.acked_count() > 0, 30, 0.1)
                time.sleep(0.5)
            # The kills are over: the rest is delivered at full speed.
            slow_until = time.time()
            handler.cost = 0.0
            acked = dict(producer.acked)

            wait_for(lambda: not missing_acked(acked, sink, setup), SETTLE_BOUND, 0.25)
            lost = missing_acked(acked, sink, setup)
            copies = sink.by_message_id()
            windows = _windows(sink, handler.times, setup.events(), slow_until)
            status = node.terminate()
        finally:
            node.close()

    duplicates = sum(n - 1 for n in copies.values() if n > 1)
    print(
        f"\nslow receiver: {KILLS} kills, {len(acked)} acked, {len(copies)} delivered, "
        f"{duplicates} duplicates, at most {max(copies.values())} copies of one message; "
        f"sink counts at each kill {delivered_before_kill}; from 250 to the delivered record "
        f"(slow receiver): "
        f"median {windows[len(windows) // 2] * 1000:.0f} ms, "
        f"99th percentile {windows[len(windows) * 99 // 100] * 1000:.0f} ms, "
        f"max {windows[-1] * 1000:.0f} ms"
    )
    assert len(acked) >= 500, f"too little work acked to mean anything: {producer.statuses}"
    assert lost == [], f"{len(lost)} acked recipients lost, e.g. {lost[:5]}"
    assert duplicates <= KILLS * MAX_DUPLICATES_PER_KILL, f"{duplicates} duplicates"
    assert max(copies.values()) <= 2, copies.most_common(3)
    assert status == 0, node.log()[-3000:]
