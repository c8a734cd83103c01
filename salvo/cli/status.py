"""``salvo status`` (one screen of tables, or ``--json``) and ``salvo top`` (the same,
refreshed live in the terminal), over a running node's ``GET /api/status``.

The node is found as ``salvo pause`` finds it (:func:`salvo.cli.control.endpoint`): with
``--config FILE`` or with ``--url URL`` and ``SALVO_TOKEN``. The text is
:func:`salvo.cli.status_view.render`'s. See docs/dashboard.md and docs/cli.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import locale
import sys
import time
from collections.abc import Callable

from salvo.cli.control import ControlError, call, endpoint, node_arguments
from salvo.cli.status_view import clean, render

TOP_INTERVAL = 2.0
TOP_TIMEOUT = 5.0  # a live view waits less for an answer than a one-shot command


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "status",
        help="a running node's queue, providers, KPIs, alerts and pauses",
        description="Print a running node's status (GET /api/status) as tables.",
    )
    node_arguments(p)
    p.add_argument("--json", action="store_true", help="print the node's JSON answer")
    p.set_defaults(func=_status)
    p = subparsers.add_parser(
        "top",
        help="a live view of a running node (q quits)",
        description=(
            "Show a running node's status, refreshed every 2 s, full screen (q or Ctrl-C "
            "quits). Not on a terminal, or with --once: print one screen and exit."
        ),
    )
    node_arguments(p)
    p.add_argument("--once", action="store_true", help="print one screen and exit")
    p.add_argument("--interval", type=float, default=TOP_INTERVAL, help="seconds between refreshes")
    p.set_defaults(func=_top)


def _fetcher(args: argparse.Namespace, timeout: float) -> Callable[[], dict]:
    host, port, token = endpoint(args)
    return lambda: call(host, port, token, "/api/status", timeout=timeout)


def _ascii_only() -> bool:
    encoding = (sys.stdout.encoding or locale.getpreferredencoding(False) or "").lower()
    return "utf" not in encoding


def _status(args: argparse.Namespace) -> int:
    try:
        status = _fetcher(args, TOP_TIMEOUT * 6)()
    except ControlError as exc:
        print(f"salvo status: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print("\n".join(render(status, ascii_only=_ascii_only())))
    return 0


def _top(args: argparse.Namespace) -> int:
    if not args.interval > 0:
        print("salvo top: error: --interval must be more than 0", file=sys.stderr)
        return 2
    try:
        fetch = _fetcher(args, TOP_TIMEOUT)
        status = fetch()
    except ControlError as exc:
        print(f"salvo top: error: {exc}", file=sys.stderr)
        return 1
    if args.once or not (sys.stdout.isatty() and sys.stdin.isatty()):
        print("\n".join(render(status, ascii_only=_ascii_only())))
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        _live(fetch, status, args.interval)
    return 0


def _live(fetch: Callable[[], dict], status: dict, interval: float) -> None:
    import curses

    locale.setlocale(locale.LC_ALL, "")  # curses draws UTF-8 only with the user's locale
    ascii_only = _ascii_only()

    def run(screen) -> None:
        with contextlib.suppress(curses.error):  # a terminal that cannot hide the cursor
            curses.curs_set(0)
        screen.timeout(int(interval * 1000))
        current, error = status, ""
        while True:
            _draw(screen, render(current, ascii_only=ascii_only), error)
            key = screen.getch()
            if key in (ord("q"), ord("Q")):
                return
            try:
                current, error = fetch(), ""
            except ControlError as exc:
                error = clean(exc, 200)  # keep the last screen; say why it is old

    curses.wrapper(run)


def _draw(screen, lines: list[str], error: str) -> None:
    import curses

    screen.erase()
    height, width = screen.getmaxyx()
    title = f"salvo top  {time.strftime('%H:%M:%S')}  refreshing, q quits"
    rows = [(title, curses.A_REVERSE)]
    if error:
        rows.append((f"not refreshed: {error}", curses.A_BOLD))
    rows += [(line, curses.A_BOLD if line[:1].isupper() else 0) for line in lines]
    for y, (text, attr) in enumerate(rows[: height - 1]):
        with contextlib.suppress(curses.error):  # the last cell of a small terminal
            screen.addnstr(y, 0, text.ljust(width) if y == 0 else text, width - 1, attr)
    screen.refresh()
