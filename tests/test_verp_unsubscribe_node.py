"""VERP return paths and List-Unsubscribe headers through a real node and an SMTP sink.

Traffic classes with ``verp = true`` send each recipient with MAIL FROM ``b-TOKEN@`` the
bounce domain, whose token reads back (under the secret the node made on its first
start) to the recipient's spool key; classes with ``list_unsubscribe = true`` carry both
headers, DKIM-signed, with a URL token that reads back to (tenant, address). Other classes,
raw jobs and jobs with their own List-Unsubscribe are sent as before.
"""

from __future__ import annotations

import email
import email.policy
import stat
import subprocess
import sys
from pathlib import Path

from nodeutil import (
    FROM_DOMAIN,
    AioSink,
    NodeSetup,
    dkim_verify,
    header,
    job,
    running_node,
    wait_for,
)

from salvo.client import Producer
from salvo.core.feedback import tokens
from salvo.core.spool import Spool
from salvo.core.spool_env import Store

DELIVERY_BOUND = 90.0
BOUNCE_DOMAIN = "bounces.acme.example"
OTHER_BOUNCE = "b2.acme.example"
BASE_URL = "https://u.acme.example"

EXTRA = f"""
[feedback]
domains = ["{BOUNCE_DOMAIN}", "{OTHER_BOUNCE}"]

[unsubscribe]
base_url = "{BASE_URL}"

[traffic.verp]
verp = true

[traffic.verp2]
verp = true
verp_domain = "{OTHER_BOUNCE}"

[traffic.unsub]
list_unsubscribe = true

[traffic.both]
verp = true
list_unsubscribe = true
"""


def _dkim_h(message: bytes) -> list[str]:
    value = header(message, "DKIM-Signature") or ""
    tags = dict(
        part.strip().split("=", 1) for part in value.replace(" ", "").split(";") if "=" in part
    )
    return tags["h"].lower().split(":")


def test_verp_and_list_unsubscribe_through_a_node(tmp_path: Path):
    with AioSink("127.0.0.2") as sink:
        setup = NodeSetup(tmp_path / "node", {"example.org": sink.address}, extra=EXTRA)
        secret_path = setup.root / "keys" / "feedback.secret"
        assert not secret_path.exists()
        jobs = [
            job("plain", ["p0@example.org", "p1@example.org"]),
            job("verp", ["v0@example.org", "v1@example.org", "v2@example.org"], traffic="verp"),
            job("verp2", ["w0@example.org"], traffic="verp2"),
            job("unsub", ["u0@example.org", "U1 <U1@Example.org>"], traffic="unsub"),
            job("both", ["b0@example.org", "b1@example.org"], traffic="both", tenant="other"),
            job(
                "own",
                ["o0@example.org"],
                traffic="unsub",
                headers={"X-Test": "own", "List-Unsubscribe": "<mailto:off@acme.example>"},
            ),
            {
                "id": "raw",
                "tenant": "acme",
                "traffic": "both",
                "from": f"news@{FROM_DOMAIN}",
                "return_path": f"bounces@{FROM_DOMAIN}",
                "raw": f"From: news@{FROM_DOMAIN}\r\nTo: r0@example.org\r\n"
                "Subject: raw\r\n\r\nA raw message.\r\n",
                "recipients": [{"to": "r0@example.org"}],
            },
        ]
        with running_node(setup):
            # The node made the secret before its actors started: 32 bytes, mode 0600.
            secret = secret_path.read_bytes()
            assert len(secret) == 32
            assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
            with Producer(setup.endpoint, timeout=30, attempts=3) as producer:
                replies = {r.id: r for r in producer.submit_many(jobs)}
            assert {r.status for r in replies.values()} == {"accepted"}, replies
            expected = {
                a.message_id: (job_id, i, a.to)
                for job_id, r in replies.items()
                for i, a in enumerate(r.accepted)
            }
            wait_for(lambda: set(expected) <= set(sink.by_message_id()), DELIVERY_BOUND, 0.1)
            # The spool keys of every recipient, as the feedback listener resolves them.
            spool = Spool(Store(setup.data_dir))
            keys = {}
            for mid in expected:
                found = spool.find_message(mid)
                assert found is not None, mid
                keys[mid] = found[:2]
            spool.close()

        messages = {m.message_id: m for m in sink.snapshot()}
        assert set(messages) == set(expected)
        seqs: dict[str, set[int]] = {}
        for mid, m in messages.items():
            job_id, index, to = expected[mid]
            seq, idx = keys[mid]
            assert idx == index
            seqs.setdefault(job_id, set()).add(seq)
            address = to.rpartition("<")[2].rstrip(">")
            assert dkim_verify(m.content, setup.key_pem), f"DKIM fails for {job_id} {to}"
            parsed = email.message_from_bytes(m.content, policy=email.policy.default)
            unsubscribe = parsed.get_all("List-Unsubscribe") or []
            post = parsed.get_all("List-Unsubscribe-Post") or []

            # Envelope sender: VERP for the verp classes (raw jobs too: the envelope is
            # the node's), the job's return path otherwise.
            if job_id in ("verp", "verp2", "both", "raw"):
                local, _, domain = m.mail_from.partition("@")
                assert domain == (OTHER_BOUNCE if job_id == "verp2" else BOUNCE_DOMAIN)
                assert local.startswith("b-") and len(local) <= 64
                assert tokens.read_verp_address(secret, m.mail_from) == (seq, idx)
                assert tokens.read_verp_address(secret, m.mail_from.lower()) == (seq, idx)
            else:
                assert m.mail_from == f"bounces@{FROM_DOMAIN}"

            if job_id in ("unsub", "both"):
                assert len(unsubscribe) == 1 and post == ["List-Unsubscribe=One-Click"]
                url, mailto = (u.strip().strip("<>") for u in str(unsubscribe[0]).split(","))
                assert url.startswith(f"{BASE_URL}/u/")
                tenant = "other" if job_id == "both" else "acme"
                assert tokens.read_unsubscribe_token(secret, url.rpartition("/")[2]) == (
                    tenant,
                    address,
                )
                assert mailto.startswith("mailto:u-") and mailto.endswith(f"@{BOUNCE_DOMAIN}")
                assert tokens.read_unsubscribe_mailto(secret, mailto.removeprefix("mailto:")) == (
                    seq,
                    idx,
                )
                signed = _dkim_h(m.content)
                assert "list-unsubscribe" in signed and "list-unsubscribe-post" in signed
                # Over-signed: listed once more than present, so none can be added.
                assert signed.count("list-unsubscribe") == 2
                assert signed.count("list-unsubscribe-post") == 2
            elif job_id == "own":
                assert [str(u) for u in unsubscribe] == ["<mailto:off@acme.example>"]
                assert post == []
            else:
                assert unsubscribe == [] and post == []
            if job_id == "raw":
                assert header(m.content, "Subject") == "raw"
            else:
                assert header(m.content, "X-Test") == job_id
        assert all(len(s) == 1 for s in seqs.values()), seqs  # one seq per job
        assert len({next(iter(s)) for s in seqs.values()}) == len(seqs)  # distinct per job


def test_a_secret_file_that_cannot_be_read_stops_the_start(tmp_path: Path):
    setup = NodeSetup(tmp_path / "node", {}, extra=EXTRA)
    secret_path = setup.root / "keys" / "feedback.secret"
    secret_path.mkdir()  # a folder: unreadable as a file, for root too
    done = subprocess.run(
        [sys.executable, "-m", "salvo", "node", "--config", str(setup.config_path)],
        cwd=setup.root,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        start_new_session=True,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"salvo node: [feedback] secret_file {secret_path}: cannot read it: Is a directory"
    )
    assert "started core" not in done.stderr  # before any actor
