"""The webhooks actor against a real receiver on loopback, in one Trio loop with a real
spool: smaller batches after 413, refusals retried until the events expire, an
unreachable URL, events too old to post."""

from __future__ import annotations

import time
from pathlib import Path

import trio
from nodeutil import free_port

from salvo.actors.spool_writer import SpoolWriter
from salvo.actors.webhooks import Webhooks
from salvo.core.config import parse_config
from salvo.core.events import Event
from salvo.core.spool import Spool
from salvo.core.webhooks import Subscriptions
from salvo.testing.webhook_receiver import WebhookReceiver

SECRET = b"actor-test-secret-0123456789abcdef"


def run_hooks(tmp_path: Path, url: str, settings: str, events: list[Event], until, limit=30.0):
    """Queue ``events``, run the actor until ``until(hooks)``; its status at the end."""
    (tmp_path / "keys").mkdir(exist_ok=True)
    (tmp_path / "keys" / "h.secret").write_bytes(SECRET)
    toml = f"""
[node]
data_dir = "data"
[[webhooks]]
name = "h"
url = "{url}"
events = ["delivered", "alert"]
secret_file = "keys/h.secret"
retry_first = "100ms"
retry_max = "300ms"
timeout = "2s"
{settings}
"""
    config = parse_config(toml, base_dir=str(tmp_path))
    subs = Subscriptions.from_config(config.webhooks)
    spool = Spool.open(config.data_dir, webhooks=subs, map_size=1 << 20)
    try:
        assert spool.add_webhook_events(events) == len(events)

        async def main() -> list[dict]:
            writer = SpoolWriter(spool)
            hooks = Webhooks(config, spool, writer)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer.run)
                await nursery.start(hooks.run)
                with trio.fail_after(limit):
                    while not await trio.to_thread.run_sync(until, hooks):
                        await trio.sleep(0.05)
                status = await trio.to_thread.run_sync(hooks.status)
                nursery.cancel_scope.cancel()
            return status

        return trio.run(main)
    finally:
        spool.close()


def delivered(n: int, ts: float | None = None) -> list[Event]:
    now = time.time() if ts is None else ts
    return [
        Event(type="delivered", ts=now, job=f"j{i}", recipient=f"r{i}@x.example") for i in range(n)
    ]


def test_413_splits_batches_and_keeps_order(tmp_path: Path):
    with WebhookReceiver(secret=SECRET) as receiver:
        receiver.max_events = 3
        (status,) = run_hooks(
            tmp_path,
            receiver.url,
            "batch_max = 10\nbatch_wait = 0",
            delivered(20),
            lambda h: h.outbox.stats("h").pending == 0,
        )
        jobs = [e["job"] for e in receiver.events()]
    assert jobs == [f"j{i}" for i in range(20)]  # each once, in order
    assert all(len(b["events"]) <= 3 for b in receiver.batches)
    assert status["delivered"] == 20 and status["consecutive_failures"] == 0
    assert status["posts"]["4xx"] >= 1 and "413" in status["last_error"]


def test_4xx_is_retried_until_the_events_expire(tmp_path: Path):
    with WebhookReceiver(secret=SECRET) as receiver:
        receiver.mode = "400"
        (status,) = run_hooks(
            tmp_path,
            receiver.url,
            'expire_after = "1500ms"',
            delivered(5),
            lambda h: h.outbox.stats("h").expired == 5,
        )
        assert receiver.refused >= 2 and receiver.events() == []
    assert status["pending"] == 0 and status["delivered"] == 0 and status["expired"] == 5
    assert status["last_error"].startswith("HTTP 400") and status["consecutive_failures"] >= 2


def test_unreachable_receiver_keeps_the_events(tmp_path: Path):
    url = f"http://127.0.0.1:{free_port()}/nobody"
    (status,) = run_hooks(
        tmp_path,
        url,
        "",
        delivered(4),
        lambda h: h.hooks[0].failures >= 3,
    )
    assert status["pending"] == 4 and status["delivered"] == 0
    assert "ConnectError" in status["last_error"] and status["next_try"] is not None
    assert status["posts"]["error"] >= 3


def test_events_too_old_are_dropped_unposted(tmp_path: Path):
    with WebhookReceiver(secret=SECRET) as receiver:
        events = delivered(3, ts=time.time() - 10 * 86400)
        events.append(Event(type="alert", ts=time.time(), job="", text="fresh"))
        (status,) = run_hooks(
            tmp_path, receiver.url, "", events, lambda h: h.outbox.stats("h").pending == 0
        )
        assert [e["text"] for e in receiver.events()] == ["fresh"]
    assert status["expired"] == 3 and status["delivered"] == 1
