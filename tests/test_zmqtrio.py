"""The Trio adapter for pyzmq on real sockets: bursts, backpressure, ownership, close."""

from __future__ import annotations

import threading

import msgspec
import pytest
import trio
import trio.testing
import zmq

from salvo.actors.framing import Codec, FramingError, encode
from salvo.actors.zmqtrio import TrioSocket, context

N = 10_000
HANG_GUARD = 30  # seconds; only a guard against a hang, not a timing assertion


def _pair(kind_a: int, kind_b: int, *, hwm: int = 1000) -> tuple[zmq.Socket, zmq.Socket]:
    a, b = context().socket(kind_a), context().socket(kind_b)
    for s in (a, b):
        s.setsockopt(zmq.SNDHWM, hwm)
        s.setsockopt(zmq.RCVHWM, hwm)
        s.setsockopt(zmq.LINGER, 0)
    a.bind("tcp://127.0.0.1:*")
    b.connect(a.getsockopt_string(zmq.LAST_ENDPOINT))
    return a, b


def test_trio_to_trio_both_ways_in_bursts():
    async def main():
        a_raw, b_raw = _pair(zmq.PAIR, zmq.PAIR, hwm=20)
        with TrioSocket(a_raw) as a, TrioSocket(b_raw) as b:

            async def echo():
                seen = 0
                while seen < N:
                    for msg in await b.recv_batch(64, copy=True):
                        await b.send_multipart([b"echo", *msg])
                        seen += 1

            async def drive():
                body = b"x" * 1024
                got = []
                for burst in range(N // 100):
                    for i in range(100):
                        await a.send_multipart([b"%d" % (burst * 100 + i), body])
                    want = len(got) + 100
                    while len(got) < want:
                        got.extend(await a.recv_batch(want - len(got), copy=True))
                assert [int(m[1]) for m in got] == list(range(N))
                assert all(m[0] == b"echo" and m[2] == body for m in got)

            with trio.fail_after(HANG_GUARD):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(echo)
                    nursery.start_soon(drive)

    trio.run(main)


def test_blocking_sender_bursts_to_trio_receiver():
    pull_raw, push = _pair(zmq.PULL, zmq.PUSH, hwm=50)
    go = threading.Event()

    def sender():
        go.wait()
        push.setsockopt(zmq.SNDTIMEO, HANG_GUARD * 1000)
        for i in range(N):
            push.send_multipart([b"%d" % i])  # blocking pyzmq: bursts up to the HWMs

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()

    async def main():
        got = []
        with TrioSocket(pull_raw) as pull, trio.fail_after(HANG_GUARD):
            go.set()
            while len(got) < N:
                # Alternate single receives and batches: both paths must re-check EVENTS.
                if len(got) % 3:
                    got.extend(await pull.recv_batch(500, copy=True))
                else:
                    got.append(await pull.recv_multipart(copy=True))
        assert [int(m[0]) for m in got] == list(range(N))

    try:
        trio.run(main)
    finally:
        go.set()
        thread.join(HANG_GUARD + 5)
        if not thread.is_alive():  # never close a socket another thread still uses
            push.close(0)


def test_trio_sender_waits_for_room_then_blocking_receiver_drains():
    # Large frames and tiny HWMs fill the pipes and TCP buffers: sends must wait for POLLOUT.
    push_raw, pull = _pair(zmq.PUSH, zmq.PULL, hwm=2)
    body = b"y" * (256 * 1024)
    go = threading.Event()
    received = []

    def receiver():
        go.wait()
        pull.setsockopt(zmq.RCVTIMEO, HANG_GUARD * 1000)
        while len(received) < 200:
            received.append(pull.recv_multipart())

    thread = threading.Thread(target=receiver, daemon=True)
    thread.start()

    async def main():
        with TrioSocket(push_raw) as push, trio.fail_after(HANG_GUARD):
            sent = 0
            with pytest.raises(trio.WouldBlock):
                while sent < 200:  # nobody reads yet: this must run out of room
                    push.send_multipart_nowait([b"%d" % sent, body])
                    sent += 1
            go.set()
            for i in range(sent, 200):
                await push.send_multipart([b"%d" % i, body])
            thread.join(HANG_GUARD)

    try:
        trio.run(main)
    finally:
        go.set()
        thread.join(HANG_GUARD + 5)
        if not thread.is_alive():
            pull.close(0)
    assert [int(m[0]) for m in received] == list(range(200))
    assert all(m[1] == body for m in received)


def test_two_tasks_on_one_socket_is_busy():
    async def main():
        a_raw, b_raw = _pair(zmq.PAIR, zmq.PAIR)
        with TrioSocket(a_raw) as a, TrioSocket(b_raw) as b, trio.fail_after(HANG_GUARD):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.recv_multipart)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(trio.BusyResourceError):
                    await a.recv_multipart()
                with pytest.raises(trio.BusyResourceError):
                    a.recv_multipart_nowait()
                with pytest.raises(trio.BusyResourceError):
                    await a.send_multipart([b"x"])
                await b.send_multipart([b"done"])  # lets the first receiver finish

    trio.run(main)


def test_close_wakes_a_waiting_task():
    async def main():
        a_raw, b_raw = _pair(zmq.PAIR, zmq.PAIR)
        a = TrioSocket(a_raw)
        errors = []

        async def waiter():
            try:
                await a.recv_multipart()
            except trio.ClosedResourceError as exc:
                errors.append(exc)

        with trio.fail_after(HANG_GUARD):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                a.close()
        assert len(errors) == 1
        assert a_raw.closed
        with pytest.raises(trio.ClosedResourceError):
            await a.recv_multipart()
        with pytest.raises(trio.ClosedResourceError):
            a.send_multipart_nowait([b"x"])
        a.close()  # idempotent
        b_raw.close(0)

    trio.run(main)


def test_cancelled_receive_loses_nothing():
    async def main():
        a_raw, b_raw = _pair(zmq.PAIR, zmq.PAIR)
        with TrioSocket(a_raw) as a, TrioSocket(b_raw) as b, trio.fail_after(HANG_GUARD):
            with trio.CancelScope() as scope:
                scope.cancel()
                await a.recv_multipart()  # a checkpoint: cancelled before receiving
            assert a.recv_batch_nowait(10) == []
            with pytest.raises(trio.WouldBlock):
                a.recv_multipart_nowait()
            await b.send_multipart([b"one"])
            assert await a.recv_multipart(copy=True) == [b"one"]

    trio.run(main)


def test_readiness_seen_elsewhere_does_not_hang_the_next_wait():
    # Reading EVENTS (or any op) consumes the FD's edge: a later wait must check EVENTS
    # first instead of waiting for an edge that already passed.
    push_raw, pull = _pair(zmq.PUSH, zmq.PULL, hwm=2)

    async def main():
        with TrioSocket(push_raw) as push, trio.fail_after(HANG_GUARD):
            sent = 0
            with pytest.raises(trio.WouldBlock):
                while sent < 10_000:
                    push.send_multipart_nowait([b"z" * 65536])
                    sent += 1
            for _ in range(sent):
                pull.recv_multipart()
            while not push.socket.getsockopt(zmq.EVENTS) & zmq.POLLOUT:
                await trio.sleep(0.01)
            assert await push.wait_events(zmq.POLLOUT | zmq.POLLIN) == zmq.POLLOUT
            await push.send_multipart([b"after"])
            assert pull.recv_multipart() == [b"after"]

    try:
        trio.run(main)
    finally:
        pull.close(0)


def test_wait_events_reports_readiness():
    async def main():
        a_raw, b_raw = _pair(zmq.PAIR, zmq.PAIR)
        with TrioSocket(a_raw) as a, TrioSocket(b_raw) as b, trio.fail_after(HANG_GUARD):
            await b.send_multipart([b"hello"])
            assert await a.wait_events(zmq.POLLIN) == zmq.POLLIN
            assert a.socket.getsockopt(zmq.EVENTS) & zmq.POLLIN  # consumes the edge
            assert await a.recv_multipart(copy=True) == [b"hello"]

    trio.run(main)


class Sign(msgspec.Struct, frozen=True, tag=True):
    job: str
    recipients: list[int]


class Stop(msgspec.Struct, frozen=True, tag=True):
    pass


def test_framing_round_trip_over_a_socket():
    codec: Codec[Sign | Stop] = Codec(Sign | Stop)

    async def main():
        a_raw, b_raw = _pair(zmq.PAIR, zmq.PAIR)
        with TrioSocket(a_raw) as a, TrioSocket(b_raw) as b, trio.fail_after(HANG_GUARD):
            await a.send_multipart(encode(Sign("j1", [1, 2]), b"body-1", b"body-2"))
            await a.send_multipart(encode(Stop()))
            batch = await b.recv_batch(10)
            while len(batch) < 2:
                batch += await b.recv_batch(10)
            decoded = [codec.decode(frames) for frames in batch]
        msg, bodies = decoded[0]
        assert msg == Sign("j1", [1, 2])
        assert [bytes(f.buffer) for f in bodies] == [b"body-1", b"body-2"]
        assert decoded[1] == (Stop(), [])

    trio.run(main)
    with pytest.raises(FramingError, match="bad message header"):
        codec.decode([msgspec.msgpack.encode({"type": "Nope"})])
    with pytest.raises(FramingError, match="empty"):
        codec.decode([])
