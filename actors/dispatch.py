"""The dispatcher: hands sign batches to the signer processes, credit-based.

The core process binds a ROUTER; each signer connects a DEALER and says :class:`Hello`
with the number of batches it wants in flight (its credits). A batch goes only to a signer
with a free credit, so work never piles up in a dead or slow signer's pipe; each answer
returns the credit. A credit stands for a full batch (``ITEMS_PER_CREDIT`` recipients):
small batches (jobs of one recipient) share credits, so that a signer is not left idle
waiting for round trips to the core process while there is work.

The dispatcher remembers which batches each signer holds: when a signer with the same
index says Hello again (the supervisor restarted it), or a batch has been out for
``batch_timeout`` seconds, its batches go to the front of the queue again. A late answer
for a batch that was given to another signer is dropped, so every recipient is delivered
from one answer only.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import trio
import zmq

from salvo.actors.zmqtrio import TrioSocket
from salvo.core.messages import Content, FromSigner, Hello, SignBatch, SignedBatch, SignItem

log = logging.getLogger("salvo.dispatch")

# (seq, idx, message or None, error)
SignedCallback = Callable[[int, int, bytes | None, str], None]

ITEMS_PER_CREDIT = 32  # recipients a credit stands for: the scheduler's SIGN_BATCH


@dataclass
class _Signer:
    identity: bytes
    index: int
    pid: int
    credits: int
    out: dict[int, tuple[SignBatch, float]] = field(default_factory=dict)
    items: int = 0  # recipients in the batches out

    def has_room(self, batch: SignBatch) -> bool:
        """A free credit: nothing out, or room for the batch's recipients."""
        return not self.out or self.items + len(batch.items) <= self.credits * ITEMS_PER_CREDIT


class Dispatcher:
    """Sends :class:`SignBatch` work to signers and routes their answers to ``on_signed``."""

    def __init__(
        self, endpoint: str, on_signed: SignedCallback, *, context: zmq.Context,
        batch_timeout: float = 120.0,
    ) -> None:  # fmt: skip
        self.endpoint = endpoint
        self._on_signed = on_signed
        self._context = context
        self._batch_timeout = batch_timeout
        self._pending: collections.deque[SignBatch] = collections.deque()
        self._signers: dict[bytes, _Signer] = {}
        self._next_batch = 1
        self._wake: trio.CancelScope | None = None
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(FromSigner).decode

    @property
    def signers(self) -> int:
        """Signers that said Hello."""
        return len(self._signers)

    @property
    def backlog(self) -> int:
        """Batches waiting for a signer."""
        return len(self._pending)

    def submit(self, job: int, content: Content, items: list[SignItem]) -> None:
        """Queue one batch of one job's recipients for signing (never blocks)."""
        self._pending.append(SignBatch(self._next_batch, job, content, items))
        self._next_batch += 1
        self._poke()

    def withdraw(self, keep: Callable[[SignItem], bool]) -> list[SignItem]:
        """Take back the waiting recipients that ``keep`` refuses (a pause landed): they
        are never signed. Batches already at a signer are not recalled."""
        taken: list[SignItem] = []
        pending: collections.deque[SignBatch] = collections.deque()
        for batch in self._pending:
            kept = [item for item in batch.items if keep(item) or taken.append(item)]
            if len(kept) == len(batch.items):
                pending.append(batch)
            elif kept:
                pending.append(SignBatch(batch.batch, batch.job, batch.content, kept))
        self._pending = pending
        return taken

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.cancel()

    async def run(self) -> None:
        """Own the ROUTER socket: send what credits allow, take answers, until cancelled."""
        sock = self._context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.bind(self.endpoint)
        router = TrioSocket(sock)
        next_check = time.monotonic() + self._batch_timeout / 4
        try:
            while True:
                self._send_ready(router)
                if time.monotonic() >= next_check:
                    self._requeue_stale()
                    next_check = time.monotonic() + self._batch_timeout / 4
                frames = None
                with trio.move_on_after(self._batch_timeout / 4) as self._wake:
                    # Copied frames: a signed message is wanted as bytes, and a zmq.Frame
                    # per message would cost more than the copy.
                    frames = await router.recv_multipart(copy=True)
                self._wake = None
                if frames is None:  # woken by submit() or the timeout
                    continue
                self._handle(frames)
                for more in router.recv_batch_nowait(256, copy=True):
                    self._handle(more)
        finally:
            router.close()

    def _send_ready(self, router: TrioSocket) -> None:
        for signer in list(self._signers.values()):
            while self._pending and signer.has_room(self._pending[0]):
                batch = self._pending.popleft()
                try:
                    router.send_multipart_nowait([signer.identity, self._encode(batch)])
                except (zmq.ZMQError, trio.WouldBlock):
                    # Gone (ROUTER_MANDATORY: unroutable) or full: forget this signer.
                    self._pending.appendleft(batch)
                    self._drop(signer)
                    break
                signer.items += len(batch.items)
                signer.out[batch.batch] = (batch, time.monotonic())

    def _handle(self, frames: list[bytes]) -> None:
        identity, payload = frames[0], frames[1]
        try:
            message = self._decode(payload)
        except msgspec.DecodeError as exc:
            log.error("dropped a bad frame from a signer: %s", exc)
            return
        match message:
            case Hello(index=index, pid=pid, credits=credits):
                for other in list(self._signers.values()):
                    if other.index == index:  # restarted: its batches are lost with it
                        self._drop(other)
                self._signers[identity] = _Signer(identity, index, pid, credits)
                log.info("signer %d (pid %d) ready", index, pid)
            case SignedBatch(batch=number, items=items):
                signer = self._signers.get(identity)
                sent = signer.out.pop(number, None) if signer is not None else None
                if signer is None or sent is None:
                    return  # given to another signer meanwhile: that answer counts
                signer.items -= len(sent[0].items)
                bodies = iter(frames[2:])
                on_signed = self._on_signed
                for item in items:
                    on_signed(item.seq, item.idx, next(bodies) if item.size else None, item.error)

    def _drop(self, signer: _Signer) -> None:
        self._signers.pop(signer.identity, None)
        batches = [b for b, _ in sorted(signer.out.values(), key=lambda v: v[0].batch)]
        self._pending.extendleft(reversed(batches))
        if batches:
            log.warning(
                "signer %d: %d batches handed to another signer", signer.index, len(batches)
            )

    def _requeue_stale(self) -> None:
        limit = time.monotonic() - self._batch_timeout
        for signer in list(self._signers.values()):
            stale = [n for n, (_, sent) in signer.out.items() if sent < limit]
            if stale:
                log.warning(
                    "signer %d: no answer for %d batches; dropping it", signer.index, len(stale)
                )
                self._drop(signer)
