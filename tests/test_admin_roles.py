"""Admin API token roles on a real node over real HTTP: a read token can GET but not
pause (403), an operate token can pause, the admin token ([http] token_file) can do
everything; wrong tokens get 401, then 429 with Retry-After past the limit, and each
failure is logged (within a budget); SIGHUP reloads the tokens. Every route of the admin
table states its role."""

from __future__ import annotations

import http.client
import json
import os
import signal

import pytest
from nodeutil import AioSink, NodeSetup, free_port, running_node, wait_for

from salvo.actors.admin import FAILURES_PER_MINUTE, Admin
from salvo.actors.metrics import Metrics
from salvo.core import access

BOUND = 60.0


def _call(port, method, path, token=None, body=b""):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        conn.request(method, path, body, headers)
        r = conn.getresponse()
        raw = r.read()
    finally:
        conn.close()
    return r.status, json.loads(raw) if raw.startswith(b"{") else raw.decode(), dict(r.getheaders())


@pytest.fixture(scope="module")
def roles_node(tmp_path_factory):
    root = tmp_path_factory.mktemp("roles")
    port = free_port()
    with AioSink("127.0.0.2") as sink:
        setup = NodeSetup(
            root / "node",
            {"example.org": sink.address},
            extra=f"""
[http]
listen = "127.0.0.1:{port}"
metrics_open = false
[http.tokens.dash]
file = "keys/dash.token"
role = "read"
[http.tokens.oncall]
file = "keys/oncall.token"
role = "operate"
""",
        )
        with running_node(setup) as node:
            keys = setup.root / "keys"
            tokens = {n: (keys / f"{n}.token").read_text().strip() for n in ("dash", "oncall")}
            tokens["admin"] = (keys / "http.token").read_text().strip()
            yield setup, node, port, tokens


PAUSE = json.dumps({"scope": "campaign", "name": "spring", "reason": "test"}).encode()


def test_a_read_token_reads_and_cannot_pause(roles_node):
    _, _, port, tokens = roles_node
    for path in ("/api/pauses", "/api/kpis", "/api/alerts", "/metrics"):
        status, _, _ = _call(port, "GET", path, tokens["dash"])
        assert status == 200, path
    status, body, _ = _call(port, "POST", "/api/pause", tokens["dash"], PAUSE)
    assert status == 403
    assert body == {"error": "token 'dash' has the role read; POST /api/pause needs operate"}
    assert _call(port, "GET", "/api/pauses", tokens["dash"])[1] == {"pauses": []}
    assert _call(port, "GET", "/api/nothing-here", tokens["dash"])[0] == 404


def test_operate_and_admin_tokens_can_pause_and_resume(roles_node):
    _, _, port, tokens = roles_node
    status, body, _ = _call(port, "POST", "/api/pause", tokens["oncall"], PAUSE)
    assert status == 200 and body["paused"]["name"] == "spring"
    status, body, _ = _call(port, "POST", "/api/resume", tokens["admin"], PAUSE)
    assert status == 200 and body["resumed"]["was_paused"] is True


def test_wrong_tokens_get_401_then_429_and_are_logged(roles_node):
    _, node, port, tokens = roles_node
    for i in range(FAILURES_PER_MINUTE):
        status, body, headers = _call(port, "GET", "/api/pauses", f"wrong-{i}")
        assert status == 401, (i, body)
        assert headers["WWW-Authenticate"] == 'Bearer realm="salvo"'
    status, body, headers = _call(port, "GET", "/api/pauses", "wrong-again")
    assert status == 429 and "too many failed authentications" in body["error"]
    assert 1 <= int(headers["Retry-After"]) <= 60
    # Refused before any token is compared: a good one from this address waits too.
    assert _call(port, "GET", "/api/pauses", tokens["admin"])[0] == 429
    assert _call(port, "GET", "/api/pauses")[0] == 429
    log = node.log()
    assert log.count("admin API: missing or wrong token from 127.0.0.1 (GET /api/pauses)") == 10
    assert "admin API: too many failed authentications from 127.0.0.1" in log


def test_sighup_reloads_the_tokens(roles_node):
    setup, node, port, _ = roles_node
    (setup.root / "keys" / "late.token").write_text("late-token-" + "x" * 20 + "\n")
    setup.extra += '[http.tokens.late]\nfile = "keys/late.token"\nrole = "operate"\n'
    setup.write()
    os.kill(node.pid, signal.SIGHUP)
    assert wait_for(lambda: "SIGHUP: reloaded 4 admin token(s)" in node.log(), BOUND), node.log()
    # The address is still limited from the test before: wait for it (bounded).
    status = wait_for(
        lambda: _call(port, "GET", "/api/pauses", "late-token-" + "x" * 20)[0] != 429, 90, 1.0
    )
    assert status
    assert _call(port, "GET", "/api/pauses", "late-token-" + "x" * 20)[0] == 200


def test_every_admin_route_states_its_role(tmp_path):
    admin = Admin("t" * 20, Metrics(), spool=None, metrics_open=False)
    for route in admin.routes():
        assert getattr(route.handler, "role", None) in access.ROLES, route.pattern.pattern
