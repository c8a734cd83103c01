"""The ``salvo`` commands of issue 2, run as a user would: real processes, real files."""

from __future__ import annotations

import email
import email.policy
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from salvo.core import dkimkeys


def salvo(*args: str, stdin: bytes | None = None, cwd: Path | None = None):
    """Run ``salvo ARGS`` in a new process; return the CompletedProcess (bytes)."""
    return subprocess.run(
        [sys.executable, "-m", "salvo", *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        timeout=120,
    )


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    """One RSA-2048 and one Ed25519 key made by ``salvo dkim keygen``."""
    folder = tmp_path_factory.mktemp("keys")
    made = {}
    for algorithm, name in (("rsa-sha256", "rsa.pem"), ("ed25519-sha256", "ed.pem")):
        out = folder / name
        result = salvo(
            "dkim", "keygen", "--domain", "acme.example", "--selector", "s1",
            "--algorithm", algorithm, "--out", str(out),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        made[algorithm] = out
        made[algorithm + ".stdout"] = result.stdout.decode()
    return made


# LF line ends (as files have them), trailing whitespace and a leading dot on purpose.
SAMPLE = (
    b"From: Ann <ann@acme.example>\n"
    b"To: bob@example.org\n"
    b"Subject: Quarterly figures\n"
    b"Date: Sat, 28 Nov 2026 08:00:00 +0000\n"
    b"Message-ID: <q3@acme.example>\n"
    b"\n"
    b"Hello Bob,\n"
    b"the figures are attached.  \n"
    b".leading dot line\n"
    b"\n"
)


def test_keygen_writes_private_key_and_prints_record(keys):
    rsa = keys["rsa-sha256"]
    assert stat.S_IMODE(os.stat(rsa).st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in rsa.read_bytes()
    assert b"BEGIN PUBLIC KEY" in Path(str(rsa) + ".pub").read_bytes()
    line = keys["rsa-sha256.stdout"]
    assert line.startswith("s1._domainkey.acme.example. IN TXT (")
    # The printed record, unquoted, is the record of the key.
    record = "".join(line.split("(", 1)[1].rsplit(")", 1)[0].split('"')[1::2])
    assert record == dkimkeys.dns_record(rsa.read_bytes())
    assert "k=ed25519" in keys["ed25519-sha256.stdout"]


def test_keygen_refuses_weak_rsa_and_overwrite(tmp_path, keys):
    weak = salvo(
        "dkim", "keygen", "--domain", "a.example", "--selector", "s", "--bits", "768",
        "--out", str(tmp_path / "weak.pem"),
    )  # fmt: skip
    assert weak.returncode == 2
    assert b"1024" in weak.stderr and b"RFC 8301" in weak.stderr
    assert not (tmp_path / "weak.pem").exists()
    again = salvo(
        "dkim", "keygen", "--domain", "a.example", "--selector", "s",
        "--out", str(keys["rsa-sha256"]),
    )  # fmt: skip
    assert again.returncode == 2 and b"--force" in again.stderr


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_sign_then_verify_round_trip(keys, algorithm):
    key = keys[algorithm]
    signed = salvo(
        "dkim", "sign", "--domain", "acme.example", "--selector", "s1", "--key", str(key),
        stdin=SAMPLE,
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    out = signed.stdout
    assert out.startswith(b"DKIM-Signature: ")
    assert b"\r\n" in out and b"\n" not in out.replace(b"\r\n", b"")  # LF input normalized
    assert f"a={algorithm}".encode() in out
    # Independent check: dkimpy with the key's record.
    assert all(r.valid for r in dkimkeys.verify(out, [key.read_bytes()]))
    for key_file in (key, Path(str(key) + ".pub")):
        ok = salvo("dkim", "verify", "--key", str(key_file), stdin=out)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert b"signature 1: d=acme.example s=s1" in ok.stdout and b"pass" in ok.stdout


def test_verify_reports_tampering_and_wrong_key(keys, tmp_path):
    rsa = keys["rsa-sha256"]
    signed = salvo(
        "dkim", "sign", "--domain", "acme.example", "--selector", "s1", "--key", str(rsa),
        stdin=SAMPLE,
    ).stdout  # fmt: skip
    tampered = signed.replace(b"Hello Bob", b"Hello Eve")
    bad = salvo("dkim", "verify", "--key", str(rsa), stdin=tampered)
    assert bad.returncode == 1 and b"FAIL" in bad.stdout
    prepended = b"Subject: urgent: pay now\r\n" + signed
    assert salvo("dkim", "verify", "--key", str(rsa), stdin=prepended).returncode == 1
    wrong = salvo("dkim", "verify", "--key", str(keys["ed25519-sha256"]), stdin=signed)
    assert wrong.returncode == 1
    # The key as a pasted TXT record file works too.
    record = tmp_path / "record.txt"
    record.write_text('"' + dkimkeys.dns_record(rsa.read_bytes()) + '"\n')
    assert salvo("dkim", "verify", "--key", str(record), stdin=signed).returncode == 0
    unsigned = salvo("dkim", "verify", "--key", str(rsa), stdin=SAMPLE)
    assert unsigned.returncode == 1 and b"no DKIM-Signature" in unsigned.stdout


def _write_template(folder: Path) -> Path:
    (folder / "body.html").write_text("<p>Hi {{ name }}, &amp; welcome</p>\n", encoding="utf-8")
    (folder / "terms.txt").write_bytes(b"terms and conditions\n")
    template = folder / "t.toml"
    template.write_text(
        """
from = "Acme <news@acme.example>"
subject = "Welcome, {{ name }}"
text = "Hello {{ name }},\\nyour code is {{ code }}.\\n"
html_file = "body.html"
[headers]
"Reply-To" = "help@acme.example"
[[attachments]]
path = "terms.txt"
""",
        encoding="utf-8",
    )
    return template


def test_render_prints_a_parseable_message(tmp_path):
    template = _write_template(tmp_path)
    variables = tmp_path / "v.json"
    variables.write_text(json.dumps({"to": "zoë@example.org", "vars": {"name": "Zoë", "code": 42}}))
    result = salvo("render", "--template", str(template), "--vars", str(variables))
    assert result.returncode == 0, result.stderr
    msg = email.message_from_bytes(result.stdout, policy=email.policy.default)
    assert msg["Subject"] == "Welcome, Zoë"
    assert msg["To"] == "zoë@example.org"
    assert msg["Reply-To"] == "help@acme.example"
    # The email package keeps the wire's CRLF inside decoded bodies.
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text == "Hello Zoë,\nyour code is 42.\n"
    assert "Hi Zoë" in msg.get_body(("html",)).get_content()
    attachments = list(msg.iter_attachments())
    assert [a.get_filename() for a in attachments] == ["terms.txt"]
    assert attachments[0].get_content() in ("terms and conditions\n", b"terms and conditions\n")


def test_render_errors_name_the_problem(tmp_path):
    template = _write_template(tmp_path)
    variables = tmp_path / "v.json"
    variables.write_text(json.dumps({"name": "Ann"}))
    missing = salvo(
        "render", "--template", str(template), "--vars", str(variables), "--to", "a@b.example"
    )
    assert missing.returncode == 2 and b"'code'" in missing.stderr
    no_to = salvo("render", "--template", str(template), "--vars", str(variables))
    assert no_to.returncode == 2 and b"--to" in no_to.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('from = "a@b.example"\nsubject = "x"\ntext = "y"\nsubjet = "typo"\n')
    typo = salvo("render", "--template", str(bad), "--to", "a@b.example")
    assert typo.returncode == 2 and b"'subjet'" in typo.stderr


def test_demo_runs_a_node_and_delivers_a_campaign(tmp_path):
    result = salvo(
        "demo", "--recipients", "300", "--check", "5", "--signers", "1",
        "--out", str(tmp_path / "d"),
    )  # fmt: skip
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert "messages/s rendered + signed" in out
    assert "recipients accepted (durable)  300" in out
    assert "messages at the sink           300" in out
    assert "duplicates at the sink         0" in out
    assert "Message-IDs = the replies'     yes" in out
    assert "DKIM verified by dkimpy        5 / 5" in out
    assert "MIME parsed by Python email    5 / 5" in out
    assert "accepted 300, delivered 300" in out
    assert "node stopped by SIGTERM        exit 0" in out
