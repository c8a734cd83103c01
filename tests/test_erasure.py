"""Erasure in the spool (real LMDB): every record rewritten, the file holds no trace, the
address stays suppressed through its keyed hash only, other addresses untouched."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from salvo.core.address import parse_mailbox
from salvo.core.erasure import Eraser, address_pattern, clean_file
from salvo.core.errors import InvalidAddressError
from salvo.core.protocol import Job, Recipient
from salvo.core.spool import Outcome, Spool
from salvo.core.suppression import ERASED_TARGET

NOW = 1_700_000_000.0
ANN = "Ann.Smith@Example.ORG"
FORMS = [b"ann.smith@example.org", b"Ann.Smith@Example.ORG", b"ANN.SMITH@EXAMPLE.ORG"]


def job(job_id: str, *tos: str, tenant: str = "acme") -> Job:
    rcpts = [Recipient(to=t, vars={"name": "n"}) for t in tos]
    return Job(id=job_id, tenant=tenant, from_="news@acme.example", recipients=rcpts, text="hi")


def grep(folder: Path, needles: list[bytes]) -> dict[str, int]:
    """Occurrences of any needle (case-insensitively) in every file under ``folder``."""
    rx = re.compile(b"|".join(re.escape(n) for n in needles), re.IGNORECASE)
    out = {}
    for path in folder.rglob("*"):
        if path.is_file():
            n = len(rx.findall(path.read_bytes()))
            if n:
                out[str(path.relative_to(folder))] = n
    return out


@pytest.fixture(params=[False, True], ids=["clear", "encrypted"])
def spool(request, tmp_path: Path) -> Spool:
    key = bytes(range(32)) if request.param else None
    s = Spool.open(tmp_path / "data", master_key=key, encrypt=request.param)
    yield s
    s.close()


def fill(spool: Spool) -> None:
    """Ann in several states and places, beside Bob who must stay untouched."""
    spool.submit_many(
        [
            job("j1", f"Ann <{ANN}>", "bob@example.org"),
            job("j2", ANN, "bob@example.org"),
            job("j3", ANN, ANN.lower()),  # a duplicate: in the job's rejected list
            job("j4", ANN, tenant="other"),
        ],
        NOW,
    )
    claim = spool.claim_due(NOW + 1, 100)
    by_job = {}
    for c in claim.claimed:
        by_job.setdefault(c.job_id, []).append(c)
    outs = []
    for c in by_job["j1"]:  # j1 delivered, with a reply that quotes the address
        outs.append(
            Outcome(seq=c.seq, idx=c.idx, state="delivered", code=250, text=f"ok <{c.rcpt}>")
        )
    for c in by_job["j2"]:  # j2 deferred: waiting again
        outs.append(
            Outcome(
                seq=c.seq, idx=c.idx, state="deferred", code=451, text=f"later {c.rcpt}",
                next_attempt=NOW + 600,
            )
        )  # fmt: skip
    spool.record_outcomes(outs, NOW + 2)
    # j3 and j4 stay in flight.
    spool.suppression.add([ANN], now=NOW, reason="complaint", tenant="acme")


def test_erase_leaves_no_trace_and_keeps_the_address_suppressed(spool: Spool) -> None:
    fill(spool)
    data = spool.store.data_dir
    assert grep(data, FORMS)
    report = Eraser(spool, ANN.upper()).run(NOW + 3)
    assert report.cancelled == 3  # j2 deferred, j3 and j4 in flight
    assert report.suppressed
    clean_file(spool.store)
    assert grep(data, FORMS) == {}
    # Bob is untouched: his records, his deliveries.
    assert b"bob@example.org" in (data / "store" / "data.mdb").read_bytes()
    seq = spool.find_jobs("j1", "acme")[0]
    recs = dict(spool.recipients(seq))
    assert recs[0].to == "erased@erased.invalid" and recs[0].state == "delivered"
    assert recs[0].last.text == "ok <[erased]>"
    assert recs[1].to == "bob@example.org"
    # Still suppressed, in every tenant, through the hash only.
    found = spool.suppression.check_many([ANN.lower(), "bob@example.org"], tenant="x", now=NOW)
    assert found[0] is not None and found[0].target == ERASED_TARGET
    assert found[0].reason == "erasure" and found[1] is None
    assert spool.suppression.entries() == []  # the clear entry is gone
    # A new job to it: rejected as suppressed, the producer told; the spool keeps nothing.
    (res,) = spool.submit_many([job("j5", ANN, "carol@example.org")], NOW + 4)
    assert [(x.to, x.reason, x.text) for x in res.reply.rejected] == [(ANN, "suppressed", "erased")]
    clean_file(spool.store)
    assert grep(data, FORMS) == {}
    # The in-flight recipients' late outcomes change nothing (they are final).
    assert spool.record_outcomes([Outcome(seq=seq, idx=0, state="bounced", code=550)], NOW) == []


def test_erase_in_one_tenant(spool: Spool) -> None:
    fill(spool)
    Eraser(spool, ANN, tenant="other").run(NOW + 3)
    other = spool.recipients(spool.find_jobs("j4", "other")[0])
    assert other[0][1].to == "erased@erased.invalid"
    acme = spool.recipients(spool.find_jobs("j2", "acme")[0])
    assert acme[0][1].to == ANN  # another tenant's data is not touched
    check = spool.suppression.check_many
    assert check([ANN], tenant="other", now=NOW)[0].target == ERASED_TARGET
    assert check([ANN], tenant="acme", now=NOW)[0].reason == "complaint"  # its own entry


def test_dry_run_changes_nothing(spool: Spool) -> None:
    fill(spool)
    report = Eraser(spool, ANN).run(NOW + 3, dry_run=True)
    assert report.address_found["rcpts"] == 4
    assert report.address_found["jobs"] == 1  # j3's rejected duplicate
    assert report.address_found["supp"] == 1
    assert not report.suppressed
    assert spool.suppression.hashed_count() == 0


def test_lifting_an_erased_address(spool: Spool) -> None:
    Eraser(spool, ANN).run(NOW)
    assert spool.suppression.check_many([ANN], now=NOW)[0] is not None
    assert spool.suppression.remove([ANN]) == 1
    assert spool.suppression.check_many([ANN], now=NOW)[0] is None


def test_pattern_does_not_match_longer_addresses() -> None:
    rx = address_pattern(parse_mailbox("ann@example.org"))
    assert rx.search(b"<ANN@example.org>")
    assert rx.search(b"to ann@example.org.")
    for other in (
        b"joann@example.org",
        b"ann@example.org.uk",
        b"ann@example.orgs",
        b"x.ann@example.org",
    ):
        assert not rx.search(other), other
    idn = address_pattern(parse_mailbox("kunde@Bücher.example"))
    assert idn.search("KUNDE@bücher.example".encode()) and idn.search(
        b"kunde@xn--bcher-kva.example"
    )


def test_bad_address_is_refused(spool: Spool) -> None:
    with pytest.raises(InvalidAddressError):
        Eraser(spool, "not an address")


def test_hashed_check_cost(spool: Spool) -> None:
    """The hot path's extra cost once some address was erased: one HMAC per recipient.
    Printed (pytest -s) for docs/privacy.md; no timing assertion."""
    keys = [f"user{i}@example.org" for i in range(10_000)]
    check = spool.suppression.check_keys
    t0 = time.perf_counter()
    for _ in range(5):
        check(keys, tenant="acme", now=NOW)
    before = (time.perf_counter() - t0) / 50_000
    Eraser(spool, ANN).run(NOW)
    t0 = time.perf_counter()
    for _ in range(5):
        check(keys, tenant="acme", now=NOW)
    after = (time.perf_counter() - t0) / 50_000
    print(f"suppression check: {before * 1e6:.2f} us/address, {after * 1e6:.2f} with hashes")


def test_cli_without_a_node_scrubs_the_logs_itself(tmp_path: Path) -> None:
    """``salvo erase --data`` with no node running: the event logs (current and rotated)
    rewritten, a tenant-scoped erasure only in that tenant's lines, the file clean."""
    from salvo.cli import main
    from salvo.core import host

    data = tmp_path / "data"
    with Spool.open(data, random_bytes=host.random_bytes) as spool:
        spool.submit_many([job("j1", ANN, "bob@example.org")], NOW)
    events = data / "events"
    events.mkdir()
    line = (
        '{"type":"delivered","ts":1,"job":"j1","recipient":"Ann <%s>",'
        '"tenant":"%s","text":"250 ok <%s>"}\n'
    )
    (events / "events-20240101T000000.000000.jsonl").write_text(line % (ANN, "acme", ANN.lower()))
    (events / "events.jsonl").write_text(
        line % ("bob@example.org", "acme", "bob@example.org") + line % (ANN, "other", ANN)
    )
    assert main(["erase", "--data", str(data), "--tenant", "acme", "--dry-run", ANN]) == 0
    assert grep(data, FORMS)
    assert main(["erase", "--data", str(data), "--tenant", "acme", ANN]) == 0
    rotated = (events / "events-20240101T000000.000000.jsonl").read_text()
    assert '"recipient":"erased@erased.invalid"' in rotated and "250 ok <[erased]>" in rotated
    assert ANN in (events / "events.jsonl").read_text()  # tenant other: not this erasure's
    assert "bob@example.org" in (events / "events.jsonl").read_text()
    assert main(["erase", "--data", str(data), ANN]) == 0
    assert grep(data, FORMS) == {}
    assert main(["erase", "--data", str(data), "not-an-address"]) == 2
