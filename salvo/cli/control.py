"""``salvo pause``, ``salvo resume``, ``salvo cancel``: over a running node's admin API.

The node is found with ``--config FILE`` (its ``[http] listen`` and ``token_file``; the
embedded default config when omitted) or with ``--url URL`` and the token in
``SALVO_TOKEN``. See docs/control.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import urllib.parse
from pathlib import Path

SCOPES = ("provider", "tenant", "campaign", "source")
TIMEOUT = 30.0


class ControlError(Exception):
    """A one-line reason the call did not happen."""


def register(subparsers: argparse._SubParsersAction) -> None:
    for command, scopes, what in (
        ("pause", SCOPES, "pause sending for a provider, tenant, campaign or source"),
        ("resume", SCOPES, "resume what a pause stopped"),
        ("cancel", ("campaign", "tenant"), "cancel every waiting recipient of a campaign"),
    ):
        p = subparsers.add_parser(command, help=what, description=what[0].upper() + what[1:] + ".")
        target = p.add_mutually_exclusive_group(required=True)
        for scope in scopes:
            metavar = "ADDR" if scope == "source" else scope.upper()[0]
            target.add_argument(f"--{scope}", metavar=metavar)
        if command == "pause":
            p.add_argument("--for", dest="for_", metavar="DURATION", help="e.g. 2h, 30m")
        p.add_argument("--reason", help="a note stored with it")
        p.add_argument("--config", type=Path, help="the node's TOML config (its [http])")
        p.add_argument("--url", help="the admin API, e.g. http://127.0.0.1:8080 (SALVO_TOKEN)")
        p.add_argument("--json", action="store_true", help="print the node's JSON answer")
        p.set_defaults(func=_run, scopes=scopes)


def endpoint(args: argparse.Namespace) -> tuple[str, int, str]:
    """(host, port, token) of the node's admin API."""
    if args.url:
        url = urllib.parse.urlsplit(args.url if "//" in args.url else f"http://{args.url}")
        if url.scheme != "http" or not url.hostname:
            raise ControlError(f"--url {args.url!r}: give http://HOST:PORT")
        token = os.environ.get("SALVO_TOKEN", "").strip()
        if not token:
            raise ControlError("--url needs the admin token in the SALVO_TOKEN variable")
        return url.hostname, url.port or 80, token
    from salvo.core.config import listen_address, load_config

    config = load_config(args.config)
    if not config.http.listen:
        where = args.config or "the default config"
        raise ControlError(f"{where} has no [http] listen: the node serves no admin API")
    host, port = listen_address(config.http.listen, key="[http] listen")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    path = config.http_token_path
    try:
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ControlError(f"cannot read the admin token in {path}: {exc}") from None
    return host, port, token


def call(host: str, port: int, token: str, path: str, body: dict | None) -> dict:
    """POST ``body`` to the admin API (GET when it is None); the JSON answer, or
    :class:`ControlError`."""
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        conn.request(
            "GET" if body is None else "POST",
            path,
            None if body is None else json.dumps(body).encode(),
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        raw = response.read()
    except OSError as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ControlError(f"the node at {host}:{port} is not reachable: {reason}") from None
    except http.client.HTTPException as exc:
        raise ControlError(f"the node at {host}:{port} answered badly: {exc!r}") from None
    finally:
        conn.close()
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = {"error": raw.decode("utf-8", "replace").strip()}
    if response.status == 401:
        raise ControlError(f"the node at {host}:{port} refused the admin token (401)")
    if response.status != 200:
        error = answer.get("error") if isinstance(answer, dict) else answer
        raise ControlError(f"the node refused ({response.status}): {error}")
    return answer


def _run(args: argparse.Namespace) -> int:
    scope = next(s for s in args.scopes if getattr(args, s) is not None)
    body: dict = {"scope": scope, "name": getattr(args, scope)}
    if getattr(args, "for_", None):
        body["for"] = args.for_
    if args.reason:
        body["reason"] = args.reason
    try:
        host, port, token = endpoint(args)
        answer = call(host, port, token, f"/api/{args.command}", body)
    except ControlError as exc:
        print(f"salvo {args.command}: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, sort_keys=True))
    elif args.command == "pause":
        until = answer["paused"]["until"]
        print(f"paused {scope} {body['name']}" + (f" until {until:.0f}" if until else ""))
    elif args.command == "resume":
        r = answer["resumed"]
        state = "resumed" if r["was_paused"] else "was not paused:"
        print(f"{state} {scope} {body['name']} ({r['due_again']} recipients due again)")
    else:
        print(f"cancelled {scope} {body['name']} ({answer['cancelled']['recipients']} recipients)")
    return 0
