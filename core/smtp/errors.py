"""Errors of the SMTP client, split by whose fault they are (as h11 does)."""

from __future__ import annotations

from salvo.ext.errors import SalvoError

__all__ = ["LocalProtocolError", "SMTPProtocolError"]


class SMTPProtocolError(SalvoError):
    """The server broke the protocol (bad reply, reply out of turn, lost connection).

    The connection is unusable afterwards; what was pending is deferred (stream scope).
    """

    temporary = True


class LocalProtocolError(SalvoError, RuntimeError):
    """Our caller asked for something the protocol state does not allow: a bug in salvo."""
