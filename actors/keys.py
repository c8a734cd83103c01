"""CURVE key files, in the format of pyzmq's ``zmq.auth.create_certificates``.

``NAME.key`` holds a Z85 public key, ``NAME.key_secret`` the pair (mode 0600). They are
what ``salvo keys generate`` writes, what ``[producers]``, ``[subscribers]`` and
``[ingress] curve_secret_key`` name, and what ``salvo.client`` and ``salvo submit`` read.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import zmq
import zmq.auth
import zmq.utils.z85

from salvo.ext.errors import SalvoError

SECRET_SUFFIX = ".key_secret"
PUBLIC_SUFFIX = ".key"


class KeyFileError(SalvoError, ValueError):
    """A key file cannot be read or written; the message names the file."""


def public_path(secret: Path) -> Path:
    """``keys/node.key_secret`` -> ``keys/node.key``."""
    return secret.with_name(secret.name.removesuffix(SECRET_SUFFIX) + PUBLIC_SUFFIX)


def generate(directory: Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` and ``NAME.key_secret`` (0600) in ``directory``; never replaces
    a file: :class:`KeyFileError` when either exists. Returns (public, secret)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    public, secret = directory / f"{name}{PUBLIC_SUFFIX}", directory / f"{name}{SECRET_SUFFIX}"
    for path in (public, secret):
        if path.exists():
            raise KeyFileError(f"{path} exists; remove it first to make a new key")
    # Written in a private folder first, so that the secret is never readable by others,
    # then linked into place (both, or neither if one appeared meanwhile).
    work = Path(tempfile.mkdtemp(prefix=".keys-", dir=directory))
    try:
        made_public, made_secret = map(Path, zmq.auth.create_certificates(work, name))
        os.chmod(made_secret, 0o600)
        os.chmod(made_public, 0o644)
        os.link(made_secret, secret)
        try:
            os.link(made_public, public)
        except FileExistsError:
            secret.unlink()
            raise KeyFileError(f"{public} exists; remove it first to make a new key") from None
    except FileExistsError:
        raise KeyFileError(f"{secret} exists; remove it first to make a new key") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return public, secret


def ensure_pair(secret: Path) -> bool:
    """Make the key pair of ``secret`` (``*.key_secret``) if it is missing; True if made."""
    if secret.exists():
        return False
    generate(secret.parent, secret.name.removesuffix(SECRET_SUFFIX))
    return True


def read_public(path: str | os.PathLike) -> bytes:
    """The Z85 public key (40 bytes) of a ``.key`` or ``.key_secret`` file."""
    public, _ = _load(path)
    return public


def read_secret(path: str | os.PathLike) -> tuple[bytes, bytes]:
    """(public, secret), Z85, of a ``.key_secret`` file."""
    public, secret = _load(path)
    if secret is None:
        raise KeyFileError(f"{path}: holds no secret key (a .key_secret file is needed)")
    return public, secret


def _load(path: str | os.PathLike) -> tuple[bytes, bytes | None]:
    if not os.path.isfile(path):
        raise KeyFileError(f"{path}: no such key file")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: not a CURVE key file: {exc}") from None
    for key in (public, secret):
        if key is None:
            continue
        try:
            ok = len(key) == 40 and len(zmq.utils.z85.decode(key)) == 32
        except (ValueError, KeyError, TypeError, IndexError):
            ok = False
        if not ok:
            raise KeyFileError(f"{path}: not a CURVE key file (no 40-character Z85 key)")
    return public, secret


def set_client_keys(sock: zmq.Socket, server_key: str | os.PathLike, key: str | os.PathLike):
    """Make ``sock`` a CURVE client of the server whose public key is in ``server_key``,
    with the pair in ``key`` (a ``.key_secret`` file)."""
    public, secret = read_secret(key)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = read_public(server_key)
