"""The feedback loop's sending side: VERP return paths and List-Unsubscribe header lines.

Both are per recipient and made from the node's secret (``[feedback] secret_file``, read
once per process) and the traffic class of the job: ``verp = true`` gives the envelope
sender ``b-TOKEN@domain`` (:class:`ReturnPaths`, in the scheduler), ``list_unsubscribe =
true`` the two header lines of RFC 2369 and RFC 8058 (:class:`ListUnsubscribe`, in the
signer, before DKIM signing). docs/feedback.md describes the tokens.
"""

from __future__ import annotations

from salvo.core import host
from salvo.core.address import bare_address
from salvo.core.config import Config
from salvo.core.errors import StartupError
from salvo.core.feedback.tokens import (
    MIN_SECRET_BYTES,
    UNSUBSCRIBE_PREFIX,
    unsubscribe_mailto_token,
    unsubscribe_token,
    verp_address,
)

__all__ = ["ListUnsubscribe", "ReturnPaths", "load_secret"]

_POST = b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"


def load_secret(config: Config) -> bytes:
    """The node's feedback secret, from ``[feedback] secret_file`` (the node makes it on
    start when it is missing)."""
    path = config.feedback_secret_path
    try:
        secret = host.read_bytes(path)
    except OSError as exc:
        raise StartupError(
            f"[feedback] secret_file {path}: cannot read it: {exc.strerror or exc}"
        ) from exc
    if len(secret) < MIN_SECRET_BYTES:
        raise StartupError(
            f"[feedback] secret_file {path}: {len(secret)} bytes; at least "
            f"{MIN_SECRET_BYTES} are needed (delete it and the node makes a new one)"
        )
    return secret


def _domains(config: Config, option: str) -> dict[str, str]:
    """Traffic class -> the bounce domain, for the classes with ``option`` on."""
    return {
        name: config.feedback_domain(name)
        for name, traffic in config.traffic.items()
        if getattr(traffic, option)
    }


class ReturnPaths:
    """The envelope sender of each recipient: a VERP address for the traffic classes with
    ``verp = true``, the job's return path otherwise."""

    def __init__(self, secret: bytes, domains: dict[str, str], fallback: str = "") -> None:
        self._secret = secret
        self._domains = domains
        self._fallback = fallback  # for traffic names no class has: the default's

    @classmethod
    def from_config(cls, config: Config) -> ReturnPaths:
        """Reads the secret only when some class has ``verp = true``."""
        domains = _domains(config, "verp")
        if not domains:
            return cls(b"", {})
        every = {name: domains.get(name, "") for name in config.traffic}
        return cls(load_secret(config), every, every["default"])

    def mail_from(self, default: str, traffic: str, seq: int, idx: int) -> str:
        """``b-TOKEN@domain`` for recipient ``idx`` of spool job ``seq``, or ``default``."""
        domain = self._domains.get(traffic, self._fallback)
        if not domain:
            return default
        return verp_address(self._secret, seq, idx, domain)


class ListUnsubscribe:
    """The ``List-Unsubscribe`` and ``List-Unsubscribe-Post`` lines of one recipient.

    ``List-Unsubscribe: <BASE_URL/u/URL_TOKEN>, <mailto:u-TOKEN@DOMAIN>`` (folded after
    the comma) and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``: CRLF-terminated
    header lines to put before the rendered message, ahead of DKIM signing.
    """

    def __init__(
        self, secret: bytes, base_url: str, domains: dict[str, str], fallback: str = ""
    ) -> None:
        self._secret = secret
        self._url = f"<{base_url.rstrip('/')}/u/".encode("ascii")
        self._domains = domains
        self._fallback = fallback  # for traffic names no class has: the default's

    @classmethod
    def from_config(cls, config: Config) -> ListUnsubscribe | None:
        """None when no traffic class has ``list_unsubscribe = true`` (no secret read)."""
        domains = _domains(config, "list_unsubscribe")
        if not domains:
            return None
        every = {name: domains.get(name, "") for name in config.traffic}
        return cls(load_secret(config), config.unsubscribe.base_url, every, every["default"])

    def domain(self, traffic: str) -> str:
        """The mailto domain of a job's traffic class; "" when the class has no
        List-Unsubscribe (a name no class has is the default class)."""
        return self._domains.get(traffic, self._fallback)

    def lines(self, tenant: str, domain: str, seq: int, idx: int, to: str) -> bytes:
        """The two header lines for recipient ``to`` (``idx`` of spool job ``seq``)."""
        secret = self._secret
        url = unsubscribe_token(secret, tenant, bare_address(to))
        mailto = unsubscribe_mailto_token(secret, seq, idx)
        return b"".join(
            (
                b"List-Unsubscribe: ",
                self._url,
                url.encode("ascii"),
                b">,\r\n <mailto:",
                UNSUBSCRIBE_PREFIX.encode("ascii"),
                mailto.encode("ascii"),
                b"@",
                domain.encode("ascii"),
                b">\r\n",
                _POST,
            )
        )
