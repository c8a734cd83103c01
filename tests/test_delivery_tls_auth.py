"""Per-provider TLS policy and SMTP AUTH for static routes, through the delivery actor."""

from __future__ import annotations

import math

import pytest
import trio
from test_smtp_session import FAST, HOST, MSG, Recorder, ca, server, tls_server_context  # noqa: F401

from salvo.actors.delivery import Delivery, Message, RouteSettings
from salvo.core.config import ConfigError, parse_config
from salvo.core.providers import ProviderTable, route_key
from salvo.core.smtp import Status


def deliver(port: int, settings: RouteSettings, providers: ProviderTable | None = None):
    """Send one message through a Delivery; return its outcome."""

    async def main():
        send, receive = trio.open_memory_channel(math.inf)
        delivery = Delivery(send)
        delivery.configure(providers)
        with trio.fail_after(10):  # hang guard, not a timing assertion
            async with trio.open_nursery() as nursery:
                await nursery.start(delivery.run)
                delivery.send(
                    Message(1, 0, "a@x.example", "s@y.example", MSG), HOST, port, [], settings
                )
                result = await receive.receive()
                nursery.cancel_scope.cancel()
        return result.outcome

    return trio.run(main)


def _auth_server(server, ca):  # noqa: F811
    from aiosmtpd.smtp import AuthResult, LoginPassword

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.password == b"secret"
        return AuthResult(success=ok, handled=False)

    handler = Recorder()
    port = server(handler, tls_context=tls_server_context(ca), authenticator=authenticator,
                  auth_require_tls=True, auth_required=True)  # fmt: skip
    return handler, port


def test_a_route_with_credentials_logs_in_over_tls(server, ca):  # noqa: F811
    handler, port = _auth_server(server, ca)
    good = RouteSettings(ehlo="c.example", timeouts=FAST, auth=("user", "secret"))
    assert deliver(port, good).status is Status.DELIVERED
    assert [rcpts for _, rcpts, _ in handler.messages] == [["a@x.example"]]
    bad = RouteSettings(ehlo="c.example", timeouts=FAST, auth=("user", "wrong"))
    outcome = deliver(port, bad)
    assert outcome.status is Status.DEFERRED and "authentication refused" in outcome.text
    without = RouteSettings(ehlo="c.example", timeouts=FAST)  # the server requires AUTH
    assert deliver(port, without).status is not Status.DELIVERED
    assert len(handler.messages) == 1


def test_provider_tls_policy_applies_to_its_routes(server):  # noqa: F811
    handler = Recorder()
    port = server(handler)  # no STARTTLS offered
    plain = RouteSettings(ehlo="c.example", timeouts=FAST)
    # A static route is its own provider (route:host:port) with the default's settings.
    assert deliver(port, plain, ProviderTable.build()).status is Status.DELIVERED
    required = ProviderTable.build({"default": {"tls": "required"}})
    assert required.get(route_key(HOST, port)).tls == "required"
    outcome = deliver(port, plain, required)  # never in plaintext, even if offered nothing
    assert outcome.status is Status.DEFERRED
    assert len(handler.messages) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[providers.x]\ntls = "sometimes"', "tls: 'sometimes'"),
        ('[route_auth."relay.example:587"]\nusername = "u"\npassword = "p"', "no [routes] entry"),
        (
            '[routes]\n"*" = "relay.example:587"\n[route_auth."relay.example:587"]\nusername = "u"',
            "give password or password_file",
        ),
    ],
)
def test_config_errors(text, message):
    with pytest.raises(ConfigError, match=r"^node\.toml: ") as info:
        parse_config(text, source="node.toml")
    assert message in str(info.value)


def test_route_credentials(tmp_path):
    (tmp_path / "pw").write_text("s3cret\n")
    config = parse_config(
        '[routes]\n"*" = "relay.example:587"\n'
        '[route_auth."relay.example:587"]\nusername = "u"\npassword_file = "pw"\n',
        base_dir=str(tmp_path),
    )
    assert config.route_credentials("relay.example", 587) == ("u", "s3cret")
    assert config.route_credentials("other.example", 587) is None
