"""The signer process: renders and DKIM-signs messages on the native hot path.

CPU-bound work needs no event loop: a signer is a plain blocking loop over one DEALER
socket connected to the core process's work ROUTER. It announces itself with a
:class:`Hello` (index, pid, credits), then answers each :class:`SignBatch` with a
:class:`SignedBatch` plus one frame per signed message; every answer returns a credit.
A message that cannot be made (a missing variable, a value that would inject a header)
comes back with its error instead: that recipient bounces, the others go on.
"""

from __future__ import annotations

import contextlib
import cProfile
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import zmq

from salvo.actors.supervisor import report_started
from salvo.core.compose import Composer, KeySpec
from salvo.core.config import Config, load_config
from salvo.core.feedback.outbound import ListUnsubscribe
from salvo.core.messages import FromSigner, Hello, SignBatch, Signed, SignedBatch, Stop, ToSigner
from salvo.ext.errors import SalvoError

STOP_IDLE_MS = 2000  # after SIGTERM, exit once no batch came for this long
POLL_MS = 100
STOP_NOW = signal.SIGUSR1  # the supervisor's "the core is gone: stop now"
CREDITS = 2  # one batch being signed, one waiting: the signer never idles, little is queued


def keys_from_config(config: Config) -> dict[str, list[KeySpec]]:
    """The DKIM signatures to make per From domain, from ``[dkim]``."""
    return {
        domain.lower(): [
            KeySpec(k.selector, config.path(k.private_key), k.algorithm, k.canonicalization)
            for k in config.dkim_keys(domain)
        ]
        for domain in config.dkim
    }


def sign_batch(composer: Composer, batch: SignBatch) -> tuple[SignedBatch, list[bytes]]:
    """Compose every item of a batch; failures are reported per item."""
    results, bodies = [], []
    decode_vars = msgspec.msgpack.decode
    for item in batch.items:
        try:
            variables = decode_vars(item.vars) if item.vars else {}
            message = composer.compose(
                batch.job,
                batch.content,
                item.to,
                variables,
                item.message_id,
                seq=item.seq,
                idx=item.idx,
            )
        except (SalvoError, msgspec.DecodeError, UnicodeError) as exc:
            results.append(Signed(item.seq, item.idx, 0, f"{type(exc).__name__}: {exc}"))
            continue
        results.append(Signed(item.seq, item.idx, len(message)))
        bodies.append(message)
    return SignedBatch(batch.batch, results), bodies


@contextlib.contextmanager
def profiled(name: str) -> Iterator[None]:
    """Run the body under cProfile when ``SALVO_PROFILE=DIR`` is set (a diagnostic hook).

    The stats go to ``DIR/<name>-<pid>.prof`` when the body ends, also on SIGTERM (which
    then exits the process through ``SystemExit``). Read them with ``pstats`` or
    ``python -m salvo.bench.node --profile DIR``. Only the calling thread is profiled.
    """
    folder = os.environ.get("SALVO_PROFILE")
    if not folder:
        yield
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        profile.dump_stats(os.path.join(folder, f"{name}-{os.getpid()}.prof"))


def signer_main(config_path: str | None, endpoint: str, index: int) -> None:
    """Entry point of a signer process (started by the supervisor with spawn)."""
    with profiled(f"signer-{index}"):
        _signer_main(config_path, endpoint, index)


def _signer_main(config_path: str | None, endpoint: str, index: int) -> None:
    # SIGTERM to the whole process group (a service manager's stop, Ctrl-C's SIGINT is
    # ignored) finishes the work in hand first: the core is still draining and needs the
    # batches it gives out signed, even those a signer that just started has not received
    # yet, so the signer waits until none came for a while. The supervisor stops a signer
    # once the core has exited, with STOP_NOW: then there is no more work to wait for.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stopping = now = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    def stop_now(*_: object) -> None:
        nonlocal stopping, now
        stopping = now = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(STOP_NOW, stop_now)
    config = load_config(config_path)
    composer = Composer(
        keys_from_config(config),
        clock=time.time,
        list_unsubscribe=ListUnsubscribe.from_config(config),  # the secret, read once
        template_limits=(config.templates.max_loop_items, config.templates.max_output),
    )
    for domain in config.dkim:
        composer.signers_for(domain.lower())  # an unreadable key fails the start
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(endpoint)
    encode = msgspec.msgpack.Encoder().encode
    decode = msgspec.msgpack.Decoder(ToSigner).decode
    hello: FromSigner = Hello(index, os.getpid(), CREDITS)
    sock.send(encode(hello))
    report_started()
    idle = 0  # ms without a batch
    try:
        while not now:
            if not sock.poll(POLL_MS, zmq.POLLIN):
                idle += POLL_MS
                if stopping and idle >= STOP_IDLE_MS:
                    break  # asked to stop, and no work came for a while
                continue
            idle = 0
            frames = sock.recv_multipart(copy=False)
            match decode(frames[0].buffer):
                case Stop():
                    break
                case SignBatch() as batch:
                    answer, bodies = sign_batch(composer, batch)
                    sock.send_multipart([encode(answer), *bodies], copy=False)
    finally:
        sock.close()
        context.term()
