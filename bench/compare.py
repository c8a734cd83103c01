"""The alternatives of ``salvo bench --compare``, measured in the same run on the same
kind of sinks (``docs/bench.md``):

- ``smtp-source -> smtp-sink``: Postfix's load generator into Postfix's sink, 4 KB,
  50 reused sessions: the raw SMTP limit of the machine (no MIME, DKIM or spool).
- ``postfix relay``: a private Postfix instance configured here in a temporary folder
  (its own main.cf and master.cf, queue on disk, smtpd on 127.0.0.71, relayhost the
  smart sink on 127.0.0.72, destination concurrency 100), fed by ``smtp-source`` with
  4 KB messages; DKIM through an OpenDKIM milter when ``opendkim`` is installed (the
  sink verifies a sample), else the row says "no DKIM". Stopped at the end whatever
  happens (``postfix -c DIR stop``, then ``abort``, then SIGKILL to its master).
- ``naive python``: ``bench/naive.py`` (asyncio + aiosmtplib + ``email`` + dkimpy),
  32 connections like salvo's default per route, into a smart sink on 127.0.0.73.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from salvo.bench import harness
from salvo.bench.harness import PROGRESS
from salvo.core.dkimkeys import generate_private_key
from salvo.testing.procs import cpu_seconds, free_port, stop_process, wait_listening
from salvo.testing.smartsink import SmartSink

CEILING_HOST = "127.0.0.70"
RELAY_HOST = "127.0.0.71"
RELAY_SINK_HOST = "127.0.0.72"
NAIVE_HOST = "127.0.0.73"
POSTFIX = "/usr/sbin/postfix"
OPENDKIM = "/usr/sbin/opendkim"


def _wait_sink(sink, messages: int, timeout: float, label: str) -> float:
    start = time.perf_counter()
    while (got := sink.received()) < messages:
        elapsed = time.perf_counter() - start
        PROGRESS.show(f"{label}: {elapsed:6.1f} s  delivered {got:,}/{messages:,}")
        if elapsed > timeout:
            raise RuntimeError(f"{label}: the sink got {got} of {messages} in {timeout:.0f} s")
        time.sleep(0.05)
    return time.perf_counter()


# -- Postfix as a relay ---------------------------------------------------------------------


def _master_cf(smtpd: str) -> str:
    """Debian's master.cf with the public smtpd replaced by ours, and no chroot."""
    out = [f"{smtpd} inet n - n - - smtpd"]
    for line in Path("/etc/postfix/master.cf").read_text().splitlines():
        if not line or line[0] in "# \t":
            out.append(line)
            continue
        fields = line.split()
        if fields[0] == "smtp" and fields[1] == "inet":
            continue  # port 25: never
        if len(fields) >= 8:
            fields[4] = "n"
            line = " ".join(fields[:8]) + (" " + " ".join(fields[8:]) if fields[8:] else "")
        out.append(line)
    return "\n".join(out) + "\n"


class OpenDKIM:
    """An OpenDKIM milter signing for acme.example with a fresh RSA-2048 key."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir()
        self.key = folder / "pf.private"
        self.key.write_bytes(generate_private_key("rsa-sha256", 2048))
        os.chmod(self.key, 0o600)
        self.port = free_port()
        conf = folder / "opendkim.conf"
        conf.write_text(
            f"Syslog no\nMode s\nDomain {harness.FROM_DOMAIN}\nSelector pf\n"
            f"KeyFile {self.key}\nSocket inet:{self.port}@127.0.0.1\n"
            f"PidFile {folder / 'opendkim.pid'}\nCanonicalization relaxed/relaxed\n"
            "InternalHosts 127.0.0.0/8\nSignatureAlgorithm rsa-sha256\n"
            "RequireSafeKeys false\n"  # the key is in a private temporary folder under /tmp
        )
        self.log = folder / "opendkim.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [OPENDKIM, "-f", "-x", str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_listening("127.0.0.1", self.port)
        except BaseException:
            self.stop()
            raise RuntimeError(f"opendkim did not start: {self.log.read_text()[-300:]}") from None

    def stop(self) -> None:
        stop_process(self.proc, timeout=5)


class PostfixRelay:
    """A private Postfix instance in ``folder`` relaying everything to ``relayhost``."""

    def __init__(self, folder: Path, relayhost: str, milter: str | None) -> None:
        self.dir = folder / "etc"
        self.dir.mkdir(parents=True)
        self.queue = folder / "queue"
        self.host, self.port = RELAY_HOST, free_port(RELAY_HOST)
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(folder / "lib"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "relay.bench.test",
            "mydomain": "bench.test",
            "myorigin": "bench.test",
            "mydestination": "",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "relayhost": relayhost,
            "default_destination_concurrency_limit": "100",
            "default_process_limit": "200",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "syslog_name": "postfix-salvo-bench",
            "maillog_file": str(folder / "maillog"),
            "maillog_file_prefixes": str(folder),
            "milter_default_action": "tempfail",
        }
        if milter:
            main["smtpd_milters"] = milter
        (self.dir / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main.items()))
        (self.dir / "master.cf").write_text(_master_cf(f"{self.host}:{self.port}"))
        self.queue.mkdir()
        (folder / "lib").mkdir()
        shutil.chown(folder / "lib", "postfix")  # Postfix's data_directory: its own
        self.maillog = folder / "maillog"
        try:
            self._postfix("start", check=True)
            wait_listening(self.host, self.port, timeout=30)
        except BaseException:
            self.stop()
            raise

    def _postfix(self, action: str, check: bool = False) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [POSTFIX, "-c", str(self.dir), action], capture_output=True, text=True, timeout=60
        )
        if check and proc.returncode:
            log = self.maillog.read_text()[-300:] if self.maillog.exists() else ""
            raise RuntimeError(f"postfix {action}: {(proc.stderr or proc.stdout or log).strip()}")
        return proc

    def pids(self) -> list[int]:
        """Processes whose working directory is our queue (the master and its daemons)."""
        out = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/cwd") == str(self.queue):
                        out.append(int(pid))
        return out

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def stop(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            self._postfix("stop")
        for _ in range(50):
            if not self.pids():
                return
            time.sleep(0.1)
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            self._postfix("abort")
        for pid in self.pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def postfix_row(tmp: Path, messages: int, with_dkim: bool = True) -> dict:
    if not Path(POSTFIX).exists():
        return {"error": "postfix is not installed (apt-get install postfix)"}
    if os.geteuid() != 0:
        return {"error": "a private Postfix instance needs root"}
    folder = tmp / ("postfix-dkim" if with_dkim else "postfix")
    folder.mkdir()
    for path in (tmp, folder):
        os.chmod(path, 0o755)  # Postfix's daemons (user postfix) reach their data_directory
    with contextlib.ExitStack() as stack:
        dkim, why = None, ""
        if not with_dkim:
            why = "no DKIM (the target compares with Postfix without DKIM)"
        elif Path(OPENDKIM).exists():
            try:
                dkim = OpenDKIM(folder / "opendkim")
                stack.callback(dkim.stop)
            except (RuntimeError, OSError) as exc:
                why = f"no DKIM: {exc}"[:200]
        else:
            why = "no DKIM: opendkim is not installed (apt-get install opendkim)"
        sink = SmartSink(folder, RELAY_SINK_HOST, {}, dkim.key if dkim else None)
        stack.callback(sink.stop)
        milter = f"inet:127.0.0.1:{dkim.port}" if dkim else None
        relay = PostfixRelay(folder, f"[{sink.host}]:{sink.port}", milter)
        stack.callback(relay.stop)
        cpu0 = relay.cpu()
        start = time.perf_counter()
        harness.smtp_source(relay.host, relay.port, messages, 50, 4096)
        accepted = time.perf_counter()
        end = _wait_sink(sink, messages, 120 + messages / 50, "postfix relay")
        postfix_cpu = relay.cpu() - cpu0
        dkim_cpu = cpu_seconds(dkim.proc.pid) if dkim else 0.0
        stats = sink.finish()
    seconds = end - start
    row = {
        "kind": "alternative",
        "messages": messages,
        "seconds": seconds,
        "msg_per_s": messages / seconds,
        "accepted_per_s": messages / (accepted - start),
        "sink": stats,
        "cpu_s": {"postfix (live processes)": postfix_cpu, "opendkim": dkim_cpu},
        "dkim": bool(dkim),
        "note": why
        or f"DKIM by OpenDKIM milter: {stats.get('dkim_valid', 0)}/"
        f"{stats.get('dkim_checked', 0)} sampled signatures valid",
    }
    return row


# -- naive Python ---------------------------------------------------------------------------


def naive_row(tmp: Path, messages: int, concurrency: int = 32) -> dict:
    try:
        import aiosmtplib  # noqa: F401
    except ImportError:
        return {"error": "aiosmtplib is not installed (pip install aiosmtplib)"}
    folder = tmp / "naive"
    folder.mkdir()
    key = folder / "naive.pem"
    key.write_bytes(generate_private_key("rsa-sha256", 2048))
    with contextlib.ExitStack() as stack:
        sink = SmartSink(folder, NAIVE_HOST, {}, key)
        stack.callback(sink.stop)
        cmd = [sys.executable, "-m", "salvo.bench.naive", sink.host, str(sink.port)]
        cmd += ["--messages", str(messages), "--concurrency", str(concurrency)]
        cmd += ["--key", str(key)]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode:
            raise RuntimeError(f"naive sender failed: {proc.stderr[-300:]}")
        end = time.perf_counter()
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        stats = sink.finish()
    if stats.get("messages") != messages:
        raise RuntimeError(f"naive sender: the sink got {stats.get('messages')} of {messages}")
    seconds = end - start
    return {
        "kind": "alternative",
        "messages": messages,
        "seconds": seconds,
        "msg_per_s": messages / seconds,
        "cpu_s": {"naive sender": out["cpu"]},
        "sink": stats,
        "note": f"{concurrency} connections, DKIM RSA-2048 by dkimpy: "
        f"{stats.get('dkim_valid', 0)}/{stats.get('dkim_checked', 0)} sampled valid",
    }


def ceiling(tmp: Path, messages: int) -> dict:
    row = harness.ceiling_row(tmp, CEILING_HOST, messages)
    return row | {"kind": "alternative", "note": "raw SMTP: 50 reused sessions, no MIME/DKIM"}


def run_all(tmp: Path, rows: dict, size: dict, step, opts) -> None:
    step("smtp-source -> smtp-sink", lambda: ceiling(tmp, size["ceiling"]))
    step("postfix relay", lambda: postfix_row(tmp, size["postfix"], with_dkim=False))
    step("postfix relay + opendkim", lambda: postfix_row(tmp, size["postfix"]))
    step("naive python", lambda: naive_row(tmp, size["naive"]))
    del rows, opts
