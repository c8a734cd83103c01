"""Submitting protocol jobs to the spool: defaults, display names, replies, claims."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from salvo.actors.spool_writer import SpoolWriter
from salvo.core.errors import SpoolFullError
from salvo.core.protocol import Accepted, Job, Recipient, Rejected, Reply
from salvo.core.spool import Spool, Submitted

NOW = 1_700_000_000.0


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    spool = Spool.open(tmp_path / "data", map_size=8 << 20)
    yield spool
    spool.close()


def job(rcpts: list[str], **kw) -> Job:
    fields = dict(id="j1", from_="Acme <news@acme.example>", subject="s", text="hi")
    fields.update(kw)
    return Job(recipients=[Recipient(to=t) for t in rcpts], **fields)


def test_protocol_defaults_are_stored_as_records_expect(spool: Spool) -> None:
    (res,) = spool.submit_many([job(["ann@example.org"])], NOW)
    assert isinstance(res.reply, Reply) and not res.duplicate
    assert res.reply.status == "accepted"
    (seq,) = spool.find_jobs("j1", "default")
    record = spool.get_job(seq)
    assert (record.tenant, record.campaign, record.traffic) == ("default", "", "default")
    assert record.return_path == "" and record.send_after is None


def test_send_after_as_aware_datetime(spool: Spool) -> None:
    later = datetime.fromtimestamp(NOW + 3600, UTC)
    spool.submit_many([job(["ann@example.org"], send_after=later)], NOW)
    assert spool.next_due() == pytest.approx(NOW + 3600)
    assert spool.claim_due(NOW, 10).claimed == []
    assert len(spool.claim_due(NOW + 3600, 10).claimed) == 1


def test_display_names_are_accepted_and_the_bare_address_is_used(spool: Spool) -> None:
    spool.suppression.add(["sup@example.org"], now=NOW)
    rcpts = [
        "Ann Lee <Ann@Bücher.Example>",
        "<bob@example.org>",
        "Bob again <BOB@example.org>",  # same address as the one before
        "Sup <SUP@example.org>",
        "Bad <not an address>",
        "carl@example.org",
    ]
    (res,) = spool.submit_many([job(rcpts)], NOW)
    reply = res.reply
    assert reply.status == "partial"
    assert [a.to for a in reply.accepted] == [rcpts[0], rcpts[1], rcpts[5]]
    assert reply.rejected == [
        Rejected(rcpts[2], "duplicate"),
        Rejected(rcpts[4], "invalid-address"),
        Rejected(rcpts[3], "suppressed"),
    ]
    claimed = spool.claim_due(NOW, 10).claimed
    assert [(c.to, c.rcpt, c.domain) for c in claimed] == [
        (rcpts[0], "Ann@xn--bcher-kva.example", "xn--bcher-kva.example"),
        (rcpts[1], "bob@example.org", "example.org"),
        (rcpts[5], "carl@example.org", "example.org"),
    ]
    # Records keep the recipient as given (the To header) and the normalized key.
    (_, first), *_ = spool.recipients(claimed[0].seq)
    assert first.to == rcpts[0] and first.key == "ann@xn--bcher-kva.example"


def test_duplicate_returns_the_original_reply(spool: Spool) -> None:
    (first,) = spool.submit_many([job(["ann@example.org", "x"])], NOW)
    (again,) = spool.submit_many([job(["someone@else.example"])], NOW + 1)
    assert again.duplicate and again.reply == first.reply
    assert isinstance(first.reply.accepted[0], Accepted)
    # Same id in another tenant is another job.
    (other,) = spool.submit_many([job(["ann@example.org"], tenant="t2")], NOW)
    assert not other.duplicate


def test_job_level_problem_is_a_rejected_reply(spool: Spool) -> None:
    (res,) = spool.submit_many([job(["ann@example.org"], from_="no domain")], NOW)
    assert res.reply.status == "rejected" and res.reply.error.startswith("bad sender")
    assert spool.find_jobs("j1") == []


def test_writer_groups_jobs_and_hands_each_its_own_result(spool: Spool) -> None:
    writer = SpoolWriter(spool, clock=lambda: NOW, max_jobs=7)
    replies: dict[str, Submitted] = {}

    async def submitter(n: int) -> None:
        for k in range(5):
            job_id = f"w{n}-{k}"
            replies[job_id] = await writer.submit(job([f"r{n}.{k}@example.org"], id=job_id))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            async with trio.open_nursery() as subs:
                for n in range(20):
                    subs.start_soon(submitter, n)
            dup = await writer.submit(job(["x@example.org"], id="w3-1"))
            assert dup.duplicate and dup.reply == replies["w3-1"].reply
            writer.close()

    trio.run(main)
    assert len(replies) == 100
    for job_id, result in replies.items():
        n, k = job_id[1:].split("-")
        assert result.reply.id == job_id and not result.duplicate
        assert [a.to for a in result.reply.accepted] == [f"r{n}.{k}@example.org"]
    stats = writer.statistics()
    assert stats.jobs == 101 and stats.largest_batch <= 7 and stats.commits < 101


def test_writer_gives_every_submitter_of_a_failed_batch_the_error(spool: Spool) -> None:
    writer = SpoolWriter(spool, clock=lambda: NOW)
    errors = []

    def full(jobs: list, now: float) -> list:
        raise SpoolFullError("spool is full; retry later")

    spool.submit_many = full  # type: ignore[method-assign]

    async def submitter(n: int) -> None:
        try:
            await writer.submit(job([f"r{n}@example.org"], id=f"f{n}"))
        except SpoolFullError as exc:
            errors.append(exc)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            async with trio.open_nursery() as subs:
                for n in range(10):
                    subs.start_soon(submitter, n)
            writer.close()

    trio.run(main)
    assert len(errors) == 10 and all(e.temporary for e in errors)
    assert len({id(e) for e in errors}) == 10  # one instance per waiter


def test_writer_bounds_recipients_per_commit_and_lets_claims_in_between(spool: Spool) -> None:
    """A burst of big jobs commits in slices of ``max_recipients``, and a claim asked for
    after the first slice runs before the last one is written (claims are not held off
    until a whole burst is on disk)."""
    writer = SpoolWriter(spool, clock=lambda: NOW, max_recipients=250)
    order: list[str] = []
    committed = trio.Event()

    async def submitter(n: int) -> None:
        rcpts = [f"b{n}.{k}@example.org" for k in range(100)]
        await writer.submit(job(rcpts, id=f"b{n}"))
        order.append(f"job b{n}")
        committed.set()

    async def claimer() -> None:
        await committed.wait()  # as the scheduler: woken by the first commit
        claim = await writer.run_sync(spool.claim_due, NOW + 1, 10_000)
        order.append(f"claim {len(claim.claimed)}")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            async with trio.open_nursery() as subs:
                subs.start_soon(claimer)
                for n in range(10):
                    subs.start_soon(submitter, n)
            writer.close()

    trio.run(main)
    stats = writer.statistics()
    assert stats.jobs == 10 and stats.largest_batch == 2  # 2 x 100 recipients <= 250
    # The claim ran right after the first commit: it found that commit's recipients (one
    # batch, 100 or 200 as the submitters came in), not the next batch's as well.
    claims = [int(step.split()[1]) for step in order if step.startswith("claim")]
    assert len(claims) == 1 and 100 <= claims[0] <= 100 * stats.largest_batch
