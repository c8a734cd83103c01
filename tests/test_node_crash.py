"""The node under failure: SIGKILLs of the whole node under continuous submission, an
orderly SIGTERM, and a killed signer process. Nothing acknowledged to a producer is lost."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

from nodeutil import (
    AioSink,
    ContinuousProducer,
    NodeProcess,
    NodeSetup,
    RawProducer,
    children_of,
    job,
    missing_acked,
    running_node,
    wait_for,
)

KILLS = 20
MAX_READY = 64
SETTLE_BOUND = 120.0  # seconds for the last restart to deliver what is left


def test_sigkill_loop_under_continuous_submission_loses_nothing(tmp_path: Path):
    rng = random.Random(20240611)
    with AioSink("127.0.0.6") as sink:
        sink.data_delay = 0.002  # keep some deliveries in flight when the kill comes
        setup = NodeSetup(
            tmp_path / "node",
            {"example.org": sink.address},
            max_ready=MAX_READY,
            first_retry="1s",
            max_retry="2s",
        )
        node = NodeProcess(setup)
        kills = 0
        delivered_between = []
        try:
            with ContinuousProducer(setup.endpoint, "crash", window=16, seed=7) as producer:
                for i in range(KILLS):
                    if i % 4 == 3:  # sometimes during start-up (recovery, binding)
                        node.start(wait=False)
                        time.sleep(rng.uniform(0.0, 1.2))
                    else:
                        node.start()
                        time.sleep(rng.uniform(0.2, 1.5))
                    node.kill()
                    kills += 1
                    delivered_between.append(len(sink.snapshot()))
                node.start()
                # Let the producer see the node up for a moment, then stop it.
                wait_for(lambda: producer.acked_count() > 0, 30, 0.1)
                time.sleep(1.0)
            acked = dict(producer.acked)
            wait_for(lambda: not missing_acked(acked, sink, setup), SETTLE_BOUND, 0.25)
            missing = missing_acked(acked, sink, setup)
            copies = sink.by_message_id()
            status = node.terminate()
        finally:
            node.close()

    assert kills >= KILLS
    assert node.starts == KILLS + 1
    assert len(acked) >= 100, f"too little work acked to mean anything: {producer.statuses}"
    assert delivered_between[-1] > 0
    assert missing == [], f"{len(missing)} acked recipients lost, e.g. {missing[:5]}"
    # Every message arrived for the right recipient, and duplicates stay in the window.
    for m in sink.snapshot():
        if m.message_id in acked:
            assert m.rcpts == [acked[m.message_id]]
    duplicates = sum(n - 1 for n in copies.values() if n > 1)
    assert duplicates <= kills * MAX_READY, f"{duplicates} duplicates after {kills} kills"
    assert max(copies.values()) <= kills + 1
    assert status == 0, node.log()[-3000:]
    print(
        f"\ncrash loop: {kills} kills, {len(acked)} recipients acked, {len(copies)} delivered, "
        f"{duplicates} duplicates; producer replies {dict(producer.statuses)}"
    )


def test_sigterm_drains_and_exits_0_with_nothing_lost(tmp_path: Path):
    with AioSink("127.0.0.7") as sink:
        sink.data_delay = 0.02  # a backlog: deliveries are in flight at SIGTERM
        setup = NodeSetup(tmp_path / "node", {"example.org": sink.address}, max_ready=MAX_READY)
        node = NodeProcess(setup)
        try:
            node.start()
            with ContinuousProducer(setup.endpoint, "term", window=16, timeout=5) as producer:
                assert wait_for(lambda: producer.acked_count() >= 200, 60, 0.05)
                node.proc.send_signal(signal.SIGTERM)
                status = node.proc.wait(timeout=60)
                producer.stop_event.set()
                with producer.lock:
                    acked = dict(producer.acked)
                states = setup.queue_states()
                arrived = sink.by_message_id()
                log = node.log()
                # Restarted, the node answers the jobs still in flight and delivers the rest.
                node.start()
                producer.stop()
            every_ack = dict(producer.acked)
            assert wait_for(lambda: set(every_ack) <= set(sink.by_message_id()), SETTLE_BOUND, 0.2)
            node.terminate()
        finally:
            node.close()

    assert status == 0, log[-3000:]
    assert "node stopped" in log
    assert states.get("in-flight", 0) == 0, states
    not_delivered = [m for m in acked if m not in arrived]
    assert len(not_delivered) <= states.get("queued", 0) + states.get("deferred", 0), states
    assert states.get("delivered", 0) == len(arrived), (states, len(arrived))
    assert max(arrived.values()) == 1  # an orderly stop makes no duplicates
    assert {k for k, n in states.items() if n} <= {"queued", "deferred", "delivered"}, states
    assert max(sink.by_message_id().values()) == 1


def test_a_killed_signer_is_restarted_and_no_job_is_lost(tmp_path: Path):
    with AioSink("127.0.0.8") as sink:
        sink.data_delay = 0.005
        setup = NodeSetup(tmp_path / "node", {"example.org": sink.address}, signers=2)
        with running_node(setup) as node:
            with ContinuousProducer(setup.endpoint, "sig", window=16, timeout=5) as producer:
                killed = []
                for _ in range(2):
                    old = wait_for(lambda: node.child_pid("signer-0"), 30, 0.1)
                    assert old, node.log()[-3000:]
                    start = len(sink.snapshot())
                    assert wait_for(lambda s=start: len(sink.snapshot()) > s + 20, 60, 0.05)
                    os.kill(old, signal.SIGKILL)
                    killed.append(old)

                    def restarted(old: int = old) -> int | None:
                        pid = node.child_pid("signer-0")
                        return pid if pid and pid != old else None

                    new = wait_for(restarted, 30, 0.1)
                    assert new, f"signer-0 was not restarted:\n{node.log()[-3000:]}"
                    assert new in children_of(node.pid)
                    assert old not in children_of(node.pid)
                assert wait_for(lambda: producer.acked_count() >= 200, 60, 0.05)
            acked = dict(producer.acked)
            assert wait_for(lambda: set(acked) <= set(sink.by_message_id()), SETTLE_BOUND, 0.2)
            copies = sink.by_message_id()
            core_starts = node.log().count("started core ")
            assert node.terminate() == 0

    missing = [m for m in acked if m not in copies]
    assert missing == []
    assert max(copies.values()) == 1, "a signer's death duplicated messages"
    assert core_starts == 1  # the core process was not restarted along with the signer
    assert len(killed) == 2
    assert Counter(m.rcpts[0] for m in sink.snapshot() if m.message_id in acked) == Counter(
        acked.values()
    )


def test_sigterm_or_sigint_to_the_whole_process_group_exits_0(tmp_path: Path):
    """As a terminal's Ctrl-C or systemd's stop do: every process gets the signal."""
    with AioSink("127.0.0.7") as sink:
        setup = NodeSetup(tmp_path / "node", {"example.org": sink.address}, signers=2)
        node = NodeProcess(setup)
        try:
            for signum in (signal.SIGTERM, signal.SIGINT):
                node.start()
                with ContinuousProducer(setup.endpoint, f"g{signum}", timeout=5) as producer:
                    assert wait_for(lambda: producer.acked_count() >= 50, 60, 0.05)
                    os.killpg(node.pid, signum)
                    status = node.proc.wait(timeout=60)
                    log = node.log()
                    producer.stop_event.set()
                    states = setup.queue_states()
                    node.start()  # answers what is in flight, delivers the rest
                    producer.stop()
                assert status == 0, f"{signal.Signals(signum).name}: exit {status}\n{log[-3000:]}"
                assert "node stopped" in log, log[-3000:]  # the core finished its cleanup
                # The sink answers at once: the drain finishes the in-flight deliveries
                # (the signers too must finish their batches) instead of timing out.
                assert "handed back to the queue" not in log, log[-3000:]
                assert states.get("in-flight", 0) == 0, states
                acked = set(producer.acked)
                assert wait_for(lambda a=acked: a <= set(sink.by_message_id()), SETTLE_BOUND, 0.2)
                assert node.terminate() == 0
        finally:
            node.close()
    assert max(sink.by_message_id().values()) == 1


def test_sigterm_with_a_hung_destination_hands_in_flight_work_back(tmp_path: Path):
    """The destination holds every DATA: the drain gives up after its bound, returns the
    in-flight recipients to the queue and the node still exits 0; restarted, it sends them."""
    with AioSink("127.0.0.9") as sink:
        sink.data_delay = 300.0  # longer than the test: only the node's drain bound ends it
        setup = NodeSetup(tmp_path / "node", {"example.org": sink.address}, max_ready=MAX_READY)
        node = NodeProcess(setup)
        try:
            node.start()
            with ContinuousProducer(setup.endpoint, "hung", window=8, timeout=5) as producer:
                assert wait_for(lambda: producer.acked_count() >= 100, 60, 0.05)
                producer.stop_event.set()
            acked = dict(producer.acked)
            node.proc.send_signal(signal.SIGTERM)
            # While it drains (the deliveries hang), a new job is refused with "retry".
            assert wait_for(lambda: "SIGTERM: stopping" in node.log(), 30, 0.05)
            late = RawProducer(setup.endpoint)
            try:
                refused = late.request(job("late", ["late@example.org"]), timeout=10)
            finally:
                late.close()
            status = node.proc.wait(timeout=90)
            log = node.log()
            states = setup.queue_states()
            sink.data_delay = 0.0
            node.start()
            assert wait_for(lambda: set(acked) <= set(sink.by_message_id()), SETTLE_BOUND, 0.2)
            assert node.terminate() == 0
        finally:
            node.close()

    assert refused is not None and refused["status"] == "retry", refused
    assert refused["id"] == "late" and "stopping" in refused["error"], refused
    assert status == 0, log[-3000:]
    assert "handed back to the queue" in log, log[-3000:]
    assert states.get("in-flight", 0) == 0, states
    assert states.get("delivered", 0) == 0, states
    assert states.get("queued", 0) >= len(acked), states
    assert max(sink.by_message_id().values()) == 1


def test_a_killed_core_process_restarts_with_the_signers_and_loses_nothing(tmp_path: Path):
    with AioSink("127.0.0.10") as sink:
        sink.data_delay = 0.002
        setup = NodeSetup(tmp_path / "node", {"example.org": sink.address}, max_ready=MAX_READY)
        with running_node(setup) as node:
            with ContinuousProducer(setup.endpoint, "core", window=16, timeout=3) as producer:
                assert wait_for(lambda: len(sink.snapshot()) > 50, 60, 0.05)
                core = node.child_pid("core")
                signer = node.child_pid("signer-0")
                assert core and signer
                os.kill(core, signal.SIGKILL)

                def restarted() -> bool:
                    new_core, new_signer = node.child_pid("core"), node.child_pid("signer-0")
                    return bool(
                        new_core and new_signer and new_core != core and new_signer != signer
                    )

                assert wait_for(restarted, 30, 0.1), node.log()[-3000:]
                before = producer.acked_count()
                assert wait_for(lambda: producer.acked_count() > before + 50, 60, 0.05)
            acked = dict(producer.acked)
            assert wait_for(lambda: set(acked) <= set(sink.by_message_id()), SETTLE_BOUND, 0.2)
            copies = sink.by_message_id()
            assert node.terminate() == 0
    assert sum(n - 1 for n in copies.values()) <= MAX_READY
