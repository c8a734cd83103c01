"""Providers: MX patterns, MX-set grouping, static routes, and config overrides."""

from __future__ import annotations

import pytest

from salvo.core.config import ConfigError, parse_config
from salvo.core.providers import DEFAULT_PROVIDERS, ProviderTable, mx_key, route_key
from salvo.core.shaping import Limits

TABLE = ProviderTable.build()


@pytest.mark.parametrize(
    ("hosts", "provider"),
    [
        (["gmail-smtp-in.l.google.com", "alt1.gmail-smtp-in.l.google.com"], "google"),
        (["ASPMX.L.GOOGLE.COM."], "google"),  # a Workspace domain; case and root dot
        (["aspmx2.googlemail.com"], "google"),
        (["acme-example.mail.protection.outlook.com"], "microsoft"),  # Microsoft 365
        (["hotmail-com.olc.protection.outlook.com"], "microsoft"),
        (["mta5.am0.yahoodns.net", "mta6.am0.yahoodns.net"], "yahoo"),
        (["mx-aol.mail.gm0.yahoodns.net"], "yahoo"),
        (["mx01.mail.icloud.com"], "apple"),
        (["mx00.gmx.net"], "gmx"),
        (["mx-ha03.web.de"], "gmx"),
        (["mxs.mail.ru"], "mailru"),
        (["mx.yandex.ru"], "yandex"),
        (["mx.zoho.com"], "zoho"),
        (["in1-smtp.messagingengine.com"], "fastmail"),
        (["mail.protonmail.ch"], "proton"),
        (["mx1.comcast.net"], "comcast"),
        # A backup MX elsewhere does not hide the provider of a later host.
        (["mx.backup.example", "aspmx.l.google.com"], "google"),
    ],
)
def test_mx_patterns(hosts: list[str], provider: str):
    assert TABLE.classify(hosts) == provider


def test_patterns_are_whole_names_not_substrings():
    # "*.google.com" must not match a look-alike.
    assert TABLE.classify(["mx.google.com.evil.example"]).startswith("mx:")
    assert TABLE.classify(["notgoogle.com"]).startswith("mx:")


def test_unknown_domains_group_by_their_mx_set():
    a = TABLE.classify(["mx2.hoster.example", "mx1.hoster.example"])
    b = TABLE.classify(["MX1.hoster.example.", "mx2.hoster.example"])
    c = TABLE.classify(["mx1.hoster.example"])
    assert a == b == "mx:mx1.hoster.example,mx2.hoster.example"
    assert c != a  # another MX set: another provider
    assert mx_key(["b.example", "a.example", "a.example"]) == "mx:a.example,b.example"


def test_unknown_and_route_providers_take_the_default_limits():
    table = ProviderTable.build({"default": {"max_connections": 7}}, Limits(max_connections=3))
    assert table.get(mx_key(["mx.example"])).limits.max_connections == 7
    assert table.get(route_key("127.0.0.2", 2525)).name == "route:127.0.0.2:2525"
    assert table.get(route_key("127.0.0.2", 2525)).limits.max_connections == 7
    assert (
        ProviderTable.build({}, Limits(max_connections=3)).get("mx:x").limits.max_connections == 3
    )


def test_every_builtin_provider_has_patterns_and_limits():
    for name in DEFAULT_PROVIDERS:
        provider = TABLE.get(name)
        assert provider.mx and provider.throttle
        assert 1 <= provider.limits.max_connections <= 10
        assert provider.limits.max_messages_per_second > 0


def config(text: str):
    return parse_config(text, source="node.toml")


def test_config_overrides_a_builtin_provider_and_adds_one():
    cfg = config(
        """
[delivery]
max_connections = 12

[providers.google]
max_connections = 2
max_messages_per_hour = 5000
backoff_time = "10m"

[providers.hoster]
mx = ["*.hoster.example"]
max_messages_per_second = 3
throttle = ["slow down"]

[providers.default]
max_messages_per_connection = 10
"""
    )
    table = cfg.provider_table()
    google = table.get("google")
    assert google.limits.max_connections == 2
    assert google.limits.max_messages_per_hour == 5000
    assert google.limits.backoff_time == 600
    assert google.limits.max_messages_per_connection == 50  # the built-in value stays
    assert google.mx == tuple(DEFAULT_PROVIDERS["google"]["mx"])
    assert table.classify(["mx1.hoster.example"]) == "hoster"
    hoster = table.get("hoster")
    assert hoster.limits.max_messages_per_second == 3
    assert hoster.limits.max_connections == 12  # from [delivery]
    assert hoster.limits.max_messages_per_connection == 10  # from [providers.default]
    assert table.get("mx:other.example").limits.max_messages_per_connection == 10


def test_config_new_provider_is_matched_before_builtin_ones():
    cfg = config('[providers.myworkspace]\nmx = ["aspmx.l.google.com"]\n')
    table = cfg.provider_table()
    assert table.classify(["aspmx.l.google.com"]) == "myworkspace"
    assert table.classify(["alt1.aspmx.l.google.com"]) == "google"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[providers.google]\nmax_conections = 2\n",
            "[providers.google] max_conections: unknown key",
        ),
        (
            "[providers.google]\nmax_connections = 0\n",
            "[providers.google] max_connections: must be 1",
        ),
        (
            "[providers.google]\nmax_messages_per_second = -1\n",
            "[providers.google] max_messages_per_second",
        ),
        ('[providers.x]\nthrottle = ["(unclosed"]\n', "[providers.x] throttle: '(unclosed'"),
        ('[providers.x]\nmx = ["two words"]\n', "[providers.x] mx: 'two words'"),
        ('[providers.x]\nbackoff_time = "soon"\n', "[providers.x] backoff_time: 'soon'"),
        ('[providers.default]\nmx = ["*.example"]\n', "[providers.default] mx"),
        ("[providers.x]\nmax_ready = -1\n", "[providers.x] max_ready"),
        ('[pools.default]\nsources = ["192.0.2.1"]\nweights = [1, 2]\n', "[pools.default] weights"),
        ('[pools.default]\nsources = ["192.0.2.1"]\nweights = [0]\n', "[pools.default] weights"),
    ],
)
def test_config_errors_name_the_key(text: str, message: str):
    with pytest.raises(ConfigError) as info:
        config(text)
    assert message in str(info.value)
    assert str(info.value).startswith("node.toml: ")


def test_pool_weights():
    cfg = config('[pools.default]\nsources = ["192.0.2.1", "192.0.2.2"]\nweights = [3, 1]\n')
    assert cfg.pools["default"].weighted_sources() == [("192.0.2.1", 3), ("192.0.2.2", 1)]
    cfg = config('[pools.default]\nsources = ["192.0.2.1", "192.0.2.2"]\n')
    assert cfg.pools["default"].weighted_sources() == [("192.0.2.1", 1), ("192.0.2.2", 1)]
