"""``salvo doctor`` against a real DNS server: dnsmasq on 127.0.0.1, serving a zone file
written by the test (one config file of ``txt-record``, ``mx-host``, ``host-record`` and
``ptr-record`` lines). Each setup is a domain of its own (``<case>.test``) with its own
source address (``127.0.0.N``), DKIM key, bounce domain and config: a correct setup that
passes, and broken setups, each reported with the right check failing and the right fix.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import pytest

from salvo.cli import main
from salvo.core import dkimkeys

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not Path(DNSMASQ).exists(), reason="dnsmasq is not installed (apt: dnsmasq)"
)


@dataclass
class Case:
    """A setup: the DNS records of ``<name>.test`` and its config, changed by ``edit``."""

    name: str
    source: str
    key: bytes
    algorithm: str = "ed25519-sha256"
    records: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, name, value)
    config: dict[str, str] = field(default_factory=dict)  # extra TOML, by section

    @property
    def domain(self) -> str:
        return f"{self.name}.test"

    @property
    def bounce(self) -> str:
        return f"bounces.{self.domain}"

    def drop(self, kind: str, name: str) -> None:
        self.records = [r for r in self.records if (r[0], r[1]) != (kind, name)]

    def replace(self, kind: str, name: str, *values: str) -> None:
        self.drop(kind, name)
        self.records += [(kind, name, v) for v in values]


def good_records(case: Case) -> None:
    d, n = case.domain, case.source
    spf = f"v=spf1 ip4:{n} -all"
    case.records = [
        ("txt", d, spf),
        ("txt", case.bounce, spf),
        ("txt", f"s1._domainkey.{d}", dkimkeys.dns_record(case.key)),
        ("txt", f"_dmarc.{d}", f"v=DMARC1; p=reject; rua=mailto:dmarc@{d}"),
        ("txt", f"_mta-sts.{d}", "v=STSv1; id=2024010101"),
        ("txt", f"_smtp._tls.{d}", f"v=TLSRPTv1; rua=mailto:tls@{d}"),
        ("mx", case.bounce, f"mx.{d},10"),
        ("host", f"mx.{d}", "127.0.0.250"),
        ("host", f"mta.{d}", n),  # the A record and the PTR
    ]


def _lookup_chain(case: Case) -> None:
    d = case.domain
    case.replace("txt", d, f"v=spf1 include:i1.{d} -all")
    for i in range(1, 11):
        case.records.append(("txt", f"i{i}.{d}", f"v=spf1 include:i{i + 1}.{d} ?all"))
    case.records.append(("txt", f"i11.{d}", f"v=spf1 ip4:{case.source} -all"))


def _other_key(case: Case) -> None:
    other = dkimkeys.generate_private_key("ed25519-sha256")
    case.replace("txt", f"s1._domainkey.{case.domain}", dkimkeys.dns_record(other))


def _unaligned(case: Case) -> None:
    other = f"{case.name}-mail.test"
    case.config["feedback"] = f'domains = ["{other}"]'
    case.records += [
        ("txt", other, f"v=spf1 ip4:{case.source} -all"),
        ("mx", other, f"mx.{case.domain},10"),
    ]


def _ptr_to_other(case: Case) -> None:
    case.drop("host", f"mta.{case.domain}")
    case.records += [
        ("ptr", case.source, f"mta.{case.domain}"),
        ("host", f"mta.{case.domain}", "127.0.0.251"),
    ]


# name -> (edit, the checks that fail, a piece of the first failing check's fix)
BROKEN: dict[str, tuple[Callable[[Case], None], set[str], str]] = {
    "nospf": (
        lambda c: c.drop("txt", c.domain),
        {"spf.record"},
        'nospf.test. IN TXT "v=spf1 ip4:{source} -all"',
    ),
    "twospf": (
        lambda c: c.records.append(("txt", c.domain, "v=spf1 a mx -all")),
        {"spf.record"},
        'delete all but one; merged into one they read: twospf.test. IN TXT "v=spf1 a mx '
        'ip4:{source} -all"',
    ),
    "spfmissing": (
        lambda c: c.replace("txt", c.domain, "v=spf1 ip4:192.0.2.1 -all"),
        {"spf.source"},
        'spfmissing.test. IN TXT "v=spf1 ip4:192.0.2.1 ip4:{source} -all"',
    ),
    "spfplusall": (
        lambda c: c.replace("txt", c.domain, f"v=spf1 ip4:{c.source} +all"),
        {"spf.all"},
        'spfplusall.test. IN TXT "v=spf1 ip4:{source} -all"',
    ),
    "spflookups": (_lookup_chain, {"spf.lookups", "spf.source"}, "flatten"),
    "nodkim": (
        lambda c: c.drop("txt", f"s1._domainkey.{c.domain}"),
        {"dkim.record"},
        'publish s1._domainkey.nodkim.test. IN TXT ( "v=DKIM1; k=ed25519; p=',
    ),
    "dkimmismatch": (
        _other_key,
        {"dkim.key"},
        'publish s1._domainkey.dkimmismatch.test. IN TXT ( "{dkim}" )',
    ),
    "dkimmalformed": (
        lambda c: c.replace("txt", f"s1._domainkey.{c.domain}", "v=DKIM1; k=ed25519; p=%%%"),
        {"dkim.record"},
        'publish s1._domainkey.dkimmalformed.test. IN TXT ( "{dkim}" )',
    ),
    "nodmarc": (
        lambda c: c.drop("txt", f"_dmarc.{c.domain}"),
        {"dmarc.record"},
        'publish _dmarc.nodmarc.test. IN TXT "v=DMARC1; p=none; '
        'rua=mailto:dmarc-reports@nodmarc.test"',
    ),
    "dmarcmalformed": (
        lambda c: c.replace("txt", f"_dmarc.{c.domain}", "v=DMARC1; p=maybe"),
        {"dmarc.record"},
        'replace it: _dmarc.dmarcmalformed.test. IN TXT "v=DMARC1; p=none;',
    ),
    "unaligned": (
        _unaligned,
        {"dmarc.spf_alignment"},
        'add "bounces.unaligned.test" to [feedback] domains and set [traffic.default] '
        'verp_domain = "bounces.unaligned.test"',
    ),
    "nobouncemx": (
        lambda c: c.drop("mx", c.bounce),
        {"bounce.mx"},
        "publish bounces.nobouncemx.test. IN MX 10 mta.nobouncemx.test.",
    ),
    "mxnoaddress": (
        lambda c: c.drop("host", f"mx.{c.domain}"),
        {"bounce.mx"},
        "publish mx.mxnoaddress.test. IN A",
    ),
    "noptr": (
        lambda c: c.drop("host", f"mta.{c.domain}"),
        {"ptr.exists"},
        "PTR mta.noptr.test. and publish mta.noptr.test. IN A {source}",
    ),
    "ptrnoforward": (
        lambda c: (
            c.replace("ptr", c.source, f"mta.{c.domain}") or c.drop("host", f"mta.{c.domain}")
        ),
        {"ptr.forward"},
        "publish mta.ptrnoforward.test. IN A {source}",
    ),
    "ptrother": (_ptr_to_other, {"ptr.forward"}, "publish mta.ptrother.test. IN A {source}"),
    "ehlomismatch": (
        lambda c: c.config.update(pool='ehlo = "smtp.ehlomismatch.test"'),
        {"ptr.ehlo"},
        'set [pools.default] ehlo = "mta.ehlomismatch.test"',
    ),
    "mtastsbad": (
        lambda c: c.replace("txt", f"_mta-sts.{c.domain}", "v=STSv1; id=not-valid!"),
        {"mta_sts"},
        'publish e.g. _mta-sts.mtastsbad.test. IN TXT "v=STSv1; id=1"',
    ),
}

# name -> (edit, the checks that warn); nothing fails: exit 0
WARNED: dict[str, tuple[Callable[[Case], None], set[str]]] = {
    "dmarcnone": (
        lambda c: c.replace("txt", f"_dmarc.{c.domain}", "v=DMARC1; p=none; rua=mailto:d@x.test"),
        {"dmarc.policy"},
    ),
    "spfneutral": (
        lambda c: c.replace("txt", c.domain, f"v=spf1 ip4:{c.source} ?all"),
        {"spf.all"},
    ),
}  # fmt: skip


def _zone_lines(records: list[tuple[str, str, str]]) -> list[str]:
    lines = []
    for kind, name, value in records:
        if kind == "txt":
            chunks = [value[i : i + 250] for i in range(0, len(value), 250)]
            lines.append(f"txt-record={name}," + ",".join(f'"{c}"' for c in chunks))
        elif kind == "mx":
            lines.append(f"mx-host={name},{value}")
        elif kind == "host":
            lines.append(f"host-record={name},{value}")
        elif kind == "ptr":
            reverse = ".".join(reversed(name.split("."))) + ".in-addr.arpa"
            lines.append(f"ptr-record={reverse},{value}")
    return lines


def _free_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


@dataclass
class World:
    port: int
    folder: Path
    cases: dict[str, Case]

    def config(self, case: Case, **extra: str) -> Path:
        sections = {**case.config, **extra}
        text = f"""
[node]
hostname = "mta.{case.domain}"
data_dir = "data"
[dns]
nameservers = ["127.0.0.1:{self.port}"]
timeout = "5s"
[dkim."{case.domain}"]
selector = "s1"
private_key = "{case.name}.pem"
algorithm = "{case.algorithm}"
[pools.default]
sources = ["{case.source}"]
{sections.get("pool", "")}
[feedback]
{sections.get("feedback", f'domains = ["{case.bounce}"]')}
[traffic.default]
verp = true
{sections.get("traffic", "")}
"""
        (self.folder / f"{case.name}.pem").write_bytes(case.key)
        path = self.folder / f"{case.name}.toml"
        path.write_text(text)
        return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("doctor")
    cases: dict[str, Case] = {}
    names = ["good", *BROKEN, *WARNED]
    for index, name in enumerate(names):
        good = name == "good"
        key = dkimkeys.generate_private_key(
            *(("rsa-sha256", 2048) if good else ("ed25519-sha256",))
        )
        case = Case(name, f"127.0.0.{10 + index}", key, "rsa-sha256" if good else "ed25519-sha256")
        good_records(case)
        edit = BROKEN.get(name, WARNED.get(name, (None,)))[0]
        if edit is not None:
            edit(case)
        cases[name] = case
    lines = ["local=/test/", "local=/0.0.127.in-addr.arpa/"]
    for case in cases.values():
        lines += _zone_lines(case.records)
    zone = folder / "zone.conf"
    zone.write_text("\n".join(lines) + "\n")
    port = _free_port()
    log = open(folder / "dnsmasq.log", "w")  # noqa: SIM115 (open while dnsmasq runs)
    proc = subprocess.Popen(
        [
            DNSMASQ, "--keep-in-foreground", "--no-daemon", f"--conf-file={zone}",
            "--no-resolv", "--no-hosts", "--no-poll", "--pid-file=", "--bind-interfaces",
            "--listen-address=127.0.0.1", f"--port={port}", "--log-facility=-",
        ],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        query = dns.message.make_query("good.test", "TXT")
        while True:
            assert proc.poll() is None, (folder / "dnsmasq.log").read_text()
            try:
                dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2)
                break
            except (OSError, dns.exception.Timeout):
                assert time.monotonic() < deadline, "dnsmasq did not answer"
                time.sleep(0.05)
        yield World(port, folder, cases)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def run_doctor(world: World, case: Case, capsys, *args: str) -> tuple[int, list[dict]]:
    status = main(["doctor", "--config", str(world.config(case)), "--json", *args])
    return status, json.loads(capsys.readouterr().out)


def test_a_correct_setup_passes(world: World) -> None:
    """Through the installed command, as an operator runs it: a table, exit 0."""
    case = world.cases["good"]
    proc = subprocess.run(
        [sys.executable, "-m", "salvo", "doctor", "--config", str(world.config(case))],
        capture_output=True, text=True, timeout=60, cwd=world.folder,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["STATUS", "CHECK", "SUBJECT", "DETAIL"]
    assert not [ln for ln in lines if ln.startswith(("FAIL", "WARN"))], proc.stdout
    for check in ("spf.source", "dkim.key", "dmarc.dkim_alignment", "dmarc.spf_alignment",
                  "bounce.mx", "ptr.forward", "ptr.ehlo", "mta_sts", "tls_rpt"):  # fmt: skip
        assert any(ln.startswith("PASS") and f" {check} " in ln for ln in lines), check
    assert "RSA 2048 bits" in proc.stdout
    assert "0 warn, 0 fail" in lines[-1], lines[-1]


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_setup_fails_with_its_fix(world: World, capsys, name: str) -> None:
    case = world.cases[name]
    _edit, failing, fix = BROKEN[name]
    status, results = run_doctor(world, case, capsys)
    failed = [r for r in results if r["status"] == "fail"]
    assert status == 1, results
    assert {r["check"] for r in failed} == failing, failed
    dkim = dkimkeys.dns_record(case.key)
    expected = fix.format(source=case.source, dkim=dkim)
    first = next(r for r in failed if r["check"] == sorted(failing)[0])
    assert expected in first["fix"], first
    assert first["detail"] and first["subject"]


@pytest.mark.parametrize("name", sorted(WARNED))
def test_a_warning_does_not_fail(world: World, capsys, name: str) -> None:
    status, results = run_doctor(world, world.cases[name], capsys)
    assert status == 0, [r for r in results if r["status"] == "fail"]
    warned = {r["check"] for r in results if r["status"] == "warn"}
    assert warned == WARNED[name][1]
    assert all(r["fix"] for r in results if r["status"] == "warn")


def test_an_extra_domain_without_a_key(world: World, capsys) -> None:
    status, results = run_doctor(world, world.cases["good"], capsys, "--domain", "nospf.test")
    assert status == 1
    failed = {(r["check"], r["subject"]) for r in results if r["status"] == "fail"}
    assert ("dkim.key", "nospf.test") in failed  # no key configured for it
    assert ("dmarc.dkim_alignment", "nospf.test") in failed
    assert not [s for c, s in failed if s.startswith("good.test")]


def test_an_unreachable_nameserver_is_a_failure_not_a_crash(world: World, capsys) -> None:
    case = world.cases["good"]
    path = world.config(case)
    path.write_text(
        path.read_text()
        .replace(f"127.0.0.1:{world.port}", f"127.0.0.1:{_free_port()}")
        .replace('timeout = "5s"', 'timeout = "0.3s"')
    )
    status = main(["doctor", "--config", str(path), "--json"])
    results = json.loads(capsys.readouterr().out)
    assert status == 1
    # only the key's size is known without DNS
    assert all(r["status"] in ("fail", "info") for r in results if r["check"] != "dkim.size")
    assert any("DNS error" in r["detail"] for r in results)


def test_usage_errors_exit_2(world: World, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[dns]\nnameservers = ['nope']\n")
    assert main(["doctor", "--config", str(bad)]) == 2
    assert "nameservers" in capsys.readouterr().err
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert main(["doctor", "--config", str(empty)]) == 2
    assert "--domain" in capsys.readouterr().err
    assert main(["doctor", "--config", str(empty), "--domain", "not a domain"]) == 2


def test_a_bulk_class_runs_the_doctor_at_start(world: World, capsys) -> None:
    """Without a bulk class nothing is asked of DNS; with one, failures are a warning
    naming each failed check, and a correct setup passes silently."""
    from salvo.cli.node import _bulk_rules
    from salvo.core.config import load_config

    broken = world.config(world.cases["nodkim"])
    _bulk_rules(load_config(broken), str(broken))  # not bulk: no DNS, no output
    assert capsys.readouterr().err == ""
    bulk = world.config(world.cases["nodkim"], traffic="bulk = true")
    _bulk_rules(load_config(bulk), str(bulk))
    err = capsys.readouterr().err
    assert "warning: 1 sender-authentication check(s) that bulk traffic (default) needs" in err
    assert "dkim.record s1._domainkey.nodkim.test" in err and "salvo doctor --config" in err
    good = world.config(world.cases["good"], traffic="bulk = true\nstrict = true")
    _bulk_rules(load_config(good), str(good))
    assert capsys.readouterr().err == ""


def test_a_strict_bulk_class_refuses_to_start_a_node(world: World) -> None:
    path = world.config(world.cases["nodmarc"], traffic="bulk = true\nstrict = true")
    proc = subprocess.run(
        [sys.executable, "-m", "salvo", "node", "--config", str(path)],
        capture_output=True, text=True, timeout=60, cwd=world.folder,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("salvo node:")]
    assert "traffic class 'default' is bulk and strict" in line
    assert "dmarc.record nodmarc.test: no DMARC record" in line and "prints the fixes" in line
