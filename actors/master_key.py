"""The spool master key: read from its file (made on first start) or a variable.

The key wraps the spool's per-tenant data keys (salvo.core.spool_keys); it never enters
the spool. The file holds the key as base64 text, mode 0600, made like the admin token
(written beside, then linked into place). See docs/spool.md, "Encryption at rest".
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from salvo.core import host
from salvo.core.config import Config
from salvo.core.errors import SpoolError, StartupError
from salvo.core.spool_crypto import parse_master_key

log = logging.getLogger("salvo.node")


def master_key_loader(config: Config, *, create: bool = False) -> Callable[[], bytes]:
    """A function giving the master key of ``[spool]``; called by the spool only when the
    data dir encrypts. ``create``: make the file when it is missing (``salvo node`` does,
    before any actor starts). Problems raise :class:`StartupError` (one line)."""

    def load() -> bytes:
        return load_master_key(config, create=create)

    return load


def load_master_key(config: Config, *, create: bool = False) -> bytes:
    """The master key of ``[spool]`` (see :func:`master_key_loader`)."""
    name = config.spool.master_key_env
    if name:
        value = os.environ.get(name, "")
        if not value.strip():
            raise StartupError(f"[spool] master_key_env: the variable {name} is not set")
        return _parsed(value, f"[spool] master_key_env: {name}")
    path = config.master_key_path
    if create:
        try:
            if host.create_secret_file(path, text=True):
                log.info("made the spool master key %s (keep a copy apart from the data)", path)
        except OSError as exc:
            raise StartupError(
                f"[spool] master_key_file {path}: cannot create it: {exc.strerror or exc}"
            ) from exc
    try:
        text = host.read_bytes(path)
    except OSError as exc:
        raise StartupError(
            f"[spool] master_key_file {path}: cannot read it: {exc.strerror or exc}"
        ) from exc
    return _parsed(text, f"[spool] master_key_file {path}")


def _parsed(text: str | bytes, where: str) -> bytes:
    try:
        return parse_master_key(text, where)
    except SpoolError as exc:
        raise StartupError(str(exc)) from None
