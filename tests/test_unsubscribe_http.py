"""End to end: the one-click unsubscribe endpoint (RFC 8058) and the mailto form, against
a real node, with the List-Unsubscribe header read from the messages it delivered."""

from __future__ import annotations

import http.client
import re
import smtplib
from pathlib import Path

from nodeutil import AioSink, NodeProcess, NodeSetup, free_port, header, job, wait_for

from salvo.client import Producer

DOMAIN = "bounces.acme.example"
DELIVERY_BOUND = 90.0
ONE_CLICK = b"List-Unsubscribe=One-Click"
FORM = "application/x-www-form-urlencoded"


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


def _links(message: bytes) -> tuple[str, str]:
    """The URL path (/u/TOKEN) and the mailto address of a List-Unsubscribe header."""
    value = " ".join((header(message, "List-Unsubscribe") or "").split())
    url = re.search(r"<https://u\.acme\.example(/u/[A-Za-z0-9_-]+)>", value)
    mailto = re.search(r"<mailto:([^>]+)>", value)
    assert url and mailto, value
    return url.group(1), mailto.group(1)


def test_one_click_post_suppresses_get_changes_nothing_forged_is_404(tmp_path: Path):
    http_port, smtp_port = free_port(), free_port()
    extra = f"""
[feedback]
listen = "127.0.0.1:{smtp_port}"
domains = ["{DOMAIN}"]

[unsubscribe]
listen = "127.0.0.1:{http_port}"
base_url = "https://u.acme.example"

[traffic.news]
list_unsubscribe = true
"""
    rcpts = ["ann@example.org", "bob@example.org", "cy@example.org"]
    with AioSink("127.0.0.3") as sink:
        setup = NodeSetup(tmp_path / "node", {"example.org": sink.address}, extra=extra)
        node = NodeProcess(setup)
        try:
            node.start()
            with Producer(setup.endpoint, timeout=30, attempts=3) as producer:
                reply = producer.submit(job("u1", rcpts, traffic="news", campaign="spring"))
            assert reply.status == "accepted", reply
            wait_for(lambda: len(sink.snapshot()) >= len(rcpts), DELIVERY_BOUND, 0.1)
            links = {m.rcpts[0]: _links(m.content) for m in sink.snapshot()}
            path, _ = links["ann@example.org"]

            status, headers, page = _request(http_port, "GET", path)
            assert status == 200 and b'method="post"' in page and b"One-Click" in page
            assert "Set-Cookie" not in headers
            assert "clean" in _check(setup, "ann@example.org")  # a GET changes nothing

            # A token altered by one character, another path: 404, nothing changes.
            forged = path[:-1] + ("A" if path[-1] != "A" else "B")
            for method, where in (("POST", forged), ("GET", forged), ("GET", "/x")):
                status, _, _ = _request(http_port, method, where, ONE_CLICK, FORM)
                assert status == 404, (method, where)
            assert "clean" in _check(setup, "ann@example.org")

            status, headers, _ = _request(http_port, "POST", path, ONE_CLICK, FORM)
            assert status == 200 and "Location" not in headers and "Set-Cookie" not in headers
            # The 200 comes after the commit: the suppression is already in the store.
            assert "suppressed\tunsubscribe" in _check(setup, "ann@example.org")
            assert "clean" in _check(setup, "ann@example.org", tenant="other")
            status, _, _ = _request(http_port, "POST", path, b"x" * 100_000, FORM)
            assert status == 413

            # The mailto form through the inbound listener, from any sender.
            _, mailto = links["cy@example.org"]
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
                client.sendmail(
                    "someone@else.example", [mailto], b"Subject: unsubscribe\r\n\r\nplease\r\n"
                )
            wait_for(lambda: "suppressed" in _check(setup, "cy@example.org"), 30, 0.2)
            assert "suppressed\tunsubscribe" in _check(setup, "cy@example.org")
            assert "clean" in _check(setup, "bob@example.org")

            def unsubscribed() -> list[dict]:
                return [e for e in setup.events() if e["type"] == "unsubscribed"]

            wait_for(lambda: len(unsubscribed()) >= 2, 10)
            assert {(e["tenant"], e["recipient"]) for e in unsubscribed()} == {
                ("acme", "ann@example.org"),
                ("acme", "cy@example.org"),
            }
            # The mailto names the message: its event carries the job and campaign.
            [by_mail] = [e for e in unsubscribed() if e["recipient"] == "cy@example.org"]
            assert (by_mail["job"], by_mail["campaign"]) == ("u1", "spring")
            assert node.terminate() == 0
        finally:
            node.close()
