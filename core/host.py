"""The host, as ``core`` sees it: files, the host's name and CPUs, its clock and randomness.

``core`` is sans-IO (docs/architecture.md): its modules are given time (``now``) and
randomness, and they reach the host only through this module (and the LMDB environment,
:mod:`salvo.core.spool_env`). ``tests/test_layering.py`` holds every other module of
``core`` to that. The functions are thin on purpose: what they return is all ``core``
knows of the machine it runs on.
"""

from __future__ import annotations

import datetime
import os
import random
import secrets
import socket
import time
import zoneinfo
from pathlib import Path
from typing import IO

__all__ = [
    "absolute_path",
    "cpu_count",
    "create_secret_file",
    "fqdn",
    "is_file",
    "open_text",
    "random_bytes",
    "read_bytes",
    "read_text",
    "replace",
    "resolved",
    "rng",
    "wall_clock",
    "working_dir",
]

#: ``n`` random bytes from the operating system (Message-IDs; see ``Spool.open``).
random_bytes = os.urandom

#: The generator of the retry jitter when none is passed in (see salvo.core.policy).
rng = random.Random()

#: Seconds since the epoch (the Date of a raw message without one; see ``Composer``).
wall_clock = time.time


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """A file's content (config, DKIM keys, template attachments)."""
    return Path(path).read_bytes()


def read_text(path: str | os.PathLike[str], encoding: str = "utf-8") -> str:
    """A text file's content (template files and bodies, a password file)."""
    return Path(path).read_text(encoding=encoding)


def open_text(path: str | os.PathLike[str], mode: str = "r") -> IO[str]:
    """A UTF-8 text file opened for the csv module (no newline translation)."""
    return open(path, mode, newline="", encoding="utf-8")


def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Rename ``src`` over ``dst`` atomically (a file written next to its final name)."""
    os.replace(src, dst)


def is_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a regular file."""
    return Path(path).is_file()


def working_dir() -> Path:
    """The process's working directory."""
    return Path(os.getcwd())


def absolute_path(value: str | os.PathLike[str], base: str | os.PathLike[str] = "") -> Path:
    """``value`` with ``~`` expanded, made absolute against ``base`` (default: the working
    directory) when it is relative."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else Path(base or os.getcwd()) / p


def resolved(path: str | os.PathLike[str]) -> Path:
    """``path`` made absolute, symbolic links resolved."""
    return Path(path).resolve()


def time_zone(name: str) -> datetime.tzinfo:
    """The IANA time zone ``name`` (read from the system's tz database); ValueError when
    there is none of that name."""
    if name.upper() == "UTC":
        return datetime.UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def fqdn() -> str:
    """The host's fully qualified name (the default EHLO name)."""
    return socket.getfqdn()


def cpu_count() -> int:
    """The number of CPUs, at least 1."""
    return max(1, os.cpu_count() or 1)


def create_secret_file(path: str | os.PathLike[str], size: int = 32, *, text: bool = False) -> bool:
    """Make ``path`` hold ``size`` random bytes from the operating system (``text``: as a
    URL-safe token and a newline, for a bearer token), mode 0600, unless it exists; True when
    this call made it. The file appears whole or not at all (written beside it, then linked
    into place), and an existing one is never replaced."""
    path = Path(path)
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (secrets.token_urlsafe(size) + "\n").encode() if text else os.urandom(size))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True
