"""The DKIM key loader of ``salvo dkim`` and ``salvo doctor``: typed errors on bad keys."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from salvo.core import dkimkeys
from salvo.ext.errors import DKIMError


# Found by the dkim_key fuzz target (salvo.bench.fuzz): a TXT record whose p= is not
# base64 or not a key raised binascii.Error or ValueError instead of DKIMError.
@pytest.mark.parametrize(
    "record",
    [
        b"v=DKIM1; p=abc",
        b"v=DKIM1; p=",
        b"v=DKIM1; p=AAAA",
        b"v=DKIM1; k=ed25519; p=AAAA",
        b"v=DKIM1; p=!!!!",
    ],
)
def test_bad_record_is_a_dkim_error(record: bytes) -> None:
    with pytest.raises(DKIMError):
        dkimkeys.dns_record(record)
    with pytest.raises(DKIMError):
        dkimkeys.public_key_pem(record)


def test_a_key_of_another_type_is_refused_not_published_as_rsa() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pems = [
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    ]
    for pem in pems:
        with pytest.raises(DKIMError, match="RSA or Ed25519"):
            dkimkeys.dns_record(pem)


def test_good_keys_and_records_still_read() -> None:
    for algorithm in dkimkeys.ALGORITHMS:
        pem = dkimkeys.generate_private_key(algorithm, 1024)
        record = dkimkeys.dns_record(pem)
        assert dkimkeys.dns_record(record.encode()) == record
        assert dkimkeys.dns_record(dkimkeys.public_key_pem(pem)) == record
        # A record pasted from a zone file: quoted strings, folded.
        tag, _, p = record.partition("p=")
        half = len(p) // 2
        pasted = f'( "{tag}p={p[:half]}"\n  "{p[half:]}" )'.encode()
        assert dkimkeys.dns_record(pasted) == record
