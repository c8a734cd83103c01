"""docs/protocol.md is enough: a Node.js producer written from it talks to a ROUTER."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_client import HANG_GUARD, Server

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".node_modules-cache"  # gitignored; reused between runs
PACKAGES = ("zeromq@6", "@msgpack/msgpack@3")


@pytest.fixture(scope="session")
def node_modules() -> Path:
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.fail("Node.js and npm are missing: ./dev.sh test installs them (Debian nodejs, npm)")
    modules = CACHE / "node_modules"
    if not ((modules / "zeromq").is_dir() and (modules / "@msgpack" / "msgpack").is_dir()):
        npm = ["npm", "--prefix", str(CACHE), "--no-audit", "--no-fund"]
        done = subprocess.run(
            [*npm, "install", *PACKAGES], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            ping = subprocess.run([*npm, "ping"], capture_output=True, text=True, timeout=60)
            if ping.returncode != 0:
                pytest.skip(f"npm's registry cannot be reached: {ping.stderr.strip()[-300:]}")
            pytest.fail(f"npm install {' '.join(PACKAGES)} failed:\n{done.stderr[-2000:]}")
    return modules


def test_node_producer_written_from_the_docs(node_modules):
    with Server(retries=1, reverse=3) as server:
        done = subprocess.run(
            ["node", str(HERE / "producer.js"), server.endpoint, "5"],
            capture_output=True,
            text=True,
            timeout=HANG_GUARD,
            env={**os.environ, "NODE_PATH": str(node_modules)},
        )
    assert done.returncode == 0, done.stderr
    replies = {r["id"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert sorted(replies) == ["node-0", "node-1", "node-2", "node-3", "node-4", "node-raw"]
    assert {r["status"] for r in replies.values()} == {"accepted"}
    assert replies["node-1"]["accepted"][1]["to"] == "bob1@example.org"
    assert set(server.seen.values()) == {2}  # "retry" once, then resent with the same id

    jobs = {job.id: job for job in server.jobs}
    job = jobs["node-3"]
    assert (job.tenant, job.campaign, job.traffic) == ("acme", "spring", "marketing")
    assert job.from_ == "Acme <news@acme.example>" and job.return_path == "bounces@acme.example"
    assert job.headers == {"Reply-To": "help@acme.example"}
    assert job.recipients[0].vars == {"name": "Ann", "n": 3, "vip": True}
    assert job.recipients[1].message_id == "<bob-3@acme.example>"
    assert job.send_after == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert job.expires_in == 86400
    raw = jobs["node-raw"]
    assert raw.raw.startswith("From: a@acme.example\r\n") and raw.subject is None
    assert raw.not_before() == 1900000000.5


def test_the_documented_node_example_runs(node_modules, tmp_path):
    doc = (HERE.parent / "docs" / "protocol.md").read_text(encoding="utf-8")
    example = doc.split("```js\n", 1)[1].split("```", 1)[0]
    (tmp_path / "producer.js").write_text(example)
    with Server() as server:
        done = subprocess.run(
            ["node", str(tmp_path / "producer.js"), server.endpoint],
            capture_output=True,
            text=True,
            timeout=HANG_GUARD,
            env={**os.environ, "NODE_PATH": str(node_modules)},
        )
    assert done.returncode == 0, done.stderr
    [reply] = map(json.loads, done.stdout.splitlines())
    assert reply["status"] == "accepted" and reply["id"].startswith("node-")
    [job] = server.jobs
    assert job.recipients[0].vars == {"name": "Ann"}


def test_node_producer_with_curve(node_modules, tmp_path):
    """The same producer with CURVE keys (zeromq v6's curveServerKey, curvePublicKey,
    curveSecretKey) on a node with ``[ingress] curve``."""
    from nodeutil import AioSink, NodeSetup, running_node

    from salvo.actors.keys import generate

    with AioSink("127.0.0.2") as sink:
        setup = NodeSetup(
            tmp_path / "node",
            {"example.org": sink.address},
            ingress_extra="curve = true\n",
            extra='[producers.js]\npublic_key = "keys/js.key"\ntenants = ["acme", "default"]\n',
        )
        keys = setup.root / "keys"
        generate(keys, "js")
        setup.curve_probe = (keys / "node.key", keys / "js.key_secret")
        with running_node(setup):
            env = {**os.environ, "NODE_PATH": str(node_modules)}
            script = str(HERE / "producer.js")
            with_keys = [str(keys / "node.key"), str(keys / "js.key_secret")]
            done = subprocess.run(
                ["node", script, setup.endpoint, "2", *with_keys],
                capture_output=True,
                text=True,
                timeout=HANG_GUARD,
                env=env,
            )
            assert done.returncode == 0, done.stderr
            replies = {r["id"]: r for r in map(json.loads, done.stdout.splitlines())}
            assert sorted(replies) == ["node-0", "node-1", "node-raw"]
            assert {r["status"] for r in replies.values()} == {"accepted"}
