"""Encryption at rest in the spool (real LMDB in tmp_path, no node): no marker of a body
or a variable in the data file with it on (and all of them with it off, so the grep
works), the modes of a data dir, a changed byte failing one recipient, a shred ending
the tenant's queue ``cancelled``, and re-wrapping under a new master key."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from salvo.core import spool_records as r
from salvo.core.protocol import Job, Recipient
from salvo.core.spool import Outcome, Spool, SpoolConfig
from salvo.core.spool_env import Store
from salvo.core.spool_keys import MasterKeyError

NOW = 1_700_000_000.0
MARKERS = (b"SUBJ-7f3a9c", b"TEXT-c41d2e", b"HTML-9b8e07", b"HDR-55aa13", b"VAR-e1f0d6")


def _job(job_id: str, tenant: str = "acme", n: int = 3, tag: str = "") -> Job:
    subj, text, html, hdr, var = (m.decode() + tag for m in MARKERS)
    return Job(
        id=job_id,
        tenant=tenant,
        from_="Acme <news@acme.example>",
        subject=f"{subj} {{{{ name }}}}",
        text=f"{text} {{{{ name }}}}",
        html=f"<p>{html}</p>",
        headers={"X-Mark": hdr},
        recipients=[
            Recipient(to=f"u{i}@example.org", vars={"name": f"{var}-{i}"}) for i in range(n)
        ],
    )


def _data(path: Path) -> bytes:
    return (path / "store" / "data.mdb").read_bytes()


@pytest.mark.parametrize("on", [True, False])
def test_the_data_file_holds_no_body_or_variable_in_clear_when_encrypted(tmp_path, on):
    data = tmp_path / "data"
    key = os.urandom(32)
    with Spool.open(data, master_key=key, encrypt=on, map_size=8 << 20) as spool:
        spool.submit_many([_job(f"j{i}") for i in range(5)], NOW)
        claim = spool.claim_due(NOW + 1, 100)
        assert len(claim.claimed) == 15
        job = claim.jobs[claim.claimed[0].seq]
        assert job.subject.startswith(MARKERS[0].decode()) and job.headers["X-Mark"]
        assert msgspec.msgpack.decode(claim.claimed[0].vars)["name"].startswith("VAR-")
    found = [m for m in MARKERS if m in _data(data)]
    assert found == ([] if on else list(MARKERS))
    # addresses stay readable: routing and the suppression list need them
    assert b"u1@example.org" in _data(data)


def test_modes_new_dirs_encrypt_and_an_encrypted_dir_stays_so(tmp_path):
    key = os.urandom(32)
    with Spool.open(tmp_path / "a", master_key=key) as spool:
        assert spool.encrypted
    with pytest.raises(MasterKeyError, match="stays encrypted"):
        Spool.open(tmp_path / "a", master_key=key, encrypt=False)
    with pytest.raises(MasterKeyError, match="is not this data dir's"):
        Spool.open(tmp_path / "a", master_key=os.urandom(32))
    with pytest.raises(MasterKeyError, match="give its spool master key"):
        Spool.open(tmp_path / "a", encrypt=True)
    # opened to read without the key: it reads heads, and refuses to submit or claim
    with Spool.open(tmp_path / "a") as spool:
        assert spool.encrypted and spool.keys is None
        with pytest.raises(MasterKeyError, match="without its master key"):
            spool.claim_due(NOW, 10)


def test_a_dir_in_clear_stays_in_clear_unless_asked_then_reads_both(tmp_path):
    data = tmp_path / "data"
    key = os.urandom(32)
    with Spool.open(data) as spool:  # an older node: no key, nothing recorded
        spool.submit_many([_job("old", tag="-old")], NOW)
    with Spool.open(data, master_key=key) as spool:  # the default keeps it in clear
        assert not spool.encrypted
    with Spool.open(data, master_key=key, encrypt=True) as spool:
        assert spool.encrypted
        spool.submit_many([_job("new", tag="-new")], NOW)
        claim = spool.claim_due(NOW + 1, 100)
        assert len(claim.claimed) == 6 and not claim.finished
        assert {j.subject.split()[0] for j in claim.jobs.values()} == {
            "SUBJ-7f3a9c-old",
            "SUBJ-7f3a9c-new",
        }
    assert b"SUBJ-7f3a9c-old" in _data(data) and b"SUBJ-7f3a9c-new" not in _data(data)
    with Spool.open(data, master_key=key) as spool:
        assert spool.encrypted  # recorded: stays on without the setting


def _tamper(data: Path, db: str, key: bytes, at: int = -1) -> None:
    with Store(data) as store:

        def fn(txn):
            value = bytearray(txn.get(key, db=store.dbs[db]))
            value[at] ^= 0x01
            txn.put(key, bytes(value), db=store.dbs[db])

        store.write(fn)


def test_a_changed_byte_fails_that_recipient_and_the_others_go_on(tmp_path):
    data = tmp_path / "data"
    key = os.urandom(32)
    with Spool.open(data, master_key=key) as spool:
        spool.submit_many([_job("a"), _job("b")], NOW)
    _tamper(data, "vars", r.rcpt_key(1, 1))
    _tamper(data, "jobs", r.seq_key(2), at=-20)  # inside job b's sealed content
    with Spool.open(data, master_key=key) as spool:
        claim = spool.claim_due(NOW + 1, 100)
        assert sorted((c.seq, c.idx) for c in claim.claimed) == [(1, 0), (1, 2)]
        failed = {(c.seq, c.idx): c.record for c in claim.finished}
        assert set(failed) == {(1, 1), (2, 0), (2, 1), (2, 2)}
        assert {rec.state for rec in failed.values()} == {"failed"}
        assert "cannot read the variables" in failed[1, 1].last.text
        assert "cannot read the job's content" in failed[2, 0].last.text
        assert list(claim.jobs) == [1]


def test_a_moved_record_does_not_open(tmp_path):
    data = tmp_path / "data"
    key = os.urandom(32)
    with Spool.open(data, master_key=key) as spool:
        spool.submit_many([_job("a")], NOW)
    with Store(data) as store:

        def swap(txn):
            db = store.dbs["vars"]
            first = txn.get(r.rcpt_key(1, 0), db=db)
            txn.put(r.rcpt_key(1, 0), txn.get(r.rcpt_key(1, 2), db=db), db=db)
            txn.put(r.rcpt_key(1, 2), first, db=db)

        store.write(swap)
    with Spool.open(data, master_key=key) as spool:
        claim = spool.claim_due(NOW + 1, 100)
        assert [(c.seq, c.idx) for c in claim.claimed] == [(1, 1)]
        assert {c.record.state for c in claim.finished} == {"failed"}


def test_shred_cancels_the_tenant_and_leaves_the_others(tmp_path):
    data = tmp_path / "data"
    key = os.urandom(32)
    with Spool.open(data, master_key=key) as spool:
        spool.submit_many([_job("a", "acme"), _job("b", "other"), _job("c", "acme")], NOW)
        claim = spool.claim_due(NOW + 1, 2)  # two of acme's in flight, and its key cached
        assert len(claim.claimed) == 2
        # (salvo tenant shred does this from another process: tests/test_shred_node.py)
        assert spool.shred("acme", NOW + 2) == (1, 4)
        # the next claim sees the shred: acme's waiting recipients end cancelled
        claim = spool.claim_due(NOW + 3, 100)
        cancelled = [c for c in claim.finished if c.record.state == "cancelled"]
        assert len(cancelled) == 4
        assert {spool.get_job(c.seq).tenant for c in cancelled} == {"acme"}
        assert {spool.get_job(c.seq).tenant for c in claim.claimed} == {"other"}
        # an in-flight one coming back is cancelled at its next claim
        flying = [(1, 0), (1, 1)]
        spool.record_outcomes(
            [Outcome(seq=s, idx=i, state="deferred", next_attempt=NOW + 4) for s, i in flying],
            NOW + 3,
        )
        claim = spool.claim_due(NOW + 5, 100)
        assert not claim.claimed
        assert {(c.seq, c.idx, c.record.state) for c in claim.finished} == {
            (1, 0, "cancelled"),
            (1, 1, "cancelled"),
        }
        # the tenant's next job gets a new key and is sent
        spool.submit_many([_job("d", "acme")], NOW + 6)
        claim = spool.claim_due(NOW + 7, 100)
        assert len(claim.claimed) == 3 and not claim.finished
        assert claim.jobs[claim.claimed[0].seq].subject.startswith("SUBJ-")


def test_shred_refuses_a_dir_in_clear(tmp_path):
    with Spool.open(tmp_path / "data") as spool, pytest.raises(MasterKeyError, match="not enc"):
        spool.shred("acme", NOW)


def test_rotate_master_rewraps_and_the_old_key_is_refused(tmp_path):
    data = tmp_path / "data"
    old, new = os.urandom(32), os.urandom(32)
    with Spool.open(data, master_key=old) as spool:
        spool.submit_many([_job("a", "acme"), _job("b", "other")], NOW)
        assert spool.rotate_master(new) == 2
    with pytest.raises(MasterKeyError, match="is not this data dir's"):
        Spool.open(data, master_key=old)
    with Spool.open(data, master_key=new) as spool:
        claim = spool.claim_due(NOW + 1, 100)
        assert len(claim.claimed) == 6 and not claim.finished


def test_a_failed_submit_does_not_leave_an_unstored_key_in_the_cache(tmp_path):
    """A write retried after the map grew (or refused full) must not seal under a key its
    first attempt made and never committed."""
    data = tmp_path / "data"
    key = os.urandom(32)
    with Spool.open(data, master_key=key, map_size=1 << 20, max_map_size=64 << 20) as spool:
        big = [_job(f"j{i}", tenant=f"t{i % 50}", n=20) for i in range(400)]
        for i in range(0, len(big), 100):
            spool.submit_many(big[i : i + 100], NOW)  # grows the map several times
    with Spool.open(data, master_key=key) as spool:
        claim = spool.claim_due(NOW + 1, 10_000)
        assert len(claim.claimed) == 8000 and not claim.finished


def test_a_tenant_key_seals_for_30_days_then_a_new_generation_takes_over(tmp_path):
    from salvo.core import spool_crypto as sc

    data = tmp_path / "data"
    key = os.urandom(32)
    later = NOW + 31 * 86400
    config = SpoolConfig(max_age=60 * 86400)  # the first jobs must not expire meanwhile
    with Spool.open(data, config, master_key=key) as spool:
        spool.submit_many([_job("a")], NOW)
        spool.submit_many([_job("b")], NOW + 86400)
        spool.submit_many([_job("c")], later)
        gens = [sc.generation_of(spool.get_job(seq).sealed) for seq in (1, 2, 3)]
        assert gens == [1, 1, 2]
        claim = spool.claim_due(later + 1, 100)
        assert len(claim.claimed) == 9 and not claim.finished
