"""A smart SMTP sink in Trio: answers like a provider would, and counts what it receives.

Used by the demo, the benchmarks and the tests as a destination. It speaks enough ESMTP
for a real client (EHLO with PIPELINING, 8BITMIME, SMTPUTF8, SIZE; MAIL, RCPT, DATA,
RSET, NOOP, QUIT), answers pipelined commands in order, and can behave like a busy
provider: a delay per reply, 421 throttling answers at connect (a share of connections,
or every n-th), a share of 451 deferrals and of 550 5.1.1 unknown users at RCPT, a
message limit per connection, and a rate it takes messages at (a token bucket over all
its connections: a MAIL above it gets 421 4.7.0 and the connection closes).
It counts messages and recipients, notices duplicate Message-IDs, and keeps a sample of
messages (for DKIM checks by the caller).
"""

from __future__ import annotations

import random
import re
import threading
import time
from dataclasses import dataclass, field

import trio

_MESSAGE_ID = re.compile(rb"^message-id:\s*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class SinkPolicy:
    """How the sink answers (shares are probabilities from 0 to 1)."""

    delay: float = 0.0  # seconds before each reply
    throttle_share: float = 0.0  # 421 at connect
    throttle_every: int = 0  # 421 at connect to every n-th connection (0: none)
    defer_share: float = 0.0  # 451 4.7.1 at RCPT
    bounce_share: float = 0.0  # 550 5.1.1 at RCPT
    max_messages_per_connection: int = 0  # 0: no limit; else 421 after that many
    seed: int | None = None
    busy_share: float = 0.0  # 421 4.7.0 at MAIL (a provider saying "too fast"), then close
    rate_limit: float = 0.0  # msg/s taken over all connections; above it 421 at MAIL (0: none)
    rate_burst: float = 0.0  # messages above the rate a burst may take (0: one second's)


@dataclass
class SinkStats:
    """What the sink has seen."""

    connections: int = 0
    messages: int = 0
    recipients: int = 0
    bytes: int = 0
    deferred: int = 0
    bounced: int = 0
    duplicates: int = 0
    message_ids: set[bytes] = field(default_factory=set)
    samples: list[bytes] = field(default_factory=list)
    sample_every: int = 0  # keep every n-th message (0: none)
    arrived: trio.Event = field(default_factory=trio.Event)
    expect: int = 0  # set `arrived` once this many messages came
    active: int = 0  # connections open now
    max_concurrent: int = 0  # the most connections open at once
    per_connection: list[int] = field(default_factory=list)  # messages of each closed one
    busy: int = 0  # 421 busy replies sent
    throttled: int = 0  # connections refused with 421 at connect
    arrivals: list[float] | None = None  # a list: each message's trio.current_time() goes in
    rate_limited: int = 0  # MAILs refused with 421 above rate_limit
    # Per second of wall time (int(time.time())): [messages taken, 421s above the rate].
    per_second: dict[int, list[int]] = field(default_factory=dict)

    def _second(self) -> list[int]:
        key = int(time.time())
        got = self.per_second.get(key)
        if got is None:
            got = self.per_second[key] = [0, 0]
        return got

    def _opened(self) -> None:
        self.active += 1
        self.max_concurrent = max(self.max_concurrent, self.active)

    def _closed(self, messages: int) -> None:
        self.active -= 1
        self.per_connection.append(messages)

    def _took(self, message: bytes, recipients: int) -> None:
        self.messages += 1
        self._second()[0] += 1
        self.recipients += recipients
        self.bytes += len(message)
        found = _MESSAGE_ID.search(message, 0, message.find(b"\r\n\r\n"))
        if found:
            mid = found.group(1)
            if mid in self.message_ids:
                self.duplicates += 1
            self.message_ids.add(mid)
        if self.sample_every and self.messages % self.sample_every == 0:
            self.samples.append(message)
        if self.expect and self.messages >= self.expect:
            self.arrived.set()
        if self.arrivals is not None:
            self.arrivals.append(trio.current_time())


class _Bucket:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst or rate
        self.tokens = self.burst
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class _Session:
    def __init__(
        self,
        stream: trio.SocketStream,
        policy: SinkPolicy,
        stats: SinkStats,
        rng,
        bucket: _Bucket | None = None,
    ):
        self.bucket = bucket
        self.stream = stream
        self.policy = policy
        self.stats = stats
        self.rng = rng
        self.buffer = bytearray()
        self.out: list[bytes] = []
        self.rcpts = 0
        self.sent = 0
        self.unacked: list[tuple[bytes, int]] = []

    async def _flush(self) -> None:
        if self.out:
            if self.policy.delay:
                await trio.sleep(self.policy.delay)
            await self.stream.send_all(b"".join(self.out))
            self.out.clear()
        # Counted once their 250 is on its way: a message whose 250 was never sent (the
        # sink stopped first) is one the client must send again, not one delivered.
        for message, recipients in self.unacked:
            self.stats._took(message, recipients)
        self.unacked.clear()

    async def _line(self) -> bytes | None:
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 2]
                return line
            if len(self.buffer) > 65536:
                return None
            await self._flush()  # the client waits for our replies before sending more
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.buffer += data

    async def _data(self) -> bytes | None:
        """The message up to the terminator, dot-unstuffed; None if the client left."""
        while True:
            if self.buffer.startswith(b".\r\n"):  # an empty message
                del self.buffer[:3]
                return b""
            end = self.buffer.find(b"\r\n.\r\n")
            if end >= 0:
                body = b"\r\n" + bytes(self.buffer[: end + 2])
                del self.buffer[: end + 5]
                return body.replace(b"\r\n..", b"\r\n.")[2:]
            await self._flush()
            data = await self.stream.receive_some(262144)
            if not data:
                return None
            self.buffer += data

    async def run(self) -> None:
        self.stats.connections += 1
        every = self.policy.throttle_every
        if (every and self.stats.connections % every == 0) or (
            self.policy.throttle_share and self.rng.random() < self.policy.throttle_share
        ):
            self.stats.throttled += 1
            self.out.append(b"421 4.7.0 Try again later, closing connection\r\n")
            await self._flush()
            return
        self.out.append(b"220 sink.test ESMTP salvo-sink\r\n")
        while True:
            line = await self._line()
            if line is None:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self.out.append(
                    b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
                    b"250-ENHANCEDSTATUSCODES\r\n250 SIZE 157286400\r\n"
                    if verb == b"EHLO"
                    else b"250 sink.test\r\n"
                )
            elif verb == b"MAIL":
                if self.policy.busy_share and self.rng.random() < self.policy.busy_share:
                    self.stats.busy += 1
                    self.out.append(b"421 4.7.0 Server busy, too many messages, slow down\r\n")
                    await self._flush()
                    return
                if self.bucket is not None and not self.bucket.take():
                    self.stats.rate_limited += 1
                    self.stats._second()[1] += 1
                    self.out.append(b"421 4.7.0 Too many messages, slow down\r\n")
                    await self._flush()
                    return
                limit = self.policy.max_messages_per_connection
                if limit and self.sent >= limit:
                    self.out.append(b"421 4.7.0 Too many messages on this connection\r\n")
                    await self._flush()
                    return
                self.rcpts = 0
                self.out.append(b"250 2.1.0 OK\r\n")
            elif verb == b"RCPT":
                roll = (
                    self.rng.random() if self.policy.defer_share or self.policy.bounce_share else 1
                )
                if roll < self.policy.bounce_share:
                    self.stats.bounced += 1
                    self.out.append(b"550 5.1.1 No such user here\r\n")
                elif roll < self.policy.bounce_share + self.policy.defer_share:
                    self.stats.deferred += 1
                    self.out.append(b"451 4.7.1 Rate limited, try again later\r\n")
                else:
                    self.rcpts += 1
                    self.out.append(b"250 2.1.5 OK\r\n")
            elif verb == b"DATA":
                if not self.rcpts:
                    self.out.append(b"554 5.5.1 No valid recipients\r\n")
                    continue
                self.out.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                message = await self._data()
                if message is None:
                    return
                self.sent += 1
                self.unacked.append((message, self.rcpts))
                self.out.append(b"250 2.0.0 Queued\r\n")
            elif verb == b"RSET" or verb == b"NOOP":
                self.out.append(b"250 2.0.0 OK\r\n")
            elif verb == b"QUIT":
                self.out.append(b"221 2.0.0 Bye\r\n")
                await self._flush()
                return
            else:
                self.out.append(b"502 5.5.2 Command not recognized\r\n")


async def serve_sink(
    host: str,
    port: int,
    stats: SinkStats,
    policy: SinkPolicy = SinkPolicy(),
    *,
    task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``task_status.started`` gets the bound port."""
    rng = random.Random(policy.seed)
    bucket = _Bucket(policy.rate_limit, policy.rate_burst) if policy.rate_limit > 0 else None

    async def handle(stream: trio.SocketStream) -> None:
        session = _Session(stream, policy, stats, rng, bucket)
        stats._opened()
        try:
            await session.run()
        except trio.BrokenResourceError:
            pass
        finally:
            stats._closed(session.sent)
            await stream.aclose()

    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: trio.serve_listeners(handle, listeners))
        task_status.started(bound)
        await trio.sleep_forever()


class SinkThread:
    """A sink running in its own thread (for synchronous callers: the demo, benchmarks).

    ``stats`` may be read from the caller's thread (plain counters; a snapshot is enough).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, policy: SinkPolicy = SinkPolicy()):
        self.stats = SinkStats()
        self.host = host
        self.port = port
        self._policy = policy
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="salvo-sink", daemon=True)

    def _main(self) -> None:
        async def run() -> None:
            self._token = trio.lowlevel.current_trio_token()
            with trio.CancelScope() as self._scope:
                async with trio.open_nursery() as nursery:
                    self.port = await nursery.start(
                        serve_sink, self.host, self.port, self.stats, self._policy
                    )
                    self._ready.set()

        try:
            trio.run(run)
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()

    def start(self) -> int:
        """Start serving; return the port."""
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self.port

    def stop(self) -> None:
        if self._token is not None and self._scope is not None:
            trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(10)
