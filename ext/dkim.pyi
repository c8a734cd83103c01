"""Type stub for the Cython module salvo.ext.dkim (see ext/dkim.pyx and docs/dkim.md)."""

from collections.abc import Buffer, Iterable, Sequence

DEFAULT_HEADERS: tuple[str, ...]
OVERSIGNED_HEADERS: frozenset[str]

class DKIMSigner:
    """Signs messages for one (domain, selector, key); the key is loaded once."""

    domain: str
    selector: str
    algorithm: str
    canonicalization: tuple[str, str]
    headers: tuple[str, ...]

    def __init__(
        self,
        domain: str | bytes,
        selector: str | bytes,
        private_key_pem: bytes | str,
        *,
        algorithm: str = "rsa-sha256",
        canonicalization: tuple[str, str] | str = ("relaxed", "relaxed"),
        headers: Iterable[str | bytes] | None = None,
        identity: str | None = None,
        expires_in: int | None = None,
        oversign: Iterable[str | bytes] | None = None,
    ) -> None: ...
    def sign(self, message: Buffer, *, timestamp: float | None = None) -> bytes:
        """The CRLF-terminated ``DKIM-Signature:`` field to prepend to ``message``."""

def sign_many(
    message: Buffer, signers: Iterable[DKIMSigner], *, timestamp: float | None = None
) -> bytes:
    """All signers' fields concatenated; one parse, each canonical body hashed once."""

def parse_headers(message: Buffer) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """``([(name, value), ...], body)``; value without its terminating CRLF."""

def canonicalize_headers(fields: Sequence[tuple[bytes, bytes]], mode: str) -> bytes:
    """Each field canonicalized (``relaxed``/``simple``) and CRLF-terminated, joined."""

def canonicalize_body(body: Buffer, mode: str) -> bytes:
    """The canonical body (``relaxed``/``simple``) that bh= hashes."""

def public_key_record(private_key_pem: bytes | str, algorithm: str = "rsa-sha256") -> str:
    """The DNS TXT value ``v=DKIM1; k=...; p=...`` for the key's public half."""
