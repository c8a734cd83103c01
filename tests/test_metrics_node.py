"""``[http]`` on a real node: /metrics (read with prometheus_client's parser) and /api/kpis
agree with what an aiosmtpd sink saw; the KPIs survive a restart; the token is enforced."""

from __future__ import annotations

import http.client
import json
import stat
from collections import Counter
from pathlib import Path

from nodeutil import AioSink, NodeSetup, final_states, free_port, job, running_node, wait_for
from prometheus_client.parser import text_string_to_metric_families

from salvo.client import Producer

GOOD, BOUNCED, DEFERRED = 24, 5, 3


def _get(port: int, path: str, token: str | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _samples(port: int) -> dict[tuple[str, tuple], float]:
    status, headers, body = _get(port, "/metrics")
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _sum(samples: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def _kpis(port: int, token: str, query: str) -> dict:
    status, headers, body = _get(port, f"/api/kpis?{query}", token)
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    return json.loads(body)


def test_metrics_and_kpis_agree_with_the_sink_and_survive_a_restart(tmp_path: Path):
    port = free_port()
    with AioSink("127.0.0.2") as sink:
        setup = NodeSetup(
            tmp_path / "node",
            {"example.org": sink.address},
            extra=f'\n[http]\nlisten = "127.0.0.1:{port}"\n',
        )
        rcpts = [f"ok{i}@example.org" for i in range(GOOD)]
        for i in range(BOUNCED):
            rcpts.append(f"gone{i}@example.org")
            sink.rcpt_replies[f"gone{i}@example.org"] = "550 5.1.1 no such user"
        for i in range(DEFERRED):
            rcpts.append(f"later{i}@example.org")
            sink.rcpt_replies[f"later{i}@example.org"] = "451 4.2.0 mailbox busy"
        total = len(rcpts)
        with running_node(setup) as node:
            token_path = setup.root / "keys" / "http.token"
            assert stat.S_IMODE(token_path.stat().st_mode) == 0o600
            token = token_path.read_text().strip()
            assert len(token) >= 32
            assert f"admin API on http://127.0.0.1:{port} (token in {token_path})" in node.log()
            assert token not in node.log()

            # Before any work: a wrong or missing token is 401 with a JSON error.
            for given in (None, "wrong", token + "x", ""):
                status, headers, body = _get(port, "/api/kpis?window=1h", given)
                assert status == 401, (given, body)
                assert "error" in json.loads(body)
                assert headers["WWW-Authenticate"].startswith("Bearer")
            for query, why in (
                ("window=1x", "window"),
                ("window=30d", "window"),
                ("windw=1h", "unknown parameter"),
            ):
                status, _, body = _get(port, f"/api/kpis?{query}", token)
                assert status == 400 and why in json.loads(body)["error"], (query, body)
            assert _get(port, "/api/nothing", token)[0] == 404

            halves = [rcpts[: total // 2], rcpts[total // 2 :]]
            with Producer(setup.endpoint, timeout=30, attempts=3) as producer:
                replies = list(
                    producer.submit_many([job(f"j{i}", r) for i, r in enumerate(halves)])
                )
            assert {r.status for r in replies} == {"accepted"}

            def settled() -> bool:
                states = final_states(setup.events())
                return len(states) == total and "accepted" not in states.values()

            assert wait_for(settled, 90, 0.1)
            delivered_at_sink = len(sink.snapshot())
            assert delivered_at_sink == GOOD
            states = Counter(final_states(setup.events()).values())
            assert states == {"delivered": GOOD, "bounced": BOUNCED, "deferred": DEFERRED}

            samples = _samples(port)
            name = "salvo_recipients_total"
            assert _sum(samples, name, tenant="acme", outcome="accepted") == total
            assert _sum(samples, name, tenant="acme", outcome="delivered") == delivered_at_sink
            assert _sum(samples, name, tenant="acme", outcome="bounced") == BOUNCED
            assert _sum(samples, name, tenant="acme", outcome="deferred") == DEFERRED
            replies_total = "salvo_smtp_replies_total"
            assert _sum(samples, replies_total, **{"class": "2xx"}) == GOOD
            assert _sum(samples, replies_total, **{"class": "5xx"}) == BOUNCED
            assert _sum(samples, replies_total, **{"class": "4xx"}) == DEFERRED
            assert _sum(samples, "salvo_delivery_seconds_count") == GOOD
            assert _sum(samples, "salvo_delivery_seconds_bucket", le="+Inf") == GOOD
            # The deferred ones wait (first retry in 5 minutes); nothing is in flight.
            assert _sum(samples, "salvo_queue_recipients", state="waiting") == DEFERRED
            assert _sum(samples, "salvo_queue_recipients", state="in-flight") == 0
            assert _sum(samples, "salvo_queue_oldest_seconds") >= 0
            assert ("salvo_connections", ()) not in samples  # labelled only

            before = {}
            for query in ("window=1h", "tenant=acme&campaign=e2e&window=15m", ""):
                k = _kpis(port, token, query)
                assert k["sent"] == GOOD + BOUNCED, k
                assert k["delivered"] == delivered_at_sink
                assert k["delivery_rate"] == GOOD / (GOOD + BOUNCED)
                assert k["hard_bounce_rate"] == BOUNCED / (GOOD + BOUNCED)
                assert k["deferral_rate"] == DEFERRED / total
                assert k["soft_bounce_rate"] == 0 and k["complaint_rate"] == 0
                assert 0 < k["latency_p50_s"] <= k["latency_p99_s"]
                assert k["counts"]["deferred"] == DEFERRED
                before[query] = k
            assert _kpis(port, token, "tenant=nobody")["sent"] == 0
            assert node.terminate() == 0

        with running_node(setup):
            after = _kpis(port, token, "window=1h")
            keep = {k: v for k, v in after.items() if k not in ("until",)}
            assert keep == {k: v for k, v in before["window=1h"].items() if k != "until"}
            # Counters start again with the process; the durable KPIs did not.
            assert _sum(_samples(port), "salvo_recipients_total", outcome="delivered") == 0


def test_one_server_for_admin_and_unsubscribe_counts_feedback_events(tmp_path: Path):
    """``[unsubscribe] listen`` = ``[http] listen``: one server; ``metrics_open = false``
    asks for the token; a complaint (ARF over SMTP) and a one-click unsubscribe land in
    the counters and the KPIs."""
    import re
    import smtplib

    from feedbackutil import arf
    from nodeutil import header

    port, smtp_port = free_port(), free_port()
    domain = "bounces.acme.example"
    extra = f"""
[http]
listen = "127.0.0.1:{port}"
metrics_open = false

[feedback]
listen = "127.0.0.1:{smtp_port}"
domains = ["{domain}"]

[unsubscribe]
listen = "127.0.0.1:{port}"
base_url = "https://u.acme.example"

[traffic.news]
list_unsubscribe = true
"""
    rcpts = ["ann@example.org", "bob@example.org", "cy@example.org", "dee@example.org"]
    with AioSink("127.0.0.3") as sink:
        setup = NodeSetup(tmp_path / "node", {"example.org": sink.address}, extra=extra)
        with running_node(setup):
            token = (setup.root / "keys" / "http.token").read_text().strip()
            assert _get(port, "/metrics")[0] == 401
            with Producer(setup.endpoint, timeout=30, attempts=3) as producer:
                reply = producer.submit(job("u1", rcpts, traffic="news", campaign="spring"))
            assert reply.status == "accepted", reply
            wait_for(lambda: len(sink.snapshot()) >= len(rcpts), 90, 0.1)
            by_rcpt = {m.rcpts[0]: m.content for m in sink.snapshot()}
            value = " ".join((header(by_rcpt["ann@example.org"], "List-Unsubscribe") or "").split())
            path = re.search(r"<https://u\.acme\.example(/u/[A-Za-z0-9_-]+)>", value).group(1)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request(
                "POST",
                path,
                body=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert conn.getresponse().status == 200
            conn.close()
            mid = header(by_rcpt["bob@example.org"], "Message-ID")
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
                client.sendmail("", [f"fbl@{domain}"], arf(mid, "redacted@example.org"))

            def counted() -> bool:
                k = _kpis(port, token, "tenant=acme")
                return k["counts"]["complained"] == 1 and k["counts"]["unsubscribed"] == 1

            assert wait_for(counted, 30, 0.2)
            k = _kpis(port, token, "tenant=acme&window=1d")
            assert (k["sent"], k["delivered"]) == (4, 4)
            assert k["complaint_rate"] == 0.25 and k["unsubscribe_rate"] == 0.25, k
            # The complaint names its message, hence the campaign; a one-click token names
            # the tenant and the address only (docs/metrics.md).
            k = _kpis(port, token, "tenant=acme&campaign=spring&window=1d")
            assert k["complaint_rate"] == 0.25 and k["unsubscribe_rate"] == 0.0, k
            status, _, body = _get(port, "/metrics", token)
            assert status == 200
            samples = {}
            for family in text_string_to_metric_families(body.decode()):
                for s in family.samples:
                    samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
            assert _sum(samples, "salvo_recipients_total", outcome="complained") == 1
            assert _sum(samples, "salvo_recipients_total", outcome="unsubscribed") == 1
            assert _sum(samples, "salvo_recipients_total", outcome="delivered") == 4
