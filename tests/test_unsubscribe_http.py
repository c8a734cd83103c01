"""End to end: the one-click unsubscribe endpoint (RFC 8058) and the mailto form, against
a real node. The token is made with the node's secret (keys/feedback.secret, created by
the node at its first start)."""

from __future__ import annotations

import http.client
import smtplib
from pathlib import Path

from nodeutil import NodeProcess, NodeSetup, free_port, wait_for

from salvo.core.feedback import tokens

DOMAIN = "bounces.acme.example"


def _request(port: int, method: str, path: str, body: bytes | None = None, ctype: str = ""):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": ctype} if ctype else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _check(setup: NodeSetup, address: str, tenant: str = "acme") -> str:
    data = str(setup.data_dir)
    return setup.cli("suppress", "--data", data, "check", "--tenant", tenant, address).stdout


def test_one_click_post_suppresses_get_changes_nothing_forged_is_404(tmp_path: Path):
    http_port, smtp_port = free_port(), free_port()
    extra = f"""
[feedback]
listen = "127.0.0.1:{smtp_port}"
domains = ["{DOMAIN}"]

[unsubscribe]
listen = "127.0.0.1:{http_port}"
base_url = "https://u.acme.example"
"""
    setup = NodeSetup(tmp_path / "node", {}, extra=extra)
    node = NodeProcess(setup)
    try:
        node.start()
        secret = (setup.root / "keys" / "feedback.secret").read_bytes()
        token = tokens.unsubscribe_token(secret, "acme", "ann@example.org")
        one_click = b"List-Unsubscribe=One-Click"
        form = "application/x-www-form-urlencoded"

        status, headers, page = _request(http_port, "GET", f"/u/{token}")
        assert status == 200 and b'method="post"' in page and b"One-Click" in page
        assert "Set-Cookie" not in headers
        assert "clean" in _check(setup, "ann@example.org")  # a GET changes nothing

        forged = tokens.unsubscribe_token(b"not the secret", "acme", "bob@example.org")
        for method, path in (("POST", f"/u/{forged}"), ("GET", f"/u/{forged}"), ("GET", "/x")):
            status, _, _ = _request(http_port, method, path, one_click, form)
            assert status == 404, (method, path)
        assert "clean" in _check(setup, "bob@example.org")

        status, headers, _ = _request(http_port, "POST", f"/u/{token}", one_click, form)
        assert status == 200 and "Location" not in headers and "Set-Cookie" not in headers
        # The 200 comes after the commit: the suppression is already in the store.
        assert "suppressed\tunsubscribe" in _check(setup, "ann@example.org")
        assert "clean" in _check(setup, "ann@example.org", tenant="other")
        status, _, _ = _request(http_port, "POST", f"/u/{token}", b"x" * 100_000, form)
        assert status == 413

        # The mailto form through the inbound listener, from any sender.
        mailto = tokens.unsubscribe_token(secret, "acme", "cy@example.org")
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            client.sendmail(
                "someone@else.example",
                [f"u-{mailto}@{DOMAIN}"],
                b"Subject: unsubscribe\r\n\r\nplease\r\n",
            )
        wait_for(lambda: "suppressed" in _check(setup, "cy@example.org"), 30, 0.2)
        assert "suppressed\tunsubscribe" in _check(setup, "cy@example.org")
        wait_for(lambda: len([e for e in setup.events() if e["type"] == "unsubscribed"]) >= 2, 10)
        events = [e for e in setup.events() if e["type"] == "unsubscribed"]
        assert {(e["tenant"], e["recipient"]) for e in events} == {
            ("acme", "ann@example.org"),
            ("acme", "cy@example.org"),
        }
        assert node.terminate() == 0
    finally:
        node.close()
