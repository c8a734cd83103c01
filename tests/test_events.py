"""The events actor on real sockets and files: PUB frames, JSON lines, rotation."""

from __future__ import annotations

import socket

import trio
import zmq

from salvo.actors.events import EventLog, run_events
from salvo.actors.zmqtrio import context
from salvo.core.events import Event, decode_event

HANG_GUARD = 30  # seconds; only a guard against a hang, not a timing assertion


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _event(i: int, kind: str) -> Event:
    # The text holds a newline and a quote: the JSON escapes keep one event per line.
    return Event(
        type=kind,
        ts=1_700_000_000.0 + i,
        job=f"job-{i // 10}",
        recipient=f"user{i}@example.org",
        text=f'reply "{i}"\nsecond line',
    )


def test_events_reach_subscribers_and_the_log_in_order(tmp_path):
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    sent = [_event(i, "delivered" if i % 3 else "bounced") for i in range(300)]

    async def main() -> list[list[bytes]]:
        sub = context().socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVTIMEO, 5000)
        sub.subscribe(b"bounced")
        log = EventLog(tmp_path, max_size=1 << 20, keep=3)
        send, receive = trio.open_memory_channel(100)
        got: list[list[bytes]] = []
        with trio.fail_after(HANG_GUARD):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    lambda: run_events(receive, publish=endpoint, log=log, context=context())
                )
                sub.connect(endpoint)
                # A PUB socket drops what it sends before the subscription arrives: probe
                # until a probe comes through (bounded), then send the real events.
                for _ in range(100):
                    await send.send([_event(-1, "bounced")])
                    await trio.sleep(0.05)
                    if sub.poll(0):
                        break
                while sub.poll(0):
                    sub.recv_multipart()
                for i in range(0, len(sent), 7):
                    await send.send(sent[i : i + 7])
                for _ in range(sum(e.type == "bounced" for e in sent)):
                    got.append(await trio.to_thread.run_sync(sub.recv_multipart))
                await send.aclose()
        sub.close()
        return got

    got = trio.run(main)
    bounced = [e for e in sent if e.type == "bounced"]
    assert [frames[0] for frames in got] == [b"bounced"] * len(bounced)
    assert [decode_event(frames[1]) for frames in got] == bounced
    lines = (tmp_path / "events.jsonl").read_bytes().splitlines()
    logged = [decode_event(line) for line in lines]
    assert logged[-len(sent) :] == sent  # after the probes, every event, in order


def test_event_log_rotates_and_keeps_the_newest(tmp_path):
    log = EventLog(tmp_path, max_size=2000, keep=2)
    total = 0
    for n in range(40):
        data = b"".join(b'{"n":%d,"pad":"%s"}\n' % (n * 10 + k, b"x" * 40) for k in range(10))
        log.write(data)
        total += 10
    log.close()
    rotated = sorted(tmp_path.glob("events-*.jsonl"))
    assert len(rotated) == 2  # older rotations deleted
    assert (tmp_path / "events.jsonl").stat().st_size < 2000
    for path in [*rotated, tmp_path / "events.jsonl"]:
        for line in path.read_bytes().splitlines():
            assert line.startswith(b'{"n":') and line.endswith(b'"}')  # never cut mid-line
    newest = [
        int(line[5:].split(b",")[0])
        for line in (tmp_path / "events.jsonl").read_bytes().splitlines()
    ]
    assert newest == sorted(newest) and (not newest or newest[-1] == total - 1)
