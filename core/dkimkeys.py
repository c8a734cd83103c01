"""DKIM keys for operators: generation, DNS records, and verification with dkimpy.

Signing lives on the hot path (:mod:`salvo.ext.dkim`); this module is the cold path: the
``salvo dkim`` commands and tests. Verification uses dkimpy, an implementation independent
of salvo's signer, with the key taken from a file instead of DNS.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from salvo.ext.errors import DKIMError

ALGORITHMS = ("rsa-sha256", "ed25519-sha256")


def generate_private_key(algorithm: str = "rsa-sha256", bits: int = 2048) -> bytes:
    """A new private key as unencrypted PKCS#8 PEM."""
    if algorithm == "rsa-sha256":
        if bits < 1024:
            raise DKIMError(
                f"RSA keys under 1024 bits are ignored by receivers (RFC 8301); got {bits}"
            )
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    elif algorithm == "ed25519-sha256":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise DKIMError(f"unknown algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_key(data: bytes) -> rsa.RSAPublicKey | ed25519.Ed25519PublicKey:
    """A public key from a PEM public key, a PEM private key, or a DNS TXT record; an RSA
    or Ed25519 one (the DKIM key types), else :class:`DKIMError`."""
    text = data.strip()
    if b"PRIVATE KEY" in text:
        try:
            key = serialization.load_pem_private_key(text, password=None).public_key()
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise DKIMError(f"cannot read the private key: {exc}") from exc
    elif b"PUBLIC KEY" in text:
        try:
            key = serialization.load_pem_public_key(text)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise DKIMError(f"cannot read the public key: {exc}") from exc
    else:
        key = _public_key_from_record(text.decode("ascii", "replace"))
    if not isinstance(key, rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise DKIMError(f"a DKIM key is RSA or Ed25519, not {type(key).__name__}")
    return key


def _public_key_from_record(record: str):
    tags = _parse_record(record)
    if "p" not in tags:
        raise DKIMError("not a PEM key nor a DKIM TXT record (no p= tag)")
    try:
        raw = base64.b64decode("".join(tags["p"].split()), validate=True)
        if tags.get("k", "rsa") == "ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(raw)
        return serialization.load_der_public_key(raw)
    except (ValueError, UnsupportedAlgorithm) as exc:  # binascii.Error is a ValueError
        raise DKIMError(f"the record's p= is not a usable public key: {exc}") from exc


def _parse_record(record: str) -> dict[str, str]:
    # A TXT record may be pasted as several quoted strings, as zone files show it.
    record = "".join(part for part in record.split('"') if part.strip(" \t\r\n()"))
    tags = {}
    for item in record.split(";"):
        name, sep, value = item.partition("=")
        if sep:
            tags[name.strip()] = value.strip()
    return tags


def dns_record(key_pem: bytes) -> str:
    """The DNS TXT value (``v=DKIM1; k=...; p=...``) that publishes the key's public half."""
    public = _public_key(key_pem)
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def public_key_pem(key_pem: bytes) -> bytes:
    """The public half of a key, as a PEM SubjectPublicKeyInfo."""
    return _public_key(key_pem).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def zone_line(domain: str, selector: str, record: str) -> str:
    """The record as a zone-file line, split into quoted strings of at most 255 octets."""
    chunks = [record[i : i + 250] for i in range(0, len(record), 250)]
    quoted = " ".join(f'"{chunk}"' for chunk in chunks)
    return f"{selector}._domainkey.{domain}. IN TXT ( {quoted} )"


@dataclass(frozen=True)
class SignatureResult:
    """The outcome of verifying one DKIM-Signature field of a message."""

    index: int
    domain: str
    selector: str
    algorithm: str
    valid: bool
    error: str | None = None


def verify(message: bytes, keys: list[bytes]) -> list[SignatureResult]:
    """Verify every DKIM signature of ``message`` with dkimpy against the given keys.

    DNS is not consulted: each signature is checked against each key (public PEM, private
    PEM or TXT record) and passes when one of them verifies it.
    """
    import dkim  # dkimpy: imported here so that the hot path never loads it

    records = [dns_record(k).encode() for k in keys]
    if not records:
        raise DKIMError("no key given to verify with")
    checker = dkim.DKIM(message)
    count = sum(1 for name, _ in checker.headers if name.lower() == b"dkim-signature")
    results = []
    for index in range(count):
        valid, error = False, None
        for record in records:
            try:
                if dkim.DKIM(message).verify(idx=index, dnsfunc=lambda *_a, r=record, **_k: r):
                    valid, error = True, None
                    break
                error = "signature does not verify"
            except dkim.DKIMException as exc:
                error = str(exc)
        checker.verify_headerprep(index)
        fields = checker.signature_fields
        results.append(
            SignatureResult(
                index=index,
                domain=fields.get(b"d", b"").decode("ascii", "replace"),
                selector=fields.get(b"s", b"").decode("ascii", "replace"),
                algorithm=fields.get(b"a", b"").decode("ascii", "replace"),
                valid=valid,
                error=error,
            )
        )
    return results
