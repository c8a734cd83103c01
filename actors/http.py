"""A minimal HTTP/1.1 server for the core process (Trio + h11) and its routing table.

One request per connection (``Connection: close``), bounded: the request head at
``MAX_HEAD`` bytes, the body at the route's ``max_body``, the whole request within
``request_timeout`` from its first byte, at most ``max_connections`` at once (the next
gets 503). TLS is the operator's proxy's (docs/feedback.md). Handlers are thin: they get
a :class:`Request` and return a :class:`Response`; the logic is in ``salvo.core``.

Routes are ``Route(methods, pattern, handler)`` with a regular expression matched
against the whole path (its groups are passed to the handler as ``request.params``);
more routes (``/metrics``, an admin API) are added to the table given to the server.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import h11
import trio

from salvo.core.errors import StartupError

log = logging.getLogger("salvo.http")

MAX_HEAD = 16 * 1024
RECV_SIZE = 16 * 1024
SERVER = b"salvo"


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    params: tuple[str, ...] = ()
    peer: str = ""


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    handler: Handler
    max_body: int = 8 * 1024

    @classmethod
    def of(cls, methods: str, pattern: str, handler: Handler, max_body: int = 8 * 1024) -> Route:
        return cls(frozenset(methods.split()), re.compile(pattern), handler, max_body)


def request_head(event: h11.Request) -> tuple[str, str, str, dict[str, str]]:
    """``(method, path, query, headers)`` of a request h11 parsed: header names lowercase,
    values as latin-1 text (h11 has checked their bytes)."""
    target = event.target.decode("ascii", "replace")
    path, _, query = target.partition("?")
    method = event.method.decode("ascii", "replace").upper()
    headers = {k.decode("ascii", "replace").lower(): v.decode("latin-1") for k, v in event.headers}
    return method, path, query, headers


def text_response(status: int, text: str) -> Response:
    return Response(status, (text + "\n").encode())


async def listen_tcp(host: str, port: int, what: str) -> list[trio.SocketListener]:
    """Trio's listeners on host:port; a failure is a start-up failure naming ``what``."""
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise StartupError(f"{what}: cannot listen on {host}:{port}: {exc.strerror}") from exc


class HTTPServer:
    """Serves ``routes`` on ``host:port``; run :meth:`run` with ``nursery.start``."""

    def __init__(
        self,
        host: str,
        port: int,
        routes: Sequence[Route],
        *,
        request_timeout: float = 10.0,
        max_connections: int = 200,
    ) -> None:
        self.host = host
        self.port = port
        self.routes = list(routes)
        self.request_timeout = request_timeout
        self._slots = trio.Semaphore(max_connections)
        self.bound_port = 0

    async def run(self, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await listen_tcp(self.host, self.port, "http")
        self.bound_port = listeners[0].socket.getsockname()[1]
        task_status.started()
        log.info("http on %s:%d", self.host, self.bound_port)
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, stream: trio.SocketStream) -> None:
        try:
            peer = "{}:{}".format(*stream.socket.getpeername()[:2])
        except OSError:
            peer = "?"
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            if self._slots.value == 0:
                with trio.move_on_after(5):
                    await self._send(stream, conn, text_response(503, "busy, try again"))
                return
            async with self._slots:
                response = None
                with trio.move_on_after(self.request_timeout):
                    response = await self._one(stream, conn, peer)
                if response is None:
                    response = text_response(408, "request timeout")
                if response.status:
                    await self._send(stream, conn, response)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("http client %s: %s", peer, exc)
        except h11.ProtocolError as exc:
            log.debug("http client %s: %s", peer, exc)
        finally:
            with trio.move_on_after(1) as scope:
                scope.shield = True
                await stream.aclose()

    async def _next(self, stream: trio.SocketStream, conn: h11.Connection):
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await stream.receive_some(RECV_SIZE)
            conn.receive_data(data)  # b"" is the end of the stream

    async def _one(self, stream: trio.SocketStream, conn: h11.Connection, peer: str) -> Response:
        try:
            event = await self._next(stream, conn)
        except h11.RemoteProtocolError as exc:
            return text_response(exc.error_status_hint, "bad request")
        if not isinstance(event, h11.Request):
            return Response(0)  # the client left before a request
        method, path, query, headers = request_head(event)
        matches = self._match(path)
        if not matches:
            return text_response(404, "not found")
        route, params = next(((r, p) for r, p in matches if method in r.methods), (None, ()))
        if route is None:
            allowed = sorted({m for r, _ in matches for m in r.methods})
            return Response(405, b"method not allowed\n", headers=[("Allow", ", ".join(allowed))])
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > route.max_body:
            return text_response(413, "request body too large")
        body = bytearray()
        try:
            while True:
                item = await self._next(stream, conn)
                if isinstance(item, h11.Data):
                    body += item.data
                    if len(body) > route.max_body:
                        return text_response(413, "request body too large")
                elif isinstance(item, h11.EndOfMessage):
                    break
                else:
                    return text_response(400, "bad request")
        except h11.RemoteProtocolError as exc:
            return text_response(exc.error_status_hint, "bad request")
        request = Request(method, path, query, headers, bytes(body), params, peer)
        try:
            return await route.handler(request)
        except Exception:
            log.exception("http handler for %s failed", path)
            return text_response(500, "internal error")

    def _match(self, path: str) -> list[tuple[Route, tuple[str, ...]]]:
        """Every route whose pattern matches the whole path, with its groups."""
        out = []
        for route in self.routes:
            match = route.pattern.fullmatch(path)
            if match:
                out.append((route, match.groups()))
        return out

    async def _send(self, stream: trio.SocketStream, conn: h11.Connection, r: Response) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        headers = [
            ("Content-Type", r.content_type),
            ("Content-Length", str(len(r.body))),
            ("Connection", "close"),
            ("Cache-Control", "no-store"),
            ("Server", SERVER.decode()),
            *r.headers,
        ]
        data = conn.send(h11.Response(status_code=r.status, headers=headers))
        data += conn.send(h11.Data(data=r.body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        await stream.send_all(data)
