"""A webhook receiver for tests and the bench: records every signed batch it accepts,
and fails on purpose when told to (docs/webhooks.md).

``mode``: ``"ok"`` (200), ``"503"`` (or any status as a string: that answer), ``"drop"``
(the connection is closed without an answer); ``max_events``: a POST with more events
gets 413. It checks each POST's signature with the
secret it is given and refuses a bad one with 401 (counted in ``bad_signatures``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["WebhookReceiver", "verify"]

MAX_BODY = 64 << 20


def verify(
    secret: bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float,
    tolerance: float = 300.0,
) -> bool:
    """A receiver's check of ``X-Salvo-Signature`` (the example of docs/webhooks.md)."""
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance:
        return False
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest("sha256=" + mac, signature)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._answer(413)
            return
        body = self.rfile.read(length)
        mode = owner.mode
        with owner.lock:
            owner.posts += 1
        if mode == "drop":
            with owner.lock:
                owner.refused += 1
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if mode != "ok":
            with owner.lock:
                owner.refused += 1
            self._answer(int(mode))
            return
        ok = owner.secret is None or verify(
            owner.secret,
            self.headers.get("X-Salvo-Timestamp", ""),
            body,
            self.headers.get("X-Salvo-Signature", ""),
            now=time.time(),
        )
        if not ok:
            with owner.lock:
                owner.bad_signatures += 1
            self._answer(401)
            return
        batch = json.loads(body)
        if owner.max_events is not None and len(batch["events"]) > owner.max_events:
            with owner.lock:
                owner.refused += 1
            self._answer(413)
            return
        with owner.lock:
            owner.batches.append(batch)
        self._answer(200)

    def _answer(self, status: int) -> None:
        text = b"{}" if status == 200 else b'{"error":"refused on purpose"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: WebhookReceiver


class WebhookReceiver:
    """The receiver on ``host``:``port`` (an ephemeral port by default), in a thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, secret: bytes | None = None):
        self.secret = secret
        self.mode = "ok"
        self.max_events: int | None = None  # more in one POST: 413
        self.lock = threading.Lock()
        self.batches: list[dict] = []
        self.posts = 0
        self.refused = 0
        self.bad_signatures = 0
        self._server = _Server((host, port), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/hook"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def events(self) -> list[dict]:
        """Every event of every accepted batch, in arrival order (duplicates included)."""
        with self.lock:
            return [e for b in self.batches for e in b["events"]]
