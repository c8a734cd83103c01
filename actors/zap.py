"""The ZAP handler: who may complete a CURVE handshake with the node's sockets.

libzmq asks the ZAP handler bound at ``inproc://zeromq.zap.01`` (one per ZeroMQ context)
about every CURVE handshake. This actor answers on a REP socket in a Trio task, with
pyzmq's :class:`zmq.auth.Authenticator` doing the ZAP protocol and the key checks: the
ingress socket's ZAP domain ``ingress`` allows the keys of ``[producers]``, the events
socket's domain ``events`` those of ``[subscribers]``. A connection without a key (NULL
mechanism) or with an unknown one fails its handshake and never gets a byte through.

A producer's connection gets the ``User-Id`` ``NAME:KEY`` (:func:`salvo.core.access.
user_id`), which ingress reads on every job. :meth:`Zap.load` swaps the key tables (on
SIGHUP): new handshakes see the new keys; open connections are kept, and ingress checks
their jobs against the new table.

It must be bound before any CURVE socket: without a ZAP handler libzmq would let every
CURVE client in, unless the socket sets ``ZAP_ENFORCE_DOMAIN`` (which :func:`curve_server`
does, so that a node without its handler fails closed).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field

import trio
import zmq
import zmq.auth
import zmq.utils.z85

from salvo.actors.keys import KeyFileError, read_public, read_secret
from salvo.actors.zmqtrio import TrioSocket
from salvo.core import access
from salvo.core.authlimit import LogBudget
from salvo.core.config import Config
from salvo.core.errors import StartupError

log = logging.getLogger("salvo.zap")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
INGRESS_DOMAIN = "ingress"
EVENTS_DOMAIN = "events"


@dataclass(frozen=True)
class KeyTables:
    """The keys read from the config: producers (with tenants) and subscribers."""

    producers: access.Producers = field(default_factory=access.Producers)
    subscribers: dict[str, str] = field(default_factory=dict)  # Z85 key -> name


def load_keys(config: Config) -> KeyTables:
    """Read every ``[producers]`` and ``[subscribers]`` key file; a
    :class:`~salvo.actors.keys.KeyFileError` names the entry."""
    producers = []
    for name, entry in config.producers.items():
        key = _read(config, "producers", name, entry.public_key)
        producers.append(access.Producer(name, key, frozenset(entry.tenants)))
    try:
        table = access.Producers(producers)
    except ValueError as exc:
        raise KeyFileError(f"[producers]: {exc}") from None
    subscribers = {}
    for name, entry in config.subscribers.items():
        subscribers[_read(config, "subscribers", name, entry.public_key)] = name
    return KeyTables(table, subscribers)


def _read(config: Config, section: str, name: str, path: str) -> str:
    try:
        return read_public(config.path(path)).decode("ascii")
    except KeyFileError as exc:
        raise KeyFileError(f"[{section}.{name}] public_key: {exc}") from None


def curve_server(sock: zmq.Socket, secret_file, domain: str) -> None:
    """Make ``sock`` a CURVE server with the node's key, authenticated in ``domain``."""
    _public, secret = read_secret(secret_file)
    sock.curve_secretkey = secret
    sock.curve_server = True
    sock.zap_domain = domain.encode()
    # Fail closed when no ZAP handler is bound (libzmq would otherwise accept any key).
    with contextlib.suppress(AttributeError, zmq.ZMQError):
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


class Zap(zmq.auth.Authenticator):
    """The node's ZAP handler (run :meth:`run` with ``nursery.start``)."""

    def __init__(self, context: zmq.Context, keys: KeyTables) -> None:
        super().__init__(context, log=logging.getLogger("salvo.zap.protocol"))
        self._budget = LogBudget(lines=20, period=60.0)
        self._address = ""
        self._scope = trio.CancelScope()
        self.keys = keys
        self.load(keys)

    def load(self, keys: KeyTables) -> None:
        """Use these keys for the handshakes from now on."""
        self.keys = keys
        self.certs = {
            INGRESS_DOMAIN: dict.fromkeys((k.encode() for k in keys.producers.by_key), True),
            EVENTS_DOMAIN: dict.fromkeys((k.encode() for k in keys.subscribers), True),
        }

    async def run(self, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        sock = self.context.socket(zmq.REP)
        sock.linger = 0
        try:
            sock.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            sock.close()
            raise StartupError(f"ZAP handler: cannot bind: {zmq.strerror(exc.errno)}") from exc
        self.zap_socket = sock
        with self._scope, TrioSocket(sock) as rep:
            task_status.started()
            while True:
                request = await rep.recv_multipart(copy=True)
                self._address = request[3].decode("utf-8", "replace") if len(request) > 3 else ""
                # The reply goes out on the REP socket right after its request: a send
                # that never waits.
                await self.handle_zap_message(request)

    def close(self) -> None:
        """Stop answering (after the CURVE sockets are closed)."""
        self._scope.cancel()

    def curve_user_id(self, client_public_key: bytes) -> str:
        key = zmq.utils.z85.encode(client_public_key).decode("ascii")
        name = self.keys.producers.name_for(key)
        if name is not None:
            return access.user_id(name, key)
        return self.keys.subscribers.get(key, key)

    async def _authenticate_curve(self, domain: str, client_key: bytes) -> tuple[bool, bytes]:
        allowed, reason = await super()._authenticate_curve(domain, client_key)
        if not allowed:
            show, held = self._budget.take(time.monotonic())
            if show:
                key = zmq.utils.z85.encode(client_key).decode("ascii")
                more = f" ({held} more refusals not logged)" if held else ""
                log.warning(
                    "CURVE handshake refused on %s from %s: %s %s%s",
                    domain or "?",
                    self._address or "?",
                    reason.decode(errors="replace").lower(),
                    key,
                    more,
                )
        return allowed, reason
