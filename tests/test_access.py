"""Producers and tenants, token roles, the failed-authentication limiter and its log
budget (pure, time passed in); the keys, tokens, producers and subscribers config; the
key files and ``salvo keys generate``."""

from __future__ import annotations

import stat
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from salvo.actors.keys import KeyFileError, generate, read_public, read_secret
from salvo.core import access
from salvo.core.authlimit import FailureLimiter, LogBudget
from salvo.core.config import ConfigError, parse_config

KEY_A = "A" * 40
KEY_B = "B" * 40


def _table() -> access.Producers:
    return access.Producers(
        [
            access.Producer("web", KEY_A, frozenset({"acme"})),
            access.Producer("ops", KEY_B, frozenset({"*"})),
        ]
    )


def test_a_producer_may_send_for_its_tenants_only():
    table = _table()
    assert table.refusal(access.user_id("web", KEY_A), "acme") is None
    assert table.refusal(access.user_id("ops", KEY_B), "anything") is None  # "*": any tenant
    assert table.refusal(access.user_id("web", KEY_A), "globex") == (
        "producer 'web' may not send for tenant 'globex' (its tenants: acme)"
    )
    assert table.name_for(KEY_B) == "ops" and table.name_for("C" * 40) is None


def test_a_key_replaced_or_removed_refuses_its_open_connections():
    table = _table()
    assert table.refusal(access.user_id("web", "C" * 40), "acme") == (
        "producer 'web': its key is no longer configured on this node"
    )
    assert table.refusal(None, "acme") == "this connection has no producer key"
    assert table.refusal("", "acme") == "this connection has no producer key"


def test_two_producers_cannot_share_a_key():
    with pytest.raises(ValueError, match="same public key"):
        access.Producers(
            [access.Producer("a", KEY_A, frozenset("x")), access.Producer("b", KEY_A, frozenset())]
        )


@given(st.text(max_size=100), st.text(max_size=30))
def test_any_user_id_and_tenant_get_an_answer(user, tenant):
    answer = _table().refusal(user, tenant)
    assert answer is None or isinstance(answer, str)


def test_roles_are_ordered():
    assert access.role_allows("admin", "operate") and access.role_allows("operate", "read")
    assert not access.role_allows("read", "operate") and not access.role_allows("operate", "admin")


def test_the_limiter_refuses_after_the_burst_then_lets_one_through_per_refill():
    limiter = FailureLimiter(burst=3, period=60.0)
    assert limiter.retry_after("1.2.3.4", 0.0) == 0
    for _ in range(3):
        limiter.failed("1.2.3.4", 0.0)
    assert limiter.retry_after("1.2.3.4", 0.0) == 20  # one token per 20 s
    assert limiter.retry_after("5.6.7.8", 0.0) == 0  # per address
    assert limiter.retry_after("1.2.3.4", 19.5) == 1
    assert limiter.retry_after("1.2.3.4", 20.0) == 0
    limiter.failed("1.2.3.4", 20.0)
    assert limiter.retry_after("1.2.3.4", 20.0) == 20


@given(st.lists(st.tuples(st.integers(0, 50), st.floats(0, 1000)), max_size=300))
def test_the_limiter_stays_bounded(events):
    limiter = FailureLimiter(burst=2, period=10.0, max_addresses=20)
    now = 0.0
    for address, step in events:
        now += step
        limiter.failed(str(address), now)
        assert len(limiter) <= 20
        assert 0 <= limiter.retry_after(str(address), now) <= 5


def test_the_log_budget_holds_lines_back_and_counts_them():
    budget = LogBudget(lines=2, period=60.0)
    assert [budget.take(t)[0] for t in (0, 1, 2, 3)] == [True, True, False, False]
    assert budget.take(60.0) == (True, 2)
    assert budget.take(61.0) == (True, 0)


# -- config ----------------------------------------------------------------------------


def test_the_config_takes_producers_subscribers_and_token_roles():
    config = parse_config(
        """
[ingress]
curve = true
[events]
curve = true
[producers.acme-web]
public_key = "keys/acme-web.key"
tenants = ["acme"]
[subscribers.ops]
public_key = "keys/ops.key"
[http.tokens.dash]
file = "keys/dash.token"
role = "read"
""",
        base_dir="/srv/salvo",
    )
    assert config.uses_curve and config.ingress.curve_secret_key == "keys/node.key_secret"
    assert config.producers["acme-web"].tenants == ["acme"]
    tokens = config.http_tokens()
    assert tokens["admin"][1] == "admin" and str(tokens["dash"][0]) == "/srv/salvo/keys/dash.token"
    assert tokens["dash"][1] == "read"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[producers.web]\npublic_key = "k"\ntenants = []', "tenants: one tenant or more"),
        ('[producers.web]\npublic_key = "k"', "tenants"),
        ('[producers."a b"]\npublic_key = "k"\ntenants = ["x"]', "[producers.a b]: a name"),
        ('[producers.web]\npublic_key = "k"\ntenants = ["x"]\nkey = 1', "unknown key"),
        ('[ingress]\ncurve_secret_key = "node.pem"', "ending in .key_secret"),
        ('[http.tokens.x]\nfile = "t"\nrole = "root"', "role: 'root'; use read"),
        ('[http.tokens.x]\nfile = "keys/http.token"', "file: a file of its own"),
        ('[http.tokens.admin]\nfile = "t"', "not 'admin'"),
    ],
)
def test_bad_access_config_is_named(text, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert message in str(caught.value)


# -- key files -----------------------------------------------------------------------------


def test_key_files_are_made_once_with_a_private_secret(tmp_path):
    public, secret = generate(tmp_path / "keys", "acme-web")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert read_public(public) == read_secret(secret)[0] and len(read_public(public)) == 40
    with pytest.raises(KeyFileError, match="exists"):
        generate(tmp_path / "keys", "acme-web")
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == [
        "acme-web.key",
        "acme-web.key_secret",
    ]
    with pytest.raises(KeyFileError, match="holds no secret key"):
        read_secret(public)
    (tmp_path / "bad.key").write_text('public-key = "short"\n')
    with pytest.raises(KeyFileError, match="not a CURVE key file"):
        read_public(tmp_path / "bad.key")
    with pytest.raises(KeyFileError, match="no such key file"):
        read_public(tmp_path / "missing.key")


def test_salvo_keys_generate(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "salvo", "keys", "generate", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )

    done = run("acme-web")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "keys/acme-web.key"
    assert stat.S_IMODE((tmp_path / "keys" / "acme-web.key_secret").stat().st_mode) == 0o600
    again = run("acme-web")
    assert again.returncode == 2 and "exists" in again.stderr
    other = run("ops", "--dir", str(tmp_path / "elsewhere"))
    assert other.returncode == 0 and (tmp_path / "elsewhere" / "ops.key").is_file()
    bad = run("a/b")
    assert bad.returncode == 2 and "a name of letters" in bad.stderr
