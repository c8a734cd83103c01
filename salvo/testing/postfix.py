"""Postfix's ``smtp-sink`` as a process: a fast SMTP server that accepts every message
and discards it, used as the provider of the benchmarks' clean rows.

It runs with ``-c`` (a running count of sessions and messages on its output, read by
:meth:`SmtpSink.received`) in its own process group, on a given loopback address and a
free port.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from salvo.testing.procs import free_port, stop_process, wait_listening

SMTP_SINK = "/usr/sbin/smtp-sink"


class SmtpSink:
    """A Postfix ``smtp-sink`` on (host, free port); its output goes to a file of
    ``folder``."""

    def __init__(self, folder: Path, host: str) -> None:
        if not Path(SMTP_SINK).exists():
            raise SystemExit(f"{SMTP_SINK} is missing: apt-get install postfix")
        self.host, self.port = host, free_port(host)
        self.out = folder / f"sink-{host}-{self.port}.txt"
        cmd = [SMTP_SINK, "-c"]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]  # smtp-sink refuses to run as root without it
        cmd += [f"{host}:{self.port}", "1000"]
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            wait_listening(host, self.port)
        except BaseException:
            self.stop()
            raise

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def received(self) -> int:
        """Messages received so far (the last ``mesg=`` of ``-c``)."""
        with open(self.out, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 200))
            counts = re.findall(rb"mesg=(\d+)", f.read())
        return int(counts[-1]) if counts else 0

    def stop(self) -> None:
        stop_process(self.proc, timeout=5)
