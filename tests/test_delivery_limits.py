"""Delivery within each provider's limits, against real sinks on 127.0.0.0/8.

The sinks count what they see (concurrent connections, messages per connection): the
limits are checked by counts, never by durations. Every wait is bounded.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import trio

from salvo.actors.delivery import Delivery, Message, Result, RouteSettings
from salvo.core.policy import MAX_REFUSED
from salvo.core.providers import ProviderTable
from salvo.core.shaping import Limits
from salvo.core.smtp import SMTPTimeouts
from salvo.testing.sink import SinkPolicy, SinkStats, serve_sink

SETTINGS = RouteSettings(
    ehlo="mta.salvo.test",
    tls="off",
    timeouts=SMTPTimeouts(connect=5, greeting=5, ehlo=5, mail=5, rcpt=5, data_end=5, quit=2),
)
BOUND = 30  # seconds: every test ends well within this


def message(i: int, rcpt: str, host: str, address: str, port: int) -> Message:
    data = f"Subject: {i}\r\nMessage-ID: <{i}.{rcpt}>\r\n\r\nhello\r\n".encode()
    return Message(i, 0, rcpt, "news@acme.example", data, [(host, address, port)])


def table(**providers: dict) -> ProviderTable:
    base = Limits(idle_timeout=0.3, connect_backoff=60)
    return ProviderTable.build(providers, base, builtin={})


async def collect(receive: trio.MemoryReceiveChannel[Result], n: int) -> list[Result]:
    results = []
    with trio.fail_after(BOUND):
        while len(results) < n:
            results.append(await receive.receive())
    return results


async def start_sink(nursery, address: str, stats: SinkStats, policy=None) -> int:
    return await nursery.start(serve_sink, address, 0, stats, policy or SinkPolicy())


def test_connections_and_messages_per_connection_never_exceed_the_limits():
    trio.run(_test_connections_and_messages_per_connection_never_exceed_the_limits)


async def _test_connections_and_messages_per_connection_never_exceed_the_limits():
    stats = SinkStats()
    send, receive = trio.open_memory_channel(math.inf)
    providers = table(
        hoster={"mx": ["*.hoster.test"], "max_connections": 3, "max_messages_per_connection": 4}
    )
    delivery = Delivery(send, providers=providers)
    async with trio.open_nursery() as nursery:
        port = await start_sink(nursery, "127.0.0.2", stats)
        await nursery.start(delivery.run)
        provider = providers.classify(["mx1.hoster.test"])
        assert provider == "hoster"
        for i in range(50):
            m = message(i, f"u{i}@a.test", "mx1.hoster.test", "127.0.0.2", port)
            delivery.send(m, "127.0.0.2", port, [], SETTINGS, provider=provider)
        results = await collect(receive, 50)
        nursery.cancel_scope.cancel()
    assert all(r.outcome.is_delivered for r in results), [r.outcome for r in results[:3]]
    assert stats.messages == 50
    assert stats.max_concurrent == 3  # the limit, reached and never exceeded
    assert max(stats.per_connection) <= 4
    assert sum(stats.per_connection) == 50


def test_two_domains_of_one_provider_share_its_limit():
    trio.run(_test_two_domains_of_one_provider_share_its_limit)


async def _test_two_domains_of_one_provider_share_its_limit():
    stats = SinkStats()
    send, receive = trio.open_memory_channel(math.inf)
    providers = table(hoster={"mx": ["*.hoster.test"], "max_connections": 2})
    delivery = Delivery(send, providers=providers)
    async with trio.open_nursery() as nursery:
        # Two MX hosts (one per domain), one server behind both, one provider.
        port = await start_sink(nursery, "127.0.0.3", stats)
        await nursery.start(delivery.run)
        for i in range(40):
            domain, mx = ("a.test", "mx-a.hoster.test") if i % 2 else ("b.test", "mx-b.hoster.test")
            provider = providers.classify([mx])
            m = message(i, f"u{i}@{domain}", mx, "127.0.0.3", port)
            delivery.send(m, "127.0.0.3", port, [], SETTINGS, provider=provider)
        results = await collect(receive, 40)
        nursery.cancel_scope.cancel()
    assert all(r.outcome.is_delivered for r in results)
    assert stats.max_concurrent == 2  # not 2 per domain
    assert len(delivery.statistics()) == 1


def test_a_421_storm_slows_its_provider_and_not_the_others():
    trio.run(_test_a_421_storm_slows_its_provider_and_not_the_others)


async def _test_a_421_storm_slows_its_provider_and_not_the_others():
    good, storm = SinkStats(), SinkStats()
    send, receive = trio.open_memory_channel(math.inf)
    providers = table(
        good={"mx": ["*.good.test"], "max_connections": 4, "max_messages_per_connection": 10},
        storm={"mx": ["*.storm.test"], "max_connections": 8},
    )
    delivery = Delivery(send, providers=providers)
    async with trio.open_nursery() as nursery:
        gport = await start_sink(nursery, "127.0.0.4", good)
        sport = await start_sink(nursery, "127.0.0.5", storm, SinkPolicy(busy_share=0.7, seed=1))
        await nursery.start(delivery.run)
        for i in range(80):
            if i % 2:
                m = message(i, f"u{i}@g.test", "mx.good.test", "127.0.0.4", gport)
                delivery.send(m, "127.0.0.4", gport, [], SETTINGS, provider="good")
            else:
                m = message(i, f"u{i}@s.test", "mx.storm.test", "127.0.0.5", sport)
                delivery.send(m, "127.0.0.5", sport, [], SETTINGS, provider="storm")
        results = await collect(receive, 80)
        stats = delivery.statistics()
        nursery.cancel_scope.cancel()
    by_host: dict[str, list[Result]] = {"127.0.0.4": [], "127.0.0.5": []}
    for r in results:
        by_host[r.message.hosts[0][1]].append(r)
    # The good provider: everything delivered, at its full concurrency.
    assert all(r.outcome.is_delivered for r in by_host["127.0.0.4"])
    assert len(by_host["127.0.0.4"]) == 40 and good.messages == 40
    assert good.max_concurrent == 4
    assert max(good.per_connection) <= 10
    assert stats["- good"]["max_connections"] == 4 and stats["- good"]["factor"] == 1.0
    # The storm: 421s seen, its concurrency halved (at least once), never above its limit.
    assert storm.busy > 0
    deferred = [r for r in by_host["127.0.0.5"] if r.outcome.is_temporary]
    assert deferred and all(r.outcome.code == 421 for r in deferred)
    assert stats["- storm"]["max_connections"] <= 4
    assert stats["- storm"]["factor"] <= 0.5
    assert storm.max_concurrent <= 8


def test_a_provider_refusing_every_connection_pauses_and_holds_no_budget():
    trio.run(_test_a_provider_refusing_every_connection_pauses_and_holds_no_budget)


async def _test_a_provider_refusing_every_connection_pauses_and_holds_no_budget():
    good, dead = SinkStats(), SinkStats()
    send, receive = trio.open_memory_channel(math.inf)
    providers = table(
        good={"mx": ["*.good.test"], "max_connections": 3},
        dead={"mx": ["*.dead.test"], "max_connections": 3},
    )
    # Two connections for the whole node: the dead provider must not keep them.
    delivery = Delivery(send, providers=providers, max_connections=2)
    async with trio.open_nursery() as nursery:
        gport = await start_sink(nursery, "127.0.0.6", good)
        dport = await start_sink(nursery, "127.0.0.7", dead, SinkPolicy(throttle_share=1.0))
        await nursery.start(delivery.run)
        for i in range(30):
            m = message(i, f"u{i}@d.test", "mx.dead.test", "127.0.0.7", dport)
            delivery.send(m, "127.0.0.7", dport, [], SETTINGS, provider="dead")
        for i in range(30, 60):
            m = message(i, f"u{i}@g.test", "mx.good.test", "127.0.0.6", gport)
            delivery.send(m, "127.0.0.6", gport, [], SETTINGS, provider="good")
        first = await collect(receive, 60)
        # Sent while the dead provider is paused: deferred without any connection.
        before = dead.connections
        for i in range(60, 70):
            m = message(i, f"u{i}@d.test", "mx.dead.test", "127.0.0.7", dport)
            delivery.send(m, "127.0.0.7", dport, [], SETTINGS, provider="dead")
        later = await collect(receive, 10)
        stats = delivery.statistics()
        nursery.cancel_scope.cancel()
    good_results = [r for r in first if r.message.seq >= 30]
    dead_results = [r for r in first if r.message.seq < 30]
    assert all(r.outcome.is_delivered for r in good_results) and good.messages == 30
    assert all(r.outcome.is_temporary for r in dead_results)
    assert delivery.peak_connections == 2  # the node-wide cap, never exceeded
    assert good.max_concurrent == 2  # the good provider got the whole budget
    assert dead.connections <= 2  # the first failures, then a pause: no tight loop
    assert dead.connections == before
    assert all(r.outcome.is_temporary and "paused" in r.outcome.text for r in later)
    assert stats["- dead"]["paused_for"] > 0


def test_a_421_to_every_other_connection_is_not_a_dead_destination():
    trio.run(_test_a_421_to_every_other_connection_is_not_a_dead_destination)


async def _test_a_421_to_every_other_connection_is_not_a_dead_destination():
    stats = SinkStats()
    send, receive = trio.open_memory_channel(math.inf)
    # Connections stay open until the test ends (long idle timeout, no message limit), so
    # each refused one has working ones beside it.
    providers = table(alt={"mx": ["*.alt.test"], "max_connections": 8, "idle_timeout": 60})
    delivery = Delivery(send, providers=providers)
    async with trio.open_nursery() as nursery:
        port = await start_sink(nursery, "127.0.0.11", stats, SinkPolicy(throttle_every=2))
        await nursery.start(delivery.run)
        for i in range(40):
            m = message(i, f"u{i}@a.test", "mx.alt.test", "127.0.0.11", port)
            delivery.send(m, "127.0.0.11", port, [], SETTINGS, provider="alt")
        results = await collect(receive, 40)
        lane = delivery.statistics()["- alt"]
        nursery.cancel_scope.cancel()
    assert stats.throttled >= 1  # refusals happened...
    assert all(r.outcome.is_delivered for r in results), [r.outcome for r in results[:3]]
    assert stats.messages == 40 and stats.duplicates == 0  # ...and cost no deferral
    assert lane["paused_for"] == 0 and delivery.paused_for("alt") == 0
    assert lane["factor"] <= 0.5  # each 421 is still throttle feedback


def test_a_421_that_ends_a_session_sends_its_untried_messages_on_another_connection():
    trio.run(_test_a_421_that_ends_a_session_sends_its_untried_messages_on_another_connection)


async def _test_a_421_that_ends_a_session_sends_its_untried_messages_on_another_connection():
    stats = SinkStats()
    send, receive = trio.open_memory_channel(math.inf)
    # The sink takes 3 messages per connection, then answers 421 to MAIL; the node's
    # own limit is higher, so every full batch meets that 421.
    providers = table(lim={"mx": ["*.lim.test"], "max_connections": 2})
    delivery = Delivery(send, providers=providers)
    async with trio.open_nursery() as nursery:
        port = await start_sink(
            nursery, "127.0.0.14", stats, SinkPolicy(max_messages_per_connection=3)
        )
        await nursery.start(delivery.run)
        for i in range(30):
            m = message(i, f"u{i}@l.test", "mx.lim.test", "127.0.0.14", port)
            delivery.send(m, "127.0.0.14", port, [], SETTINGS, provider="lim")
        results = await collect(receive, 30)
        nursery.cancel_scope.cancel()
    failed = [r.outcome for r in results if not r.outcome.is_delivered]
    assert not failed, failed[:3]
    assert stats.messages == 30 and stats.duplicates == 0
    assert max(stats.per_connection) <= 3  # sessions ended by the sink's 421 went on
    assert stats.connections >= 10


def test_a_message_refused_again_and_again_is_deferred_alone():
    trio.run(_test_a_message_refused_again_and_again_is_deferred_alone)


async def _test_a_message_refused_again_and_again_is_deferred_alone():
    ok, refusing = SinkStats(), SinkStats()
    send, receive = trio.open_memory_channel(math.inf)
    providers = table(hoster={"mx": ["*.hoster.test"], "max_connections": 8, "idle_timeout": 60})
    delivery = Delivery(send, providers=providers)
    other = replace(SETTINGS, ehlo="other.salvo.test")  # a second route of the same lane
    async with trio.open_nursery() as nursery:
        kport = await start_sink(nursery, "127.0.0.12", ok)
        rport = await start_sink(nursery, "127.0.0.13", refusing, SinkPolicy(throttle_share=1.0))
        await nursery.start(delivery.run)
        first = message(0, "u0@a.test", "mx1.hoster.test", "127.0.0.12", kport)
        delivery.send(first, "127.0.0.12", kport, [], SETTINGS, provider="hoster")
        (delivered,) = await collect(receive, 1)  # its connection stays open, idle
        refused = message(1, "u1@b.test", "mx2.hoster.test", "127.0.0.13", rport)
        delivery.send(refused, "127.0.0.13", rport, [], other, provider="hoster")
        (deferred,) = await collect(receive, 1)
        lane = delivery.statistics()["- hoster"]
        nursery.cancel_scope.cancel()
    assert delivered.outcome.is_delivered
    assert deferred.outcome.is_temporary and deferred.outcome.code == 421
    assert refusing.connections == MAX_REFUSED == deferred.message.refused
    assert deferred.retry_at is None  # the lane works: the traffic class's schedule applies
    assert lane["paused_for"] == 0


def test_a_dead_destination_defers_its_queue_until_the_pause_ends():
    trio.run(_test_a_dead_destination_defers_its_queue_until_the_pause_ends)


async def _test_a_dead_destination_defers_its_queue_until_the_pause_ends():
    dead = SinkStats()
    send, receive = trio.open_memory_channel(math.inf)
    providers = table(dead={"mx": ["*.dead.test"], "max_connections": 3})  # pause: 60 s
    delivery = Delivery(send, providers=providers)
    spread = 6.0  # after_pause: up to a tenth of the pause
    async with trio.open_nursery() as nursery:
        dport = await start_sink(nursery, "127.0.0.14", dead, SinkPolicy(throttle_share=1.0))
        await nursery.start(delivery.run)
        before = time.time()
        for i in range(10):
            m = message(i, f"u{i}@d.test", "mx.dead.test", "127.0.0.14", dport)
            delivery.send(m, "127.0.0.14", dport, ["127.0.0.14"], SETTINGS, provider="dead")
        results = await collect(receive, 10)
        paused = delivery.paused_for("dead")
        connections = dead.connections
        # Sent while paused: deferred at once, with the same hint.
        m = message(10, "u10@d.test", "mx.dead.test", "127.0.0.14", dport)
        delivery.send(m, "127.0.0.14", dport, ["127.0.0.14"], SETTINGS, provider="dead")
        results += await collect(receive, 1)
        after = time.time()
        # A lane of another source is not paused: the provider is not paused as a whole.
        delivery.lane("127.0.0.15", "dead", SETTINGS)
        paused_elsewhere = delivery.paused_for("dead")
        nursery.cancel_scope.cancel()
    assert all(r.outcome.is_temporary for r in results)
    assert connections <= 3 and dead.connections == connections  # none while paused
    assert 0 < paused <= 60
    assert paused_elsewhere == 0 and delivery.paused_for("nobody") == 0
    for r in results:
        assert r.retry_at is not None
        assert before + 60 <= r.retry_at <= after + 60 + spread
    assert len({r.retry_at for r in results}) > 1  # spread, not one instant


def test_a_soft_failure_moves_to_the_next_mx_host():
    trio.run(_test_a_soft_failure_moves_to_the_next_mx_host)


async def _test_a_soft_failure_moves_to_the_next_mx_host():
    busy, backup = SinkStats(), SinkStats()
    send, receive = trio.open_memory_channel(math.inf)
    providers = table(hoster={"mx": ["*.hoster.test"], "max_connections": 1})
    delivery = Delivery(send, providers=providers)
    async with trio.open_nursery() as nursery:
        bport = await start_sink(nursery, "127.0.0.8", busy, SinkPolicy(throttle_share=1.0))
        kport = await start_sink(nursery, "127.0.0.9", backup)
        await nursery.start(delivery.run)
        hosts = [("mx1.hoster.test", "127.0.0.8", bport), ("mx2.hoster.test", "127.0.0.9", kport)]
        for i in range(5):
            m = message(i, f"u{i}@a.test", "", "", 0)
            m.hosts = list(hosts)
            delivery.send(m, "127.0.0.8", bport, [], SETTINGS, provider="hoster")
        results = await collect(receive, 5)
        nursery.cancel_scope.cancel()
    assert all(r.outcome.is_delivered for r in results)
    assert {r.host for r in results} == {"127.0.0.9"}
    assert busy.connections >= 1 and backup.messages == 5


def test_a_421_mid_session_moves_the_message_to_the_next_mx_host():
    trio.run(_test_a_421_mid_session_moves_the_message_to_the_next_mx_host)


async def _test_a_421_mid_session_moves_the_message_to_the_next_mx_host():
    busy, backup = SinkStats(), SinkStats()
    send, receive = trio.open_memory_channel(math.inf)
    providers = table(hoster={"mx": ["*.hoster.test"], "max_connections": 2})
    delivery = Delivery(send, providers=providers)
    async with trio.open_nursery() as nursery:
        # Slow replies: the 421 comes after the route's opener has ended (MAX_OPENER_WAIT).
        policy = SinkPolicy(busy_share=1.0, delay=0.4)
        bport = await start_sink(nursery, "127.0.0.16", busy, policy)
        kport = await start_sink(nursery, "127.0.0.17", backup)
        await nursery.start(delivery.run)
        m = message(0, "u0@a.test", "", "", 0)
        m.hosts = [
            ("mx1.hoster.test", "127.0.0.16", bport),
            ("mx2.hoster.test", "127.0.0.17", kport),
        ]
        delivery.send(m, "127.0.0.16", bport, [], SETTINGS, provider="hoster")
        (result,) = await collect(receive, 1)
        nursery.cancel_scope.cancel()
    assert busy.busy == 1
    assert result.outcome.is_delivered and result.host == "127.0.0.17"


def test_an_idle_connection_is_woken_for_work_queued_after_another_connected():
    trio.run(_test_an_idle_connection_is_woken_for_work_queued_after_another_connected)


async def _test_an_idle_connection_is_woken_for_work_queued_after_another_connected():
    fast, slow = SinkStats(), SinkStats()
    send, receive = trio.open_memory_channel(math.inf)
    # Idle connections would wait a minute: only a wake-up gets them the next message.
    providers = table(hoster={"mx": ["*.hoster.test"], "max_connections": 2, "idle_timeout": 60})
    delivery = Delivery(send, providers=providers)
    async with trio.open_nursery() as nursery:
        fport = await start_sink(nursery, "127.0.0.18", fast)
        # A slow greeting, and one message per connection (then 421 at MAIL).
        policy = SinkPolicy(delay=0.3, max_messages_per_connection=1)
        sport = await start_sink(nursery, "127.0.0.19", slow, policy)
        await nursery.start(delivery.run)
        to_fast = ("mx1.hoster.test", "127.0.0.18", fport)
        to_slow = ("mx2.hoster.test", "127.0.0.19", sport)
        # Two connections: the fast one delivers and goes idle while the slow one connects.
        for i, hosts in enumerate([[to_fast], [to_slow]]):
            m = message(i, f"u{i}@a.test", "", "", 0)
            m.hosts = hosts
            delivery.send(m, hosts[0][1], hosts[0][2], [], SETTINGS, provider="hoster")
        first = await collect(receive, 2)
        # The slow connection takes it, is refused (421, then closes) and queues it again
        # for its next host: the idle fast connection must take it.
        m = message(2, "u2@a.test", "", "", 0)
        m.hosts = [to_slow, to_fast]
        delivery.send(m, "127.0.0.19", sport, [], SETTINGS, provider="hoster")
        (last,) = await collect(receive, 1)
        nursery.cancel_scope.cancel()
    assert all(r.outcome.is_delivered for r in first)
    assert last.outcome.is_delivered and last.host == "127.0.0.18"
    assert fast.connections == 1  # the idle connection took it, no new one


def test_message_rate_waits_and_never_drops():
    trio.run(_test_message_rate_waits_and_never_drops)


async def _test_message_rate_waits_and_never_drops():
    stats = SinkStats()
    send, receive = trio.open_memory_channel(math.inf)
    providers = table(r={"mx": ["*.r.test"], "max_messages_per_second": 100})
    delivery = Delivery(send, providers=providers)
    async with trio.open_nursery() as nursery:
        port = await start_sink(nursery, "127.0.0.10", stats)
        await nursery.start(delivery.run)
        for i in range(30):
            m = message(i, f"u{i}@a.test", "mx.r.test", "127.0.0.10", port)
            delivery.send(m, "127.0.0.10", port, [], SETTINGS, provider="r")
        results = await collect(receive, 30)
        nursery.cancel_scope.cancel()
    assert all(r.outcome.is_delivered for r in results) and stats.messages == 30
    lane = delivery.statistics()["- r"]
    assert lane["messages_per_second"] == 100


def test_weighted_sources_round_robin():
    send, _receive = trio.open_memory_channel(math.inf)
    delivery = Delivery(send)
    picks = [delivery.pick_source(["a", "b"], [2, 1]) for _ in range(9)]
    assert picks.count("a") == 6 and picks.count("b") == 3
    assert "".join(picks[:3]) in ("aba", "aab", "baa")
    assert delivery.pick_source([]) is None
