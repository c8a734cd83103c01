"""Who may do what: CURVE producers and their tenants, admin token roles.

Pure lookups; the key files are read by :mod:`salvo.actors.zap` and the tokens by
:mod:`salvo.actors.admin`, which hand the results here (docs/security.md).

Producers. The ZAP handler gives each CURVE connection the ``User-Id``
``"NAME:KEY"`` (the producer's name from ``[producers.NAME]`` and its Z85 public key).
Ingress reads it from every job's frame and asks :meth:`Producers.refusal`. The key is
part of it so that a key replaced under the same name, or a producer removed, takes
effect for connections that are already open at the next job, not only at the next
handshake (ZeroMQ never authenticates an open connection again).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ANY_TENANT = "*"
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # producer, subscriber and token names

ROLES = ("read", "operate", "admin")  # each may do what the ones before it may


def user_id(name: str, key: str) -> str:
    """The ZAP ``User-Id`` of a producer's connection."""
    return f"{name}:{key}"


@dataclass(frozen=True)
class Producer:
    name: str
    key: str  # Z85 public key (40 characters)
    tenants: frozenset[str]

    def allows(self, tenant: str) -> bool:
        return ANY_TENANT in self.tenants or tenant in self.tenants


class Producers:
    """The producers allowed on the ingress socket, by key and by ``User-Id``."""

    def __init__(self, producers: list[Producer] = ()) -> None:
        self.by_key = {p.key: p for p in producers}
        self._by_user = {user_id(p.name, p.key): p for p in producers}
        if len(self.by_key) != len(producers):
            names = sorted(p.name for p in producers if self._key_count(p.key, producers) > 1)
            raise ValueError(f"producers {', '.join(names)} have the same public key")

    @staticmethod
    def _key_count(key: str, producers: list[Producer]) -> int:
        return sum(1 for p in producers if p.key == key)

    def __len__(self) -> int:
        return len(self.by_key)

    def name_for(self, key: str) -> str | None:
        """The name of the producer with this Z85 public key (None: unknown key)."""
        producer = self.by_key.get(key)
        return producer.name if producer is not None else None

    def refusal(self, user: str | None, tenant: str) -> str | None:
        """Why a job for ``tenant`` from the connection ``user`` is refused, or None."""
        producer = self._by_user.get(user) if user else None
        if producer is None:
            name = (user or "").partition(":")[0]
            if name:
                return f"producer {name!r}: its key is no longer configured on this node"
            return "this connection has no producer key"
        if not producer.allows(tenant):
            allowed = ", ".join(sorted(producer.tenants)) or "none"
            return (
                f"producer {producer.name!r} may not send for tenant {tenant!r} "
                f"(its tenants: {allowed})"
            )
        return None


def role_allows(have: str, need: str) -> bool:
    """Whether a token of role ``have`` may call a route that needs ``need``."""
    return ROLES.index(have) >= ROLES.index(need)
