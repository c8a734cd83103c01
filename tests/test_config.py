"""The node's configuration: defaults, the example file, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from salvo.core.config import (
    ConfigError,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
)

ROOT = Path(__file__).resolve().parent.parent


def test_embedded_default_runs_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert config.data_dir == tmp_path / "salvo-data"
    assert config.ingress.listen == "tcp://127.0.0.1:5557"
    assert config.events.publish == "tcp://127.0.0.1:5558"
    assert config.route("example.org") is None
    assert config.dkim_keys("acme.example") == []
    assert config.traffic_class("anything").pool == "default"


def test_example_file_is_the_default_plus_comments():
    example = load_config(ROOT / "salvo.example.toml")
    default = load_config(None)
    for section in (
        "node",
        "ingress",
        "events",
        "spool",
        "retention",
        "delivery",
        "routes",
        "dkim",
        "content",
    ):
        assert getattr(example, section) == getattr(default, section), section
    assert example.pools == default.pools and example.traffic == default.traffic


def test_keys_used_from_outside(tmp_path):
    (tmp_path / "keys").mkdir()
    path = tmp_path / "node.toml"
    path.write_text(
        """
[node]
data_dir = "data"
[ingress]
listen = "tcp://127.0.0.1:6000"
[events]
publish = "tcp://127.0.0.1:6001"
[routes]
"Example.TEST" = "127.0.0.2:2525"
"*" = "[::1]:587"
[[dkim."acme.example"]]
selector = "s1"
private_key = "keys/s1.pem"
[[dkim."acme.example"]]
selector = "ed1"
private_key = "keys/ed1.pem"
algorithm = "ed25519-sha256"
[pools.default]
sources = ["127.0.0.1"]
ehlo = "mta.acme.example"
[pools.bulk]
sources = ["127.0.0.3", "127.0.0.4"]
[traffic.marketing]
pool = "bulk"
first_retry = "1m"
"""
    )
    config = load_config(path)
    assert config.data_dir == tmp_path / "data"
    assert config.route("example.test.") == ("127.0.0.2", 2525)  # any case, trailing dot
    assert config.route("other.example") == ("::1", 587)
    keys = config.dkim_keys("ACME.example")
    assert [k.selector for k in keys] == ["s1", "ed1"]
    assert config.path(keys[0].private_key) == tmp_path / "keys" / "s1.pem"
    assert config.traffic_class("marketing").pool == "bulk"
    assert parse_duration(config.traffic_class("marketing").first_retry) == 60
    assert config.pools["default"].ehlo == "mta.acme.example"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[node]\ndata_dirr = "x"', "[node] data_dirr: unknown key"),
        ('[ingres]\nlisten = "x"', "ingres: unknown key"),
        ('[ingress]\nmax_recipients = "many"', "[ingress] max_recipients: Expected `int`"),
        ('[traffic.bulk]\npool = "nope"', "[traffic.bulk] pool: no [pools.nope] is configured"),
        ('[spool]\nretention = "5 years"', "[spool] retention: '5 years' is not a duration"),
        ('[pools.default]\nsources = ["1.2.3"]', "[pools.default] sources: '1.2.3' is not an IP"),
        ('[routes]\n"a.example" = "host:port"', "[routes] 'a.example'"),
        ('[dkim."a.example"]\nselector = "s"\nprivate_key = "k"\nalgorithm = "rsa"', "algorithm"),
        ('[dkim."a.example"]\nselector = "s"', "private_key"),
        ("[node\n", "not valid TOML"),
        ('[ingress]\nmax_job_size = "lots"', "[ingress] max_job_size: 'lots' is not a size"),
        ('[retention]\nevents = "forever"', "[retention] events"),
        ('[retention]\nfinished = "x"', "[retention] finished"),
        ('[spool]\nretention = "1d"\n[retention]\nfinished = "2d"', "old name"),
    ],
)
def test_errors_name_the_key(text, message):
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="node.toml")
    assert message in str(info.value)
    assert str(info.value).startswith("node.toml: ")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(30, 30.0), ("90s", 90.0), ("5m", 300.0), ("1h", 3600.0), ("5d", 432000.0), ("250ms", 0.25)],
)
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


def test_sizes():
    assert parse_size("32MiB") == 32 * 1024 * 1024
    assert parse_size("1GB") == 10**9
    assert parse_size(4096) == 4096
    with pytest.raises(ConfigError):
        parse_duration(True)


def test_finished_retention_reads_the_old_name():
    assert parse_config('[spool]\nretention = "1d"').finished_retention() == 86400
    assert parse_config('[retention]\nfinished = "2d"').finished_retention() == 2 * 86400
    assert parse_config("").finished_retention() == 7 * 86400
    assert parse_config('[retention]\nevents = ""').events_retention() is None
