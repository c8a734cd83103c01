"""``salvo dkim``: generate keys, sign and verify messages."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from salvo.core import dkimkeys


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("dkim", help="DKIM keys, signing and verification")
    dsub = parser.add_subparsers(dest="dkim_command", metavar="ACTION", required=True)

    keygen = dsub.add_parser("keygen", help="write a new private key, print its DNS record")
    keygen.add_argument("--domain", required=True, help="signing domain (d=)")
    keygen.add_argument("--selector", required=True, help="selector (s=)")
    keygen.add_argument("--algorithm", choices=dkimkeys.ALGORITHMS, default="rsa-sha256")
    keygen.add_argument("--bits", type=int, default=2048, help="RSA key size (default 2048)")
    keygen.add_argument("--out", required=True, type=Path, help="private key file to write")
    keygen.add_argument("--force", action="store_true", help="overwrite an existing file")
    keygen.set_defaults(func=_keygen)

    sign = dsub.add_parser("sign", help="sign a message read from stdin, write it to stdout")
    sign.add_argument("--domain", required=True)
    sign.add_argument("--selector", required=True)
    sign.add_argument("--key", required=True, type=Path, help="private key file (PEM)")
    sign.add_argument(
        "--algorithm", choices=dkimkeys.ALGORITHMS, help="default: from the key's type"
    )
    sign.add_argument(
        "--canonicalization",
        default="relaxed/relaxed",
        help="header/body (default relaxed/relaxed)",
    )
    sign.set_defaults(func=_sign)

    verify = dsub.add_parser("verify", help="verify the signatures of a message read from stdin")
    verify.add_argument(
        "--key",
        required=True,
        type=Path,
        action="append",
        help="public key PEM, private key PEM or DNS TXT record file; repeat for several",
    )
    verify.set_defaults(func=_verify)


def _keygen(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.force:
        print(f"salvo dkim keygen: {args.out} exists; use --force to replace it", file=sys.stderr)
        return 2
    pem = dkimkeys.generate_private_key(args.algorithm, args.bits)
    # The private key is written readable by its owner only.
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    pub = args.out.with_name(args.out.name + ".pub")
    pub.write_bytes(dkimkeys.public_key_pem(pem))
    record = dkimkeys.dns_record(pem)
    print(f"wrote {args.out} (private key, mode 0600) and {pub} (public key)", file=sys.stderr)
    print(f"publish this TXT record at {args.selector}._domainkey.{args.domain}:", file=sys.stderr)
    print(dkimkeys.zone_line(args.domain, args.selector, record))
    return 0


def _sign(args: argparse.Namespace) -> int:
    from salvo.ext.dkim import DKIMSigner
    from salvo.ext.mime import normalize_line_endings

    pem = args.key.read_bytes()
    algorithm = args.algorithm or (
        "ed25519-sha256"
        if dkimkeys.dns_record(pem).startswith("v=DKIM1; k=ed25519")
        else "rsa-sha256"
    )
    header_c, _, body_c = args.canonicalization.partition("/")
    signer = DKIMSigner(
        args.domain,
        args.selector,
        pem,
        algorithm=algorithm,
        canonicalization=(header_c, body_c or header_c),
    )
    # Messages from files often have bare LF line ends; what is signed must be what is sent.
    message = normalize_line_endings(sys.stdin.buffer.read())
    sys.stdout.buffer.write(signer.sign(message) + message)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from salvo.ext.mime import normalize_line_endings

    message = normalize_line_endings(sys.stdin.buffer.read())
    results = dkimkeys.verify(message, [path.read_bytes() for path in args.key])
    if not results:
        print("no DKIM-Signature in the message")
        return 1
    for r in results:
        verdict = "pass" if r.valid else f"FAIL ({r.error})"
        print(f"signature {r.index + 1}: d={r.domain} s={r.selector} a={r.algorithm}: {verdict}")
    return 0 if all(r.valid for r in results) else 1
