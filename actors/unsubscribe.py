"""The one-click unsubscribe routes of the HTTP server (docs/feedback.md)."""

from __future__ import annotations

from salvo.actors.feedback import Feedback
from salvo.actors.http import Request, Response, Route, text_response
from salvo.core.feedback import unsubscribe as unsub
from salvo.core.feedback.tokens import read_unsubscribe_token

HTML = "text/html; charset=utf-8"


def unsubscribe_routes(feedback: Feedback) -> list[Route]:
    """``GET /u/TOKEN`` (a confirmation page; changes nothing) and ``POST /u/TOKEN``
    (suppresses the token's address for its tenant, then answers 200)."""

    def _read(request: Request) -> tuple[str, str] | None:
        return read_unsubscribe_token(feedback.secret, request.params[0])

    async def get(request: Request) -> Response:
        if _read(request) is None:
            return text_response(404, "not found")
        return Response(200, unsub.confirmation_page(request.path), HTML)

    async def post(request: Request) -> Response:
        found = _read(request)
        if found is None:
            return text_response(404, "not found")
        if not unsub.is_one_click(request.body, request.headers.get("content-type", "")):
            return text_response(400, "expected the body List-Unsubscribe=One-Click")
        tenant, address = found
        await feedback.unsubscribe(tenant, address, "one-click")
        return Response(200, unsub.done_page(), HTML)

    return [
        Route.of("GET", unsub.PATH_PATTERN, get),
        Route.of("POST", unsub.PATH_PATTERN, post),
    ]
