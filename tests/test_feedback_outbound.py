"""The sending side of the feedback loop without a node: its config keys and their errors,
the secret file, the return paths and the List-Unsubscribe lines the composer adds."""

from __future__ import annotations

import email
import email.policy
import stat
import time
from pathlib import Path

import pytest

from salvo.core import host
from salvo.core.compose import Composer
from salvo.core.config import ConfigError, load_config, parse_config
from salvo.core.errors import StartupError
from salvo.core.feedback import tokens
from salvo.core.feedback.outbound import ListUnsubscribe, ReturnPaths, load_secret
from salvo.core.messages import Content

ROOT = Path(__file__).resolve().parent.parent
SECRET = bytes(range(32))

CONFIG = """
[feedback]
domains = ["Bounces.Acme.Example.", "b2.acme.example"]
secret_file = "feedback.secret"
[unsubscribe]
base_url = "https://u.acme.example/"
[traffic.default]
verp = true
list_unsubscribe = true
[traffic.other]
verp_domain = "B2.acme.example"
list_unsubscribe = true
[traffic.quiet]
"""


def test_defaults_and_the_example_file():
    default = load_config(None)
    assert default.feedback.listen == ""  # no service unless configured
    assert default.feedback.domains == []
    assert default.feedback.secret_file == "keys/feedback.secret"
    assert default.unsubscribe.listen == ""
    assert default.unsubscribe.base_url == ""
    assert not default.traffic_class("default").verp
    assert not default.traffic_class("default").list_unsubscribe
    assert not default.uses_feedback
    example = load_config(ROOT / "salvo.example.toml")
    assert example.feedback == default.feedback
    assert example.unsubscribe == default.unsubscribe


def test_keys_are_normalized_and_domains_chosen_per_class():
    config = parse_config(CONFIG, base_dir="/srv/salvo")
    assert config.feedback.domains == ["bounces.acme.example", "b2.acme.example"]
    assert config.unsubscribe.base_url == "https://u.acme.example"
    assert config.feedback_domain("default") == "bounces.acme.example"
    assert config.feedback_domain("other") == "b2.acme.example"
    assert config.feedback_domain("no-such-class") == "bounces.acme.example"
    assert config.feedback_secret_path == Path("/srv/salvo/feedback.secret")
    assert config.uses_feedback


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[traffic.m]\nverp = true", "[traffic.m] verp: needs a bounce domain in [feedback]"),
        (
            '[feedback]\ndomains = ["b.example"]\n[traffic.m]\nlist_unsubscribe = true',
            "[traffic.m] list_unsubscribe: needs [unsubscribe] base_url",
        ),
        (
            '[unsubscribe]\nbase_url = "https://u.example"\n[traffic.m]\nlist_unsubscribe = true',
            "[traffic.m] list_unsubscribe: needs a domain in [feedback] domains",
        ),
        (
            '[feedback]\ndomains = ["b.example"]\n[traffic.m]\nverp_domain = "c.example"',
            "[traffic.m] verp_domain: 'c.example' is not one of [feedback] domains",
        ),
        ('[unsubscribe]\nbase_url = "http://u.example"', "[unsubscribe] base_url: 'http://"),
        ('[unsubscribe]\nbase_url = "https://u.example/?a=1"', "[unsubscribe] base_url"),
        ('[unsubscribe]\nbase_url = "https://u.example/a,b"', "[unsubscribe] base_url"),
        ('[feedback]\ndomains = ["not a domain"]', "[feedback] domains: 'not a domain'"),
        ('[feedback]\nlisten = "2525"', "[feedback] listen: '2525' is not 'host:port'"),
        ('[unsubscribe]\nlisten = "x:99999"', "[unsubscribe] listen: 'x:99999'"),
        ('[feedback]\nsecret_file = ""', "[feedback] secret_file"),
        ('[feedback]\nsecrets = "x"', "[feedback] secrets: unknown key"),
    ],
)
def test_errors_name_the_key(text, message):
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="node.toml")
    assert message in str(info.value)
    assert str(info.value).startswith("node.toml: ")


def test_the_secret_file_is_made_once_whole_and_private(tmp_path):
    path = tmp_path / "keys" / "feedback.secret"
    assert host.create_secret_file(path)
    first = path.read_bytes()
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not host.create_secret_file(path)  # never replaced
    assert path.read_bytes() == first
    assert [p.name for p in path.parent.iterdir()] == ["feedback.secret"]  # no temp file


def test_load_secret_refuses_a_missing_or_short_file(tmp_path):
    config = parse_config(CONFIG, base_dir=str(tmp_path))
    with pytest.raises(StartupError, match=r"\[feedback\] secret_file .*cannot read it"):
        load_secret(config)
    (tmp_path / "feedback.secret").write_bytes(b"short")
    with pytest.raises(StartupError, match="5 bytes; at least 16"):
        load_secret(config)
    (tmp_path / "feedback.secret").write_bytes(SECRET)
    assert load_secret(config) == SECRET


def test_no_secret_is_read_without_a_class_that_needs_it(tmp_path):
    config = parse_config('[feedback]\ndomains = ["b.example"]', base_dir=str(tmp_path))
    assert ReturnPaths.from_config(config).mail_from("r@a.example", "default", 1, 2) == (
        "r@a.example"
    )
    assert ListUnsubscribe.from_config(config) is None


def test_return_paths_per_class(tmp_path):
    (tmp_path / "feedback.secret").write_bytes(SECRET)
    config = parse_config(CONFIG, base_dir=str(tmp_path))
    paths = ReturnPaths.from_config(config)
    verp = paths.mail_from("r@a.example", "default", 7, 3)
    assert verp.endswith("@bounces.acme.example")
    assert tokens.read_verp_address(SECRET, verp) == (7, 3)
    assert paths.mail_from("r@a.example", "unknown-class", 7, 3) == verp  # = default's
    assert paths.mail_from("r@a.example", "other", 7, 3) == "r@a.example"
    assert paths.mail_from("r@a.example", "quiet", 7, 3) == "r@a.example"


def _content(traffic: str, headers: dict[str, str] | None = None, raw: str | None = None):
    if raw is not None:
        return Content("news@acme.example", None, None, None, {}, raw, "acme", traffic)
    return Content(
        "News <news@acme.example>", "Hi {{ n }}", "Hello {{ n }}", None,
        headers or {}, None, "acme", traffic,
    )  # fmt: skip


def _compose(composer, key, content, to="Ann <Ann@Example.org>"):
    message = composer.compose(key, content, to, {"n": "x"}, "<m@acme.example>", seq=9, idx=4)
    return email.message_from_bytes(message, policy=email.policy.default)


def test_composer_adds_the_lines_only_where_asked(tmp_path):
    (tmp_path / "feedback.secret").write_bytes(SECRET)
    config = parse_config(CONFIG, base_dir=str(tmp_path))
    composer = Composer({}, clock=time.time, list_unsubscribe=ListUnsubscribe.from_config(config))

    msg = _compose(composer, 1, _content("other"))
    url, mailto = (v.strip().strip("<>") for v in msg["List-Unsubscribe"].split(","))
    assert url.startswith("https://u.acme.example/u/")
    assert tokens.read_unsubscribe_token(SECRET, url.rpartition("/")[2]) == (
        "acme",
        "Ann@Example.org",
    )
    assert mailto.endswith("@b2.acme.example")  # the class's verp_domain
    assert tokens.read_unsubscribe_mailto(SECRET, mailto.removeprefix("mailto:")) == (9, 4)
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Subject"] == "Hi x"

    assert "List-Unsubscribe" in _compose(composer, 2, _content("no-such-class"))  # default's
    assert "List-Unsubscribe" not in _compose(composer, 3, _content("quiet"))
    own = _compose(
        composer, 4, _content("other", {"list-unsubscribe": "<https://x.example/{{ n }}>"})
    )
    assert own.get_all("List-Unsubscribe") == ["<https://x.example/x>"]
    assert "List-Unsubscribe-Post" not in own
    raw = _compose(composer, 5, _content("other", raw="From: news@acme.example\r\n\r\nbody\r\n"))
    assert "List-Unsubscribe" not in raw


def test_a_composer_without_it_adds_nothing():
    composer = Composer({}, clock=time.time)
    assert "List-Unsubscribe" not in _compose(composer, 1, _content("default"))
