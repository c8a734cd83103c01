"""One-click unsubscribe (RFC 8058) over HTTP: the pure parts of the endpoint.

``POST /u/TOKEN`` with the form body ``List-Unsubscribe=One-Click`` suppresses the
token's (tenant, address); ``GET /u/TOKEN`` only shows a page with a button that makes
that POST (mail scanners fetch links: a GET must change nothing). A token that does not
read with the node's secret gets 404 and changes nothing.
"""

from __future__ import annotations

import html

__all__ = ["PATH_PATTERN", "confirmation_page", "done_page", "is_one_click"]

#: The route: ``/u/`` and a token (letters, digits, ``-`` and ``_``), bounded.
PATH_PATTERN = r"/u/([A-Za-z0-9_-]{1,1024})"
ONE_CLICK = ("List-Unsubscribe", "One-Click")


def _unquote_plus(text: str) -> str:
    out = bytearray()
    data = text.replace("+", " ").encode("latin-1", "replace")
    i = 0
    while i < len(data):
        c = data[i]
        if c == 0x25 and _hex(data[i + 1 : i + 3]):
            out.append(int(data[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(c)
            i += 1
    return out.decode("utf-8", "replace")


def _hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair)


def form_fields(body: bytes) -> list[tuple[str, str]]:
    """``application/x-www-form-urlencoded`` fields, in order."""
    text = body.decode("latin-1").strip()
    fields = []
    for part in text.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        fields.append((_unquote_plus(name), _unquote_plus(value)))
    return fields


def is_one_click(body: bytes, content_type: str = "") -> bool:
    """Whether a POST body is RFC 8058's ``List-Unsubscribe=One-Click`` (form-encoded,
    or ``multipart/form-data`` holding that field, as RFC 8058 section 3.1 allows)."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        return b'name="List-Unsubscribe"' in body and b"One-Click" in body
    return ONE_CLICK in form_fields(body)


def confirmation_page(path: str) -> bytes:
    """The page a GET shows: one button that POSTs the one-click body to ``path``."""
    action = html.escape(path, quote=True)
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        '<meta name="robots" content="noindex"><title>Unsubscribe</title></head>\n'
        "<body><p>Unsubscribe this address from these mails?</p>\n"
        f'<form method="post" action="{action}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form></body></html>\n'
    ).encode()


def done_page() -> bytes:
    return (
        b'<!doctype html>\n<html><head><meta charset="utf-8"><title>Unsubscribed</title>'
        b"</head>\n<body><p>You are unsubscribed.</p></body></html>\n"
    )
