"""The layering rules of docs/architecture.md, checked on the source (AST, every file).

1. The dependency direction ``actors -> core -> ext``: ``core`` imports nothing of
   ``salvo.actors``; ``ext`` imports nothing of salvo outside ``salvo.ext``.
2. ``core`` is sans-IO: no module of ``core`` (sub-packages included) opens sockets,
   starts threads or processes, reads the clock or draws randomness, or touches files,
   except the named I/O modules below. Time and randomness are passed in (``now``,
   ``rng``, ``random_bytes``, ``clock``); imports under ``if TYPE_CHECKING:`` are types
   only and do not count.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The only modules of core that may touch the host, and what for.
IO_MODULES = {
    "core/spool_env.py": "the LMDB environment (lmdb, and a thread gate around map resizes)",
    "core/host.py": "files, the host's name and CPUs, the wall clock, OS randomness",
}

#: Top-level modules whose import is I/O, concurrency or randomness.
FORBIDDEN_IMPORTS = frozenset(
    {
        "_thread",
        "asyncio",
        "concurrent",
        "http",
        "lmdb",
        "multiprocessing",
        "random",
        "secrets",
        "selectors",
        "shutil",
        "smtplib",
        "socket",
        "socketserver",
        "ssl",
        "subprocess",
        "threading",
        "trio",
        "urllib",
        "uuid",
        "zmq",
    }
)

#: Calls (and references: a function handed on is used all the same) by dotted name.
FORBIDDEN_NAMES = frozenset(
    {
        # the clock
        "time.time",
        "time.time_ns",
        "time.monotonic",
        "time.monotonic_ns",
        "time.perf_counter",
        "time.perf_counter_ns",
        "time.sleep",
        "time.localtime",
        "time.ctime",
        "datetime.datetime.now",
        "datetime.datetime.utcnow",
        "datetime.datetime.today",
        "datetime.date.today",
        # randomness
        "os.urandom",
        "os.getrandom",
        # the host
        "socket.getfqdn",
        "socket.gethostname",
        "os.getcwd",
        "os.cpu_count",
        "os.getpid",
        "os.getenv",
        "os.environ",
        "pathlib.Path.cwd",
        "pathlib.Path.home",
        # files
        "open",
        "io.open",
        "os.open",
        "os.replace",
        "os.rename",
        "os.remove",
        "os.unlink",
        "os.listdir",
        "os.scandir",
        "os.mkdir",
        "os.makedirs",
        "os.stat",
    }
)

#: Methods of pathlib.Path that touch the file system (called on any object: the AST
#: does not know types, and no module of core has other methods of these names).
FORBIDDEN_METHODS = frozenset(
    {
        "read_text",
        "read_bytes",
        "write_text",
        "write_bytes",
        "iterdir",
        "glob",
        "rglob",
        "mkdir",
        "touch",
        "unlink",
        "is_file",
        "is_dir",
        "exists",
        "resolve",
        "expanduser",
    }
)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(tree: ast.AST):
    """Every node, except the bodies of ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _through_io_module(node: ast.AST, aliases: dict[str, str]) -> bool:
    """Whether ``node`` names one of the I/O modules (``host`` in ``host.read_bytes()``)."""
    name = _dotted(node)
    if name is None:
        return False
    head, _, rest = name.partition(".")
    full = aliases.get(head, head) + (f".{rest}" if rest else "")
    return any(full == "salvo." + m.removesuffix(".py").replace("/", ".") for m in IO_MODULES)


def io_violations(source: str, *, module: str = "salvo.core.x") -> list[str]:
    """What ``source`` (a module of core) does that core may not: one line per finding."""
    tree = ast.parse(source)
    found = []
    aliases: dict[str, str] = {}  # local name -> the dotted name it stands for
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
                if alias.name.split(".")[0] in FORBIDDEN_IMPORTS:
                    found.append(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the module's package
                package = module.split(".")[: -node.level]
                base = ".".join([*package, *([base] if base else [])])
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
            if base.split(".")[0] in FORBIDDEN_IMPORTS:
                found.append(f"line {node.lineno}: from {base} import ...")
            if base.startswith("salvo.actors"):
                found.append(f"line {node.lineno}: from {base} import ... (actors)")
    for node in _walk(tree):
        if isinstance(node, ast.Attribute | ast.Name) and isinstance(node.ctx, ast.Load):
            name = _dotted(node)
            if name is None:
                continue
            head, _, rest = name.partition(".")
            full = aliases.get(head, head) + (f".{rest}" if rest else "")
            if full in FORBIDDEN_NAMES:
                found.append(f"line {node.lineno}: {full}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in FORBIDDEN_METHODS
            and not _through_io_module(node.func.value, aliases)
        ):
            found.append(f"line {node.lineno}: .{node.func.attr}() (file system)")
    return sorted(set(found), key=lambda s: int(s.split()[1].rstrip(":")))


def _sources(folder: str, *suffixes: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*") if p.suffix in suffixes and p.is_file())


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = ["salvo", *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


CORE = _sources("core", ".py", ".pyx")
SANS_IO = [p for p in CORE if _rel(p) not in IO_MODULES]  # every file but the named ones


def test_every_file_of_core_is_checked() -> None:
    names = {_rel(p) for p in CORE}
    assert "core/smtp/client.py" in names  # sub-packages included
    assert set(IO_MODULES) <= names  # the named I/O modules exist
    assert len(SANS_IO) == len(CORE) - len(IO_MODULES) >= 25


@pytest.mark.parametrize("path", SANS_IO, ids=_rel)
def test_core_is_sans_io(path: Path) -> None:
    found = io_violations(path.read_text(encoding="utf-8"), module=_module_name(path))
    assert not found, (
        f"{_rel(path)} does I/O, reads the clock or draws randomness: {found}. Pass time and "
        f"randomness in, or go through one of {sorted(IO_MODULES)} (docs/architecture.md)."
    )


@pytest.mark.parametrize("path", sorted(IO_MODULES), ids=str)
def test_the_io_modules_import_nothing_of_actors(path: str) -> None:
    source = (ROOT / path).read_text(encoding="utf-8")
    found = [f for f in io_violations(source, module=_module_name(ROOT / path)) if "actors" in f]
    assert not found, found


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("import socket\ns = socket.socket()\n", ["import socket"]),
        ("import socket as s\nname = s.getfqdn()\n", ["import socket", "socket.getfqdn"]),
        ("import time\nnow = time.time()\n", ["time.time"]),
        ("from time import monotonic as m\nt = m()\n", ["time.monotonic"]),
        ("import datetime as dt\nt = dt.datetime.now(dt.UTC)\n", ["datetime.datetime.now"]),
        ("from datetime import datetime\nt = datetime.now()\n", ["datetime.datetime.now"]),
        ("import os\nsource = os.urandom\n", ["os.urandom"]),
        ("import threading\n", ["import threading"]),
        ("def f():\n    import trio\n", ["import trio"]),
        ("from concurrent.futures import ThreadPoolExecutor\n", ["from concurrent"]),
        ("import subprocess\n", ["import subprocess"]),
        ("data = open('x').read()\n", ["open"]),
        ("from pathlib import Path\ntext = Path('x').read_text()\n", [".read_text()"]),
        ("from salvo.actors.node import open_spool\n", ["(actors)"]),
        ("from ...actors import node\n", ["(actors)"]),
    ],
)
def test_the_checker_catches_a_violation(snippet: str, expected: list[str]) -> None:
    found = io_violations(textwrap.dedent(snippet), module="salvo.core.smtp.x")
    assert len(found) == len(expected), found
    for finding, part in zip(found, expected, strict=True):
        assert part in finding, found


@pytest.mark.parametrize(
    "snippet",
    [
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import random\n",
        "import time\nt = time.gmtime(0)\n",  # a pure function of the module
        "from salvo.core import host\nb = host.read_bytes('k.pem')\n",
        "def f(now: float, rng) -> float:\n    return now + rng.uniform(0, 1)\n",
        "class Spool:\n    @classmethod\n    def open(cls):\n        return cls.open()\n",
    ],
)
def test_the_checker_lets_pure_code_pass(snippet: str) -> None:
    assert io_violations(snippet) == []


@pytest.mark.parametrize("path", _sources("ext", ".py", ".pyx", ".pyi"), ids=_rel)
def test_ext_imports_nothing_of_salvo_but_ext(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".pyx":  # Cython: check the import lines
        lines = [
            ln.strip() for ln in text.splitlines() if ln.strip().startswith(("import ", "from "))
        ]
        bad = [ln for ln in lines if "salvo" in ln and "salvo.ext" not in ln]
    else:
        bad = [
            n.module
            for n in ast.walk(ast.parse(text))
            if isinstance(n, ast.ImportFrom)
            and n.module
            and n.module.startswith("salvo")
            and not n.module.startswith("salvo.ext")
        ]
        bad += [
            a.name
            for n in ast.walk(ast.parse(text))
            if isinstance(n, ast.Import)
            for a in n.names
            if a.name.startswith("salvo") and not a.name.startswith("salvo.ext")
        ]
    assert not bad, f"{_rel(path)} imports {bad}"
