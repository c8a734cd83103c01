"""A naive Python sender, the baseline of ``salvo bench --compare``: what a developer
writes in an afternoon. asyncio + aiosmtplib, the ``email`` package to build each
personalized multipart/alternative message, dkimpy to sign it, ``--concurrency`` reused
SMTP connections; no spool, no retries.

    python -m salvo.bench.naive HOST PORT --messages N --concurrency 32 --key PEM

Prints one JSON line: messages sent, seconds, CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
import uuid
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from salvo.testing import samples

_VAR = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def build(fields: dict, to: str, variables: dict, key: bytes | None, selector: bytes) -> bytes:
    import dkim

    def fill(text: str) -> str:
        return _VAR.sub(lambda m: str(variables.get(m.group(1), "")), text)

    msg = EmailMessage()
    msg["From"] = fields["from_"]
    msg["To"] = to
    msg["Subject"] = fill(fields["subject"])
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@acme.example>"
    msg["Date"] = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
    for name, value in fields["headers"].items():
        msg[name] = fill(value)
    msg.set_content(fill(fields["text"]))
    msg.add_alternative(fill(fields["html"]), subtype="html")
    data = msg.as_bytes(policy=SMTP)
    if key is None:
        return data
    signature = dkim.sign(
        data,
        selector,
        b"acme.example",
        key,
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    return signature + data


async def send_all(args: argparse.Namespace) -> int:
    import aiosmtplib

    fields = samples.campaign(args.size)
    key = args.key.read_bytes() if args.key else None
    queue: asyncio.Queue = asyncio.Queue()
    for item in samples.recipients(args.messages):
        queue.put_nowait(item)
    sent = 0

    async def worker() -> None:
        nonlocal sent
        client = aiosmtplib.SMTP(hostname=args.host, port=args.port, start_tls=False)
        await client.connect()
        try:
            while not queue.empty():
                to, variables = queue.get_nowait()
                message = build(fields, to, variables, key, args.selector.encode())
                address = to.rpartition("<")[2].rstrip(">")
                await client.sendmail("bounce@acme.example", [address], message)
                sent += 1
        finally:
            await client.quit()

    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m salvo.bench.naive")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--size", choices=("4k", "100k"), default="4k")
    parser.add_argument("--key", type=Path, help="DKIM private key (PEM); none: unsigned")
    parser.add_argument("--selector", default="s-rsa")
    args = parser.parse_args(argv)
    start, cpu = time.perf_counter(), time.process_time()
    sent = asyncio.run(send_all(args))
    seconds = time.perf_counter() - start
    print(json.dumps({"sent": sent, "seconds": seconds, "cpu": time.process_time() - cpu}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
