"""``/api/status``, ``salvo status`` and ``salvo top`` against a real node (aiosmtpd sink):
the status agrees with /api/kpis and the sink, the CLI prints it (tables and ``--json``),
``salvo top`` draws a frame in a real terminal (tmux) and quits on ``q``; a wrong token, an
unreachable node and bad calls get one clear line or a JSON error. Waits are bounded."""

from __future__ import annotations

import http.client
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from nodeutil import AioSink, NodeSetup, free_port, job, running_node, wait_for

from salvo.client import Producer

BOUND = 60.0
N = 10


def _get(port: int, path: str, token: str | None) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type", ""), r.read()
    finally:
        conn.close()


def _salvo(*args: str, env: dict | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "salvo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
    )


def test_status_api_and_cli_on_a_real_node(tmp_path: Path):
    port = free_port()
    with AioSink("127.0.0.2") as sink:
        setup = NodeSetup(
            tmp_path / "node",
            {"example.org": sink.address},
            extra=f'\n[http]\nlisten = "127.0.0.1:{port}"\n',
        )
        config = str(setup.config_path)
        with running_node(setup):
            token = (setup.root / "keys" / "http.token").read_text().strip()
            for given in (None, "wrong"):
                status, ctype, body = _get(port, "/api/status", given)
                assert status == 401 and "bearer token" in json.loads(body)["error"]
            status, _, body = _get(port, "/api/status?x=1", token)
            assert status == 400 and "error" in json.loads(body)
            status, ctype, body = _get(port, "/", None)  # the page holds no data
            assert status == 200 and ctype.startswith("text/html") and b"/dashboard.js" in body

            with Producer(setup.endpoint, timeout=30, attempts=3) as producer:
                jobs = [job("j1", [f"r{i}@example.org" for i in range(N)], campaign="spring")]
                assert {r.status for r in producer.submit_many(jobs)} == {"accepted"}

            def settled():
                s = json.loads(_get(port, "/api/status", token)[2])
                rows = s["kpis"]["campaigns"]["rows"]
                return s["queue"]["total"] == 0 and rows and rows[0]["sent"] == N and s

            s = wait_for(settled, BOUND, 0.2)
            assert s, "not delivered"
            assert len(sink.snapshot()) == N
            kpis = json.loads(_get(port, "/api/kpis?campaign=spring", token)[2])
            row = s["kpis"]["campaigns"]["rows"][0]
            assert (row["tenant"], row["campaign"]) == ("acme", "spring")
            for name in ("sent", "delivered", "delivery_rate", "hard_bounce_rate"):
                assert row[name] == kpis[name], name
            assert s["throughput"]["delivered_since_start"] == N
            assert s["throughput"]["series"][-1] + s["throughput"]["series"][-2] >= N
            # The alerts are /api/alerts' (the default rules: none fires here).
            alerts = json.loads(_get(port, "/api/alerts", token)[2])
            assert s["alerts"] == alerts and alerts["active"] == []
            assert {"complaint_rate", "hard_bounce_rate"} <= {r["kpi"] for r in alerts["rules"]}
            assert s["node"]["listen"]["http"] == f"127.0.0.1:{port}"
            assert sum(p["replies"].get("2xx", 0) for p in s["providers"]) == N

            assert _salvo("pause", "--provider", "google", "--config", config).returncode == 0

            done = _salvo("status", "--config", config)
            assert done.returncode == 0, done.stderr
            assert "PAUSED 1" in done.stdout and "google" in done.stdout
            spring = [line for line in done.stdout.splitlines() if " spring " in line]
            assert spring and f"  {N}  " in spring[0], done.stdout
            done = _salvo("status", "--json", "--config", config)
            assert done.returncode == 0, done.stderr
            answer = json.loads(done.stdout)
            assert answer["kpis"]["campaigns"]["rows"][0]["sent"] == N
            assert [p["name"] for p in answer["pauses"]] == ["google"]

            # One line and status 1: a wrong token, a node that is not there.
            url = f"http://127.0.0.1:{port}"
            env = {**os.environ, "SALVO_TOKEN": "wrong-token-wrong-token"}
            for command in ("status", "top"):
                bad = _salvo(command, "--url", url, env=env)
                assert bad.returncode == 1 and "refused the admin token" in bad.stderr
                assert len(bad.stderr.strip().splitlines()) == 1
            gone = _salvo("status", "--url", f"http://127.0.0.1:{free_port()}", env=env)
            assert gone.returncode == 1 and "not reachable" in gone.stderr

            # Not on a terminal: one frame.
            once = _salvo("top", "--config", config)
            assert once.returncode == 0 and "PAUSED 1" in once.stdout, once.stderr

            _top_in_tmux(tmp_path, config, setup.root)


def _top_in_tmux(tmp_path: Path, config: str, cwd: Path) -> None:
    """``salvo top`` in a real terminal: a frame shows, ``q`` quits with status 0."""
    if shutil.which("tmux") is None:
        pytest.skip("needs tmux (./dev.sh setup installs it)")
    sock = f"salvo-top-{os.getpid()}"
    rc_file = tmp_path / "top.rc"
    command = (
        f"cd {shlex.quote(str(cwd))} && {shlex.quote(sys.executable)} -m salvo top "
        f"--config {shlex.quote(config)}; echo $? > {shlex.quote(str(rc_file))}"
    )
    tmux = ["tmux", "-L", sock, "-f", "/dev/null"]
    subprocess.run(
        [*tmux, "new-session", "-d", "-x", "160", "-y", "50", command],
        check=True,
        timeout=30,
        env={**os.environ, "LANG": "C.UTF-8"},
    )
    try:

        def screen() -> str:
            out = subprocess.run(
                [*tmux, "capture-pane", "-p"], capture_output=True, text=True, timeout=30
            )
            return out.stdout

        text = wait_for(lambda: "q quits" in (s := screen()) and "PAUSED 1" in s and s, BOUND)
        assert text, screen()
        assert "CAMPAIGNS" in text and "spring" in text
        subprocess.run([*tmux, "send-keys", "q"], check=True, timeout=30)
        assert wait_for(lambda: rc_file.exists() and rc_file.read_text().strip(), BOUND) == "0"
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=30)
