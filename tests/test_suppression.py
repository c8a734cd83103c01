"""The suppression store: normalization, scopes, expiry, CSV, and the CLI."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import pytest

from salvo.cli import main
from salvo.core.errors import CsvImportError, InvalidAddressError, StoreMismatchError
from salvo.core.protocol import Job, Recipient
from salvo.core.spool import Spool
from salvo.core.spool_env import Store
from salvo.core.suppression import SuppressionStore
from salvo.core.suppression_csv import export_csv, import_csv
from salvo.testing.terminal import run_on_terminal

NOW = 1_700_000_000.0


@pytest.fixture
def supp(tmp_path: Path) -> SuppressionStore:
    store = Store(tmp_path / "data", map_size=8 << 20)
    yield SuppressionStore(store)
    store.close()


def hits(supp: SuppressionStore, addresses: list[str], tenant: str = "", now: float = NOW):
    return [e is not None for e in supp.check_many(addresses, tenant=tenant, now=now)]


def test_address_matching_ignores_case_and_trailing_dot(supp: SuppressionStore) -> None:
    supp.add(["Ann.Smith@Example.ORG."], now=NOW, reason="hard-bounce")
    assert hits(supp, ["ann.smith@example.org", "ANN.SMITH@EXAMPLE.ORG", "ann@example.org"]) == [
        True,
        True,
        False,
    ]
    (entry,) = supp.entries()
    assert entry.target == "Ann.Smith@example.org"  # local part kept as given
    assert entry.reason == "hard-bounce"


def test_idn_domain_in_u_label_and_a_label(supp: SuppressionStore) -> None:
    supp.add(["kunde@Bücher.example"], now=NOW)
    assert hits(supp, ["KUNDE@xn--bcher-kva.example", "kunde@BÜCHER.example."]) == [True, True]
    supp.add(["xn--mnchen-3ya.example"], now=NOW)  # a domain entry given as A-label
    assert hits(supp, ["anyone@münchen.example", "x@sub.münchen.example"]) == [True, False]


def test_domain_entries(supp: SuppressionStore) -> None:
    supp.add(["Blocked.Example", "@other.example"], now=NOW, reason="complaint")
    assert hits(supp, ["a@blocked.example", "b@BLOCKED.example.", "c@other.example"]) == [
        True,
        True,
        True,
    ]
    assert hits(supp, ["a@notblocked.example", "a@sub.blocked.example"]) == [False, False]
    assert supp.remove(["blocked.example"]) == 1
    assert hits(supp, ["a@blocked.example"]) == [False]


def test_tenant_scope_and_global_scope(supp: SuppressionStore) -> None:
    supp.add(["t@example.org"], now=NOW, tenant="acme", reason="unsubscribe")
    supp.add(["g@example.org"], now=NOW)
    assert hits(supp, ["t@example.org", "g@example.org"], tenant="acme") == [True, True]
    assert hits(supp, ["t@example.org", "g@example.org"], tenant="other") == [False, True]
    assert hits(supp, ["t@example.org", "g@example.org"]) == [False, True]
    assert supp.remove(["t@example.org"]) == 0  # the global scope has no such entry
    assert supp.remove(["t@example.org"], tenant="acme") == 1


def test_precedence_and_the_keys_path(supp: SuppressionStore) -> None:
    """Address before domain, tenant before global, expired entries skipped; the keys
    path (normalized lookup keys, as the spool has them) agrees with the parse path."""
    supp.add(["a@x.example"], now=NOW, tenant="acme", reason="unsubscribe", expires=NOW + 10)
    supp.add(["a@x.example"], now=NOW, reason="complaint")
    supp.add(["x.example"], now=NOW, tenant="acme", reason="manual")
    supp.add(["b@y.example"], now=NOW, tenant="acme", reason="hard-bounce")
    addresses = ["A@X.example", "Bea <other@x.example>", "b@Y.example", "c@z.example"]
    keys = ["a@x.example", "other@x.example", "b@y.example", "c@z.example"]
    for when, first in ((NOW, "unsubscribe"), (NOW + 10, "complaint")):
        parsed = supp.check_many(addresses, tenant="acme", now=when)
        assert [e and e.reason for e in parsed] == [first, "manual", "hard-bounce", None]
        assert supp.check_keys(keys, tenant="acme", now=when) == parsed
    assert [e and e.reason for e in supp.check_keys(keys, now=NOW)] == [
        "complaint",
        None,
        None,
        None,
    ]


def test_expiry_with_a_fake_clock(supp: SuppressionStore) -> None:
    supp.add(["soon@example.org"], now=NOW, expires=NOW + 60)
    assert hits(supp, ["soon@example.org"], now=NOW + 59) == [True]
    assert hits(supp, ["soon@example.org"], now=NOW + 60) == [False]
    assert supp.store.write(lambda txn: supp.purge_expired_in(txn, NOW + 61)) == 1
    assert supp.count() == 0


def test_bad_input_is_refused(supp: SuppressionStore) -> None:
    with pytest.raises(InvalidAddressError):
        supp.add(["fine@example.org", "not an address"], now=NOW)
    assert supp.count() == 0  # validated first: nothing written
    with pytest.raises(InvalidAddressError):
        supp.check_many(["a@b\r\n.example"], now=NOW)


def test_spool_rejects_suppressed_recipients(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path / "data", map_size=8 << 20)
    spool.suppression.add(["no@example.org"], now=NOW, reason="complaint")
    job = Job(
        id="j1",
        from_="news@acme.example",
        recipients=[Recipient(to="NO@example.org"), Recipient(to="yes@example.org")],
        text="hi",
    )
    (res,) = spool.submit_many([job], NOW)
    assert res.reply.status == "partial"
    assert [(x.to, x.reason) for x in res.reply.rejected] == [("NO@example.org", "suppressed")]
    spool.suppression.add(["yes@example.org"], now=NOW)  # suppressed after queueing
    claim = spool.claim_due(NOW, 10)
    assert claim.claimed == [] and [c.record.state for c in claim.finished] == ["suppressed"]
    spool.close()


def write_csv(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)


def test_csv_round_trip_100k(supp: SuppressionStore, tmp_path: Path) -> None:
    rows = [["address", "tenant", "reason", "source", "created", "expires"]]
    for i in range(100_000):
        expires = "2030-01-01T00:00:00Z" if i % 7 == 0 else ""
        target = f"dom{i}.example" if i % 1000 == 0 else f"User{i}@Dom{i % 3000}.example"
        rows.append(
            [
                target,
                "acme" if i % 3 == 0 else "",
                "hard-bounce",
                "esp",
                "2024-05-01T12:00:00Z",
                expires,
            ]
        )
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(src, rows)
    assert import_csv(supp, src, NOW) == 100_000
    assert export_csv(supp, out) == 100_000
    with open(out, newline="", encoding="utf-8") as fh:
        exported = list(csv.reader(fh))
    assert exported[0] == rows[0]
    normalized = {tuple(r) for r in exported[1:]}
    assert ("user1@dom1.example".title().lower(), "", "", "", "", "") not in normalized
    assert (
        "User1@dom1.example",
        "",
        "hard-bounce",
        "esp",
        "2024-05-01T12:00:00Z",
        "",
    ) in normalized
    assert (
        "dom0.example",
        "acme",
        "hard-bounce",
        "esp",
        "2024-05-01T12:00:00Z",
        "2030-01-01T00:00:00Z",
    ) in normalized
    # Importing the export into a fresh store gives the same entries.
    other = SuppressionStore(Store(tmp_path / "other", map_size=8 << 20))
    assert import_csv(other, out, NOW) == 100_000
    assert other.entries() == supp.entries()
    assert hits(other, ["user99999@dom999.example", "USER2@DOM2.EXAMPLE"], tenant="acme") == [
        True,
        True,
    ]


def test_malformed_csv_lines_are_reported_and_nothing_imported(
    supp: SuppressionStore, tmp_path: Path
) -> None:
    src = tmp_path / "bad.csv"
    write_csv(
        src,
        [
            ["address", "tenant", "reason", "source", "created", "expires"],
            ["ok@example.org"],
            ["not an address"],
            ["ok2@example.org", "", "", "", "yesterday"],
            ["a@b.example", "t", "r", "s", "", "", "extra"],
            ["ok3@example.org", "", "bad\x01reason"],
        ],
    )
    with pytest.raises(CsvImportError) as err:
        import_csv(supp, src, NOW)
    assert [n for n, _ in err.value.problems] == [3, 4, 5, 6]
    assert "created" in err.value.problems[1][1]
    assert "line 3" in str(err.value) and "nothing imported" in str(err.value)
    assert supp.count() == 0


def test_cli_add_check_list_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    assert main(["suppress", "--data", data, "add", "Ann@Example.org", "spam.example"]) == 0
    assert main(["suppress", "--data", data, "check", "bob@example.org"]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "suppress",
                "--data",
                data,
                "check",
                "ANN@example.org",
                "x@spam.example",
                "c@d.example",
            ]
        )
        == 1
    )
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[1] for line in lines] == ["suppressed", "suppressed", "clean"]
    assert (
        main(
            [
                "suppress",
                "--data",
                data,
                "add",
                "t@example.org",
                "--tenant",
                "acme",
                "--expires",
                "30d",
                "--reason",
                "unsubscribe",
            ]
        )
        == 0
    )
    assert main(["suppress", "--data", data, "check", "t@example.org"]) == 0
    assert main(["suppress", "--data", data, "check", "--tenant", "acme", "t@example.org"]) == 1
    capsys.readouterr()
    assert main(["suppress", "--data", data, "list", "--reason", "unsubscribe"]) == 0
    assert capsys.readouterr().out.startswith("t@example.org\tacme\tunsubscribe")
    assert main(["suppress", "--data", data, "remove", "ann@example.org"]) == 0
    assert main(["suppress", "--data", data, "check", "ann@example.org"]) == 0
    assert main(["suppress", "--data", data, "check", "not-an-address"]) == 2


def test_cli_refuses_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a salvo store")
    assert main(["suppress", "--data", str(tmp_path), "check", "a@b.example"]) == 2
    with pytest.raises(StoreMismatchError):
        Store(tmp_path)
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "data.mdb").write_bytes(b"garbage" * 1000)
    with pytest.raises(StoreMismatchError):
        Store(tmp_path)


def test_cli_in_a_real_process(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    salvo = [sys.executable, "-m", "salvo"]
    src = tmp_path / "in.csv"
    write_csv(src, [["gone@example.org", "", "hard-bounce"], ["fine@example.org", "x"]])
    run = subprocess.run(
        [*salvo, "suppress", "--data", data, "import", str(src)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "imported 2" in run.stdout
    run = subprocess.run(
        [*salvo, "suppress", "--data", data, "check", "GONE@example.org", "ok@example.org"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert run.stdout.splitlines()[0].startswith("GONE@example.org\tsuppressed\thard-bounce")
    run = subprocess.run(
        [*salvo, "queue", "--data", data, "summary"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0 and "suppressions 2" in run.stdout


def test_check_many_is_one_batch_with_time(supp: SuppressionStore) -> None:
    supp.add([f"u{i}@d{i % 10}.example" for i in range(0, 1000, 2)], now=time.time())
    result = hits(supp, [f"U{i}@D{i % 10}.example" for i in range(1000)], now=time.time())
    assert result == [i % 2 == 0 for i in range(1000)]


def test_cli_import_shows_progress_on_a_terminal_only(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    write_csv(src, [[f"user{i}@example.org", "", "hard-bounce"] for i in range(5000)])
    salvo = [sys.executable, "-m", "salvo", "suppress"]
    tty = run_on_terminal([*salvo, "--data", str(tmp_path / "a"), "import", str(src)])
    assert tty.returncode == 0, tty.terminal
    assert tty.stdout == f"imported 5000 entries from {src}\n"
    assert "checking lines" in tty.terminal and "100%" in tty.terminal
    assert "writing entries" in tty.terminal and "5000/5000" in tty.terminal
    piped = subprocess.run(
        [*salvo, "--data", str(tmp_path / "b"), "import", str(src)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert piped.returncode == 0
    assert (piped.stdout, piped.stderr) == (tty.stdout, "")
