"""Time and randomness are passed into core: the Message-IDs of a spool come from the
source it was opened with, and the Date a raw message lacks comes from the composer's
clock."""

from __future__ import annotations

import email.utils
from pathlib import Path

import pytest

from salvo.core.compose import Composer
from salvo.core.messages import Content
from salvo.core.protocol import Job, Recipient
from salvo.core.spool import Spool
from salvo.core.spool_env import Store


def test_message_ids_come_from_the_random_source_given(tmp_path: Path) -> None:
    drawn = []

    def source(n: int) -> bytes:
        drawn.append(n)
        return bytes(range(12)) * (n // 12)

    spool = Spool.open(tmp_path / "data", random_bytes=source, map_size=1 << 20)
    try:
        rcpts = [Recipient(to=f"r{i}@example.org") for i in range(3)]
        rcpts.append(Recipient(to="own@example.org", message_id="<own@acme.example>"))
        job = Job(id="j", from_="news@acme.example", recipients=rcpts, text="hi")
        (result,) = spool.submit_many([job], 1_700_000_000.0)
    finally:
        spool.close()
    ids = [a.message_id for a in result.reply.accepted]
    # 96 random bits, then the recipient's key (job 1, its recipients 0, 1, 2).
    random_part = bytes(range(12)).hex()
    assert ids == [f"<{random_part}.1.{i}@acme.example>" for i in range(3)] + ["<own@acme.example>"]
    assert len(drawn) == 1  # one draw for the batch


def test_a_spool_opened_to_read_refuses_submissions(tmp_path: Path) -> None:
    Spool.open(tmp_path / "data", map_size=1 << 20).close()
    spool = Spool(Store(tmp_path / "data"))
    try:
        job = Job(id="j", from_="a@acme.example", recipients=[Recipient(to="b@x.example")])
        with pytest.raises(ValueError, match="Message-ID source"):
            spool.submit_many([job], 0.0)
    finally:
        spool.close()


def test_a_raw_message_without_date_is_dated_by_the_clock_given() -> None:
    composer = Composer({}, clock=lambda: 86400.0 * 365)
    raw = "From: news@acme.example\r\nTo: ann@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
    content = Content("news@acme.example", None, None, None, {}, raw)
    message = composer.compose("job", content, "ann@example.org", {}, "<1@acme.example>")
    assert b"Date: " + email.utils.formatdate(86400.0 * 365).encode() + b"\r\n" in message
    assert b"Message-ID: <1@acme.example>\r\n" in message
