"""Messages between the node's processes: one tagged union per link, msgpack on the wire.

Link ``work`` (the core process's ROUTER <-> each signer's DEALER, credit-based):

- signer -> core: :class:`Hello` once at start (its index, pid and how many batches it
  wants in flight), then one :class:`SignedBatch` per batch, each returning one credit;
  the signed messages follow as extra frames, one per item whose ``size`` is not 0.
- core -> signer: :class:`SignBatch` (a job's content once, its recipients), :class:`Stop`.

Recipients are named by their spool key ``(seq, idx)``; ``batch`` numbers let the core
recognise and drop results for work it has already given to another signer.
"""

from __future__ import annotations

import msgspec


class Content(msgspec.Struct, array_like=True, frozen=True):
    """The part of a job that makes its message."""

    from_: str
    subject: str | None
    text: str | None
    html: str | None
    headers: dict[str, str]
    raw: str | None
    # Added later, with defaults (an older peer's array decodes): what the signer needs
    # for per-recipient headers of the job's traffic class (List-Unsubscribe).
    tenant: str = ""
    traffic: str = ""


class SignItem(msgspec.Struct, array_like=True, frozen=True):
    seq: int
    idx: int
    to: str
    vars: bytes  # msgpack map, as stored in the spool
    message_id: str


class SignBatch(msgspec.Struct, tag="sign", array_like=True, frozen=True):
    batch: int
    job: int  # the job's spool sequence number: the signer's template cache key
    content: Content
    items: list[SignItem]


class Stop(msgspec.Struct, tag="stop", array_like=True, frozen=True):
    pass


class Hello(msgspec.Struct, tag="hello", array_like=True, frozen=True):
    index: int
    pid: int
    credits: int


class Signed(msgspec.Struct, array_like=True, frozen=True):
    seq: int
    idx: int
    size: int  # bytes of the message frame; 0 when it failed
    error: str = ""  # why it could not be made (permanent for this recipient)


class SignedBatch(msgspec.Struct, tag="signed", array_like=True, frozen=True):
    batch: int
    items: list[Signed]


ToSigner = SignBatch | Stop
FromSigner = Hello | SignedBatch
