"""Tag-list records (DKIM, DMARC, MTA-STS, TLS-RPT): parse and check their syntax.

Each ``parse_*`` returns the tags as a dict, or raises :class:`RecordSyntaxError` with a
message that says what is wrong; the checks turn that into a fail and a fix.
"""

from __future__ import annotations

import base64
import binascii
import re

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

_TAG_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_STS_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")


class RecordSyntaxError(ValueError):
    """A record that does not parse; the message names the tag."""


def parse_tags(text: str) -> dict[str, str]:
    """``a=1; b = 2;`` -> {"a": "1", "b": "2"} (RFC 6376 3.2); names are case-sensitive
    as DKIM says, values keep their case, a name given twice is an error."""
    tags: dict[str, str] = {}
    for item in text.split(";"):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not _TAG_NAME.match(name):
            raise RecordSyntaxError(f"{item.strip()!r} is not a tag=value pair")
        if name in tags:
            raise RecordSyntaxError(f"the tag {name}= appears twice")
        tags[name] = value.strip()
    return tags


def _first_tag(text: str) -> str:
    return text.split(";", 1)[0].split("=", 1)[0].strip()


# -- DKIM (RFC 6376 3.6.1, RFC 8463) ---------------------------------------------------


def parse_dkim(text: str) -> dict[str, str]:
    tags = parse_tags(text)
    if "v" in tags and (tags["v"] != "DKIM1" or _first_tag(text) != "v"):
        raise RecordSyntaxError("v= must be the first tag and say DKIM1")
    if "p" not in tags:
        raise RecordSyntaxError("no p= tag (the public key)")
    if tags.get("k", "rsa") not in ("rsa", "ed25519"):
        raise RecordSyntaxError(f"k={tags['k']}: the key type is rsa or ed25519")
    if "h" in tags and "sha256" not in [h.strip() for h in tags["h"].split(":")]:
        raise RecordSyntaxError(f"h={tags['h']}: sha256 must be allowed")
    return tags


def dkim_public_key(tags: dict[str, str]):
    """The public key of a parsed DKIM record; RecordSyntaxError when p= is not one."""
    data = "".join(tags["p"].split())
    if not data:
        raise RecordSyntaxError("p= is empty: the key is revoked")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RecordSyntaxError("p= is not base64") from None
    try:
        if tags.get("k", "rsa") == "ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(raw)
        key = serialization.load_der_public_key(raw)
    except (ValueError, TypeError) as exc:
        raise RecordSyntaxError(f"p= is not a {tags.get('k', 'rsa')} public key: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise RecordSyntaxError("p= holds a public key that is not RSA (k=rsa)")
    return key


def same_public_key(a, b) -> bool:
    if isinstance(a, rsa.RSAPublicKey) and isinstance(b, rsa.RSAPublicKey):
        return a.public_numbers() == b.public_numbers()
    if isinstance(a, ed25519.Ed25519PublicKey) and isinstance(b, ed25519.Ed25519PublicKey):
        raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
        return a.public_bytes(*raw) == b.public_bytes(*raw)
    return False


# -- DMARC (RFC 7489 6.3) --------------------------------------------------------------

POLICIES = ("none", "quarantine", "reject")


def is_dmarc(text: str) -> bool:
    return re.match(r"^v\s*=\s*DMARC1\s*(;|$)", text) is not None


def parse_dmarc(text: str) -> dict[str, str]:
    if not is_dmarc(text):
        raise RecordSyntaxError("does not start with v=DMARC1")
    tags = parse_tags(text)
    if "p" not in tags:
        raise RecordSyntaxError("no p= tag (the policy: none, quarantine or reject)")
    for name in ("p", "sp"):
        if name in tags and tags[name].lower() not in POLICIES:
            raise RecordSyntaxError(f"{name}={tags[name]}: one of none, quarantine, reject")
    for name in ("adkim", "aspf"):
        if name in tags and tags[name].lower() not in ("r", "s"):
            raise RecordSyntaxError(f"{name}={tags[name]}: r (relaxed) or s (strict)")
    if "pct" in tags and not (tags["pct"].isdigit() and 0 <= int(tags["pct"]) <= 100):
        raise RecordSyntaxError(f"pct={tags['pct']}: a whole number from 0 to 100")
    if "ri" in tags and not tags["ri"].isdigit():
        raise RecordSyntaxError(f"ri={tags['ri']}: a number of seconds")
    for name in ("rua", "ruf"):
        for uri in filter(None, (u.strip() for u in tags.get(name, "").split(","))):
            if not re.match(r"^(mailto:[^@\s]+@[^@\s]+|https?://\S+)$", uri, re.I):
                raise RecordSyntaxError(f"{name}=: {uri!r} is not a mailto: URI")
    return tags


# -- MTA-STS (RFC 8461 3.1) and TLS-RPT (RFC 8460 3) -----------------------------------


def parse_mta_sts(text: str) -> dict[str, str]:
    tags = parse_tags(text)
    if tags.get("v") != "STSv1" or _first_tag(text) != "v":
        raise RecordSyntaxError("v=STSv1 must be the first tag")
    if not _STS_ID.match(tags.get("id", "")):
        raise RecordSyntaxError("id= must be 1 to 32 letters and digits")
    return tags


def parse_tls_rpt(text: str) -> dict[str, str]:
    tags = parse_tags(text)
    if tags.get("v") != "TLSRPTv1" or _first_tag(text) != "v":
        raise RecordSyntaxError("v=TLSRPTv1 must be the first tag")
    uris = [u.strip() for u in tags.get("rua", "").split(",") if u.strip()]
    if not uris:
        raise RecordSyntaxError("no rua= (where reports go: mailto: or https:)")
    for uri in uris:
        if not re.match(r"^(mailto:[^@\s]+@[^@\s]+|https://\S+)$", uri, re.I):
            raise RecordSyntaxError(f"rua=: {uri!r} is not a mailto: or https: URI")
    return tags
