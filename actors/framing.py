"""Multipart messages between actors: frame 0 is a typed msgspec Struct, the rest are bodies.

Each socket carries one tagged union of frozen Structs (``msgspec.Struct, tag=True``),
decoded by one reusable typed decoder, and dispatched with ``match``. Bodies (rendered
messages, templates) travel as extra frames so they are never copied into the header::

    class Sign(msgspec.Struct, frozen=True, tag=True): job: str
    class Stop(msgspec.Struct, frozen=True, tag=True): pass
    codec = Codec(Sign | Stop)
    await sock.send_multipart(encode(Sign("j1"), body))
    msg, bodies = codec.decode(await sock.recv_multipart())
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import msgspec

from salvo.ext.errors import SalvoError

__all__ = ["Codec", "FramingError", "encode"]

T = TypeVar("T")

_encoder = msgspec.msgpack.Encoder()


class FramingError(SalvoError, ValueError):
    """A multipart message whose first frame is not a valid message of the socket's union."""


def encode(msg: msgspec.Struct, *bodies: Any) -> list[Any]:
    """The frames of one message: the encoded Struct, then the bodies unchanged."""
    return [_encoder.encode(msg), *bodies]


class Codec(Generic[T]):
    """Decodes the messages of one socket: one typed decoder for its union type."""

    def __init__(self, union_type: Any) -> None:
        self._decoder = msgspec.msgpack.Decoder(union_type)

    def decode(self, frames: Sequence[Any]) -> tuple[T, list[Any]]:
        """Return ``(message, bodies)``; frames may be ``bytes`` or ``zmq.Frame``."""
        if not frames:
            raise FramingError("empty multipart message")
        head = frames[0]
        try:
            msg = self._decoder.decode(getattr(head, "buffer", head))
        except msgspec.DecodeError as exc:
            raise FramingError(f"bad message header frame: {exc}") from None
        return msg, list(frames[1:])
