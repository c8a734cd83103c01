"""Ingress quotas on a real node: a burst of 100,000 recipients for a tenant allowed
50,000 a day, submitted concurrently with salvo.client's Trio producer."""

from __future__ import annotations

import http.client
from collections import Counter
from pathlib import Path

import trio
from nodeutil import NodeSetup, free_port, job, running_node
from prometheus_client.parser import text_string_to_metric_families

from salvo.client import open_trio_producer

JOBS, SIZE, DAILY = 100, 1000, 50_000
OTHER_JOBS = 5


def _metrics(port: int) -> dict[tuple[str, tuple], float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _jobs(tenant: str, count: int) -> list[dict]:
    return [
        job(
            f"{tenant}-{n}",
            [f"r{n}-{i}@example.org" for i in range(SIZE)],
            tenant=tenant,
        )
        for n in range(count)
    ]


async def _burst(endpoint: str, jobs: list[dict]) -> dict[str, object]:
    replies = {}
    async with open_trio_producer(endpoint, timeout=60, attempts=1, max_in_flight=200) as p:
        async for reply in p.submit_many(jobs):
            replies[reply.id] = reply
    return replies


def test_a_burst_of_100000_recipients_stops_at_the_daily_quota(tmp_path: Path):
    http_port = free_port()
    dead = free_port()  # nothing listens: deliveries defer, the test is about ingress
    setup = NodeSetup(
        tmp_path / "node",
        {"example.org": f"127.0.0.1:{dead}"},
        extra=f"""
[http]
listen = "127.0.0.1:{http_port}"
metrics_open = true

[tenants.acme]
max_recipients_per_day = {DAILY}
""",
    )
    with running_node(setup) as node:
        jobs = _jobs("acme", JOBS) + _jobs("other", OTHER_JOBS)
        replies = trio.run(_burst, setup.endpoint, jobs)
        assert len(replies) == JOBS + OTHER_JOBS
        acme = [r for i, r in replies.items() if i.startswith("acme-")]
        by_status = Counter(r.status for r in acme)
        assert by_status == {"accepted": DAILY // SIZE, "rejected": JOBS - DAILY // SIZE}, by_status
        accepted_recipients = sum(len(r.accepted) for r in acme if r.status == "accepted")
        assert accepted_recipients == DAILY
        for r in acme:
            if r.status == "rejected":
                assert r.error.startswith("quota spent: tenant 'acme' has 0 of its 50000"), r.error
        # Another tenant, without a quota, is unaffected.
        others = [r for i, r in replies.items() if i.startswith("other-")]
        assert [r.status for r in others] == ["accepted"] * OTHER_JOBS

        # Logged, within the ingress's log budget (20 lines a minute).
        assert "rejected: quota spent: tenant 'acme'" in node.log()
        samples = _metrics(http_port)
        key = ("salvo_quota_refusals_total", (("kind", "day"), ("tenant", "acme")))
        assert samples.get(key) == JOBS - DAILY // SIZE
        assert not any(
            dict(labels).get("tenant") == "other"
            for name, labels in samples
            if name == "salvo_quota_refusals_total"
        )


def test_a_curve_producers_hourly_rate_holds_over_its_tenants(tmp_path: Path):
    from salvo.actors.keys import generate

    setup = NodeSetup(
        tmp_path / "node",
        {"example.org": f"127.0.0.1:{free_port()}"},
        ingress_extra='curve = true\ncurve_secret_key = "keys/node.key_secret"\n',
        extra="""
[producers.web]
public_key = "keys/web.key"
tenants = ["acme", "beta"]
max_recipients_per_hour = 3000

[producers.probe]
public_key = "keys/probe.key"
tenants = ["*"]
""",
    )
    keys = setup.root / "keys"
    for name in ("web", "probe"):
        generate(keys, name)
    setup.curve_probe = (keys / "node.key", keys / "probe.key_secret")

    async def burst(name: str, jobs: list[dict]) -> dict:
        replies = {}
        async with open_trio_producer(
            setup.endpoint,
            timeout=60,
            attempts=1,
            curve_server_key=keys / "node.key",
            curve_key=keys / f"{name}.key_secret",
        ) as p:
            async for reply in p.submit_many(jobs):
                replies[reply.id] = reply
        return replies

    with running_node(setup):
        jobs = _jobs("acme", 3) + _jobs("beta", 3)
        replies = trio.run(burst, "web", jobs)
        statuses = Counter(r.status for r in replies.values())
        assert statuses == {"accepted": 3, "retry": 3}, statuses
        for r in replies.values():
            if r.status == "retry":
                assert r.error.startswith("rate: producer 'web' sent 3000 of its 3000"), r.error
                assert "try again after" in r.error
        # Another producer, for the same tenants, is not held by web's rate.
        other = trio.run(burst, "probe", [job("p-1", ["a@example.org"], tenant="beta")])
        assert [r.status for r in other.values()] == ["accepted"]
