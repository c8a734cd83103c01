"""The From domain's checks: SPF, DKIM and DMARC, as :class:`Result` lines with fixes."""

from __future__ import annotations

import ipaddress

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from salvo.core import dkimkeys
from salvo.ext.errors import DKIMError

from . import spf
from .alignment import aligned, organizational_domain
from .model import Lookup, Outcome, Result, failed, info, passed, warned
from .records import (
    RecordSyntaxError,
    dkim_public_key,
    is_dmarc,
    parse_dkim,
    parse_dmarc,
    same_public_key,
)
from .setup import DkimSetup, Setup


def txt_line(name: str, value: str) -> str:
    """A TXT record as a zone-file line, in quoted strings of at most 250 characters."""
    chunks = [value[i : i + 250] for i in range(0, len(value), 250)] or [""]
    return f"{name}. IN TXT " + " ".join(f'"{c}"' for c in chunks)


def _dns_error(check: str, subject: str, answer, what: str) -> Result:
    return failed(
        check,
        subject,
        f"cannot look up {what}: {answer.describe()}",
        "check that the nameservers in [dns] nameservers answer for this domain, then run "
        "salvo doctor again",
    )


# -- SPF -------------------------------------------------------------------------------


def _suggested_spf(sources: tuple[str, ...]) -> str:
    terms = [f"ip{ipaddress.ip_address(s).version}:{s}" for s in sources]
    return " ".join(["v=spf1", *(terms or ["ip4:YOUR.SENDING.ADDRESS"]), "-all"])


def _merged_spf(records: list[str], sources: tuple[str, ...]) -> str:
    words: list[str] = []
    ending = "-all"
    for record in sorted(records):  # the same merge whatever order DNS gave them in
        for word in record.split()[1:]:
            if word.lower().lstrip("+-~?") == "all":
                ending = "~all" if word.startswith("~") and ending != "-all" else ending
            elif word not in words:
                words.append(word)
    merged = " ".join(["v=spf1", *words, ending])
    for source in sources:
        if not _listed(source, words):
            merged = spf.with_address(merged, source)
    return merged


def _listed(source: str, words: list[str]) -> bool:
    """Whether an ip4:/ip6: term among ``words`` covers ``source``."""
    ip = ipaddress.ip_address(source)
    for word in words:
        kind, _, network = word.lstrip("+").partition(":")
        if kind.lower() in ("ip4", "ip6"):
            try:
                if ip in ipaddress.ip_network(network, strict=False):
                    return True
            except (ValueError, TypeError):
                continue
    return False


def check_spf(domain: str, sources: tuple[str, ...], lookup: Lookup) -> list[Result]:
    """SPF for ``domain``: one record, that parses, authorizes every source, ends in a
    safe ``all``, and stays within 10 DNS-querying terms."""
    answer = lookup(domain, "TXT")
    if answer.outcome is Outcome.ERROR:
        return [_dns_error("spf.record", domain, answer, "the SPF record")]
    records = [r for r in answer.records if spf.is_spf(r)]
    if not records:
        return [
            failed(
                "spf.record",
                domain,
                "no SPF record (a TXT record starting 'v=spf1'): receivers cannot tell "
                "which hosts may send for this domain",
                f"publish {txt_line(domain, _suggested_spf(sources))}",
            )
        ]
    if len(records) > 1:
        return [
            failed(
                "spf.record",
                domain,
                f"{len(records)} SPF records: receivers treat this as a permanent error "
                "(RFC 7208 4.5) and SPF fails for every message",
                "delete all but one; merged into one they read: "
                + txt_line(domain, _merged_spf(records, sources)),
            )
        ]
    text = records[0]
    try:
        record = spf.parse(text)
    except spf.SpfSyntaxError as exc:
        return [
            failed(
                "spf.record",
                domain,
                f"the SPF record does not parse: {exc} (receivers: permerror)",
                f"replace it with {txt_line(domain, _suggested_spf(sources))}",
            )
        ]
    results = [passed("spf.record", domain, f"one record: {text}")]
    results.append(_check_all(domain, text, record))
    results.extend(_check_lookups(domain, lookup))
    results.extend(_check_sources(domain, text, sources, lookup))
    return results


def _check_all(domain: str, text: str, record: spf.Record) -> Result:
    term = record.all_term
    if term is None:
        if record.redirect is not None:
            return info("spf.all", domain, f"hosts not listed: as redirect={record.redirect} says")
        return warned(
            "spf.all",
            domain,
            "no 'all' term: hosts not listed get 'neutral', which protects nothing",
            f"end the record with -all: {txt_line(domain, text + ' -all')}",
        )
    replaced = " ".join("-all" if w.lower().lstrip("+-~?") == "all" else w for w in text.split())
    if term.qualifier == "+":
        return failed(
            "spf.all",
            domain,
            f"'{'+' if '+all' in text.lower() else ''}all' lets every host on the internet "
            "send as this domain",
            f"publish {txt_line(domain, replaced)}",
        )
    if term.qualifier == "?":
        return warned(
            "spf.all",
            domain,
            "'?all': hosts not listed get 'neutral', which protects nothing",
            f"use -all (or ~all while testing): {txt_line(domain, replaced)}",
        )
    return passed("spf.all", domain, f"hosts not listed get {spf.QUALIFIERS[term.qualifier]}")


def _check_lookups(domain: str, lookup: Lookup) -> list[Result]:
    count = spf.count_lookups(domain, lookup)
    results = [
        failed(
            "spf.include",
            domain,
            f"a record this one includes is broken: {problem} (receivers: permerror)",
            "fix or remove that include:/redirect=",
        )
        for problem in count.problems
    ]
    chain = ", ".join(count.chain) or "none"
    if count.total > spf.MAX_LOOKUPS:
        results.append(
            failed(
                "spf.lookups",
                domain,
                f"{count.total} DNS-querying terms (include, a, mx, ptr, exists, redirect, "
                f"nested ones counted): more than {spf.MAX_LOOKUPS} is a permerror at "
                f"receivers (RFC 7208 4.6.4): {chain}",
                "flatten: replace include:s with the ip4:/ip6: ranges they publish, and drop "
                f"includes of services you do not send through, until {spf.MAX_LOOKUPS} or "
                "fewer are left",
            )
        )
    else:
        results.append(
            passed("spf.lookups", domain, f"{count.total} of {spf.MAX_LOOKUPS} lookups: {chain}")
        )
    return results


def _check_sources(
    domain: str, text: str, sources: tuple[str, ...], lookup: Lookup
) -> list[Result]:
    if not sources:
        return [
            info(
                "spf.source",
                domain,
                "no source addresses in [pools]: the system picks them, so they are not "
                "checked; SPF must name them",
            )
        ]
    verdicts = {s: spf.check_host(s, domain, lookup) for s in sources}
    fixed = text
    for source, verdict in verdicts.items():
        if verdict.result in ("fail", "softfail", "neutral", "none"):
            fixed = spf.with_address(fixed, source)
    results = []
    for source, verdict in verdicts.items():
        subject = f"{domain} {source}"
        if verdict.result == "pass":
            results.append(passed("spf.source", subject, f"pass: {verdict.reason}"))
        elif verdict.result in ("permerror", "temperror"):
            results.append(
                failed(
                    "spf.source",
                    subject,
                    f"{verdict.result}: {verdict.reason}",
                    "fix the errors reported for spf.record / spf.lookups / spf.include",
                )
            )
        else:
            results.append(
                failed(
                    "spf.source",
                    subject,
                    f"{verdict.result} ({verdict.reason}): this source address is not "
                    "authorized to send for the domain",
                    f"publish {txt_line(domain, fixed)}",
                )
            )
    return results


# -- DKIM ------------------------------------------------------------------------------


def _keygen_fix(domain: str) -> str:
    return (
        f"salvo dkim keygen --domain {domain} --selector s1 --out keys/{domain}.s1.pem, "
        f'then add [dkim."{domain}"] selector = "s1", private_key = "keys/{domain}.s1.pem" '
        "and publish the record it prints"
    )


def check_dkim(domain: str, keys: tuple[DkimSetup, ...], lookup: Lookup) -> list[Result]:
    """Each configured selector's record exists, parses, and holds the configured
    private key's public half; the key's type and size are sane."""
    if not keys:
        return [
            failed(
                "dkim.key",
                domain,
                "no DKIM key is configured for this domain: its mail goes out unsigned, and "
                "DMARC can pass through SPF only",
                _keygen_fix(domain),
            )
        ]
    results: list[Result] = []
    for key in keys:
        results.extend(_check_key(key, lookup))
    return results


def _check_key(key: DkimSetup, lookup: Lookup) -> list[Result]:
    name = f"{key.selector}._domainkey.{key.domain}"
    if key.private_key is None:
        return [failed("dkim.key", name, key.key_error, f'fix [dkim."{key.domain}"] private_key')]
    try:
        expected = dkimkeys.dns_record(key.private_key)
        private_public = serialization.load_pem_private_key(
            key.private_key, password=None
        ).public_key()
    except (DKIMError, ValueError, TypeError) as exc:
        return [
            failed(
                "dkim.key",
                name,
                f"{key.key_file} is not a usable private key: {exc}",
                _keygen_fix(key.domain),
            )
        ]
    publish = f"publish {dkimkeys.zone_line(key.domain, key.selector, expected)}"
    results = [_key_size(name, key, private_public)]
    answer = lookup(name, "TXT")
    if answer.outcome is Outcome.ERROR:
        return [*results, _dns_error("dkim.record", name, answer, "the DKIM record")]
    if answer.missing:
        results.append(
            failed(
                "dkim.record",
                name,
                f"no DKIM record: receivers cannot verify the signatures of selector "
                f"{key.selector}",
                publish,
            )
        )
        return results
    if len(answer.records) > 1:
        results.append(
            failed(
                "dkim.record",
                name,
                f"{len(answer.records)} TXT records: receivers may take either",
                f"keep one: {publish.removeprefix('publish ')}",
            )
        )
        return results
    try:
        tags = parse_dkim(answer.records[0])
        published = dkim_public_key(tags)
    except RecordSyntaxError as exc:
        results.append(failed("dkim.record", name, f"the record is malformed: {exc}", publish))
        return results
    results.append(passed("dkim.record", name, f"present, k={tags.get('k', 'rsa')}"))
    if "y" in [f.strip() for f in tags.get("t", "").split(":")]:
        results.append(
            warned(
                "dkim.testing",
                name,
                "t=y: the domain is testing DKIM; receivers may treat signed mail as unsigned",
                f"drop t=y: {publish}",
            )
        )
    if same_public_key(published, private_public):
        results.append(
            passed("dkim.key", name, f"the published key is the public half of {key.key_file}")
        )
    else:
        results.append(
            failed(
                "dkim.key",
                name,
                f"the published key is not the public half of {key.key_file}: every "
                "signature fails to verify",
                publish,
            )
        )
    return results


def _key_size(name: str, key: DkimSetup, public) -> Result:
    if isinstance(public, ed25519.Ed25519PublicKey):
        if key.algorithm != "ed25519-sha256":
            return failed(
                "dkim.size",
                name,
                f"the key is Ed25519 but algorithm is {key.algorithm}",
                f'set [dkim."{key.domain}"] algorithm = "ed25519-sha256"',
            )
        return passed(
            "dkim.size",
            name,
            "Ed25519 (RFC 8463); not every receiver verifies it yet: sign with RSA too",
        )
    if key.algorithm != "rsa-sha256" or not isinstance(public, rsa.RSAPublicKey):
        return failed(
            "dkim.size",
            name,
            f"the key is RSA but algorithm is {key.algorithm}",
            f'set [dkim."{key.domain}"] algorithm = "rsa-sha256"',
        )
    bits = public.key_size
    if bits < 1024:
        return failed(
            "dkim.size", name, f"RSA {bits} bits: receivers ignore keys under 1024 bits (RFC 8301)",
            _keygen_fix(key.domain),
        )  # fmt: skip
    if bits < 2048:
        return warned(
            "dkim.size", name, f"RSA {bits} bits: 2048 is the usual minimum now",
            _keygen_fix(key.domain).replace("--selector s1", "--selector s2 --bits 2048"),
        )  # fmt: skip
    return passed("dkim.size", name, f"RSA {bits} bits")


# -- DMARC -----------------------------------------------------------------------------


def _suggested_dmarc(domain: str) -> str:
    return f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}"


def check_dmarc(domain: str, setup: Setup, lookup: Lookup) -> list[Result]:
    """A DMARC record (or the organizational domain's), its policy, and whether DKIM
    and the return path align with the From domain."""
    name = f"_dmarc.{domain}"
    publish = f"publish {txt_line(name, _suggested_dmarc(domain))}"
    answer = lookup(name, "TXT")
    if answer.outcome is Outcome.ERROR:
        return [_dns_error("dmarc.record", domain, answer, "the DMARC record")]
    org = organizational_domain(domain)
    found_at = name
    if answer.missing and org != domain:
        answer = lookup(f"_dmarc.{org}", "TXT")
        found_at = f"_dmarc.{org}"
    if answer.outcome is Outcome.ERROR:
        return [_dns_error("dmarc.record", domain, answer, "the DMARC record")]
    candidates = list(answer.records)
    valid = [r for r in candidates if is_dmarc(r)]
    if not valid and not any(r.lower().lstrip().startswith("v=dmarc") for r in candidates):
        return [
            failed(
                "dmarc.record",
                domain,
                f"no DMARC record at {name}: Gmail and Yahoo require one of bulk senders",
                publish,
            )
        ]
    if len(valid) > 1:
        return [
            failed(
                "dmarc.record",
                domain,
                f"{len(valid)} DMARC records at {found_at}: receivers ignore them all",
                f"keep one, e.g. {publish.removeprefix('publish ')}",
            )
        ]
    text = (valid or [r for r in candidates if r.lower().lstrip().startswith("v=dmarc")])[0]
    try:
        tags = parse_dmarc(text)
    except RecordSyntaxError as exc:
        return [
            failed(
                "dmarc.record",
                domain,
                f"the DMARC record at {found_at} is malformed: {exc}; receivers ignore it",
                f"replace it: {publish.removeprefix('publish ')}",
            )
        ]
    results = [passed("dmarc.record", domain, f"at {found_at}: {text}")]
    policy = tags.get("sp", tags["p"]) if found_at != name else tags["p"]
    policy = policy.lower()
    if policy == "none":
        stricter = text.replace(f"p={tags['p']}", "p=quarantine", 1)
        results.append(
            warned(
                "dmarc.policy",
                domain,
                "p=none: monitoring only (enough for the Gmail/Yahoo bulk-sender rules, but "
                "mail that forges this domain is still delivered)",
                f"once the reports show all your mail aligned: {txt_line(found_at, stricter)}",
            )
        )
    else:
        results.append(passed("dmarc.policy", domain, f"p={policy}"))
    if not tags.get("rua"):
        results.append(
            warned(
                "dmarc.policy",
                domain,
                "no rua=: no aggregate reports come back, so you cannot see what fails",
                f"add rua=mailto:dmarc-reports@{domain} to the record at {found_at}",
            )
        )
    results.append(_dkim_alignment(domain, setup, tags))
    results.extend(_spf_alignment(domain, setup, tags))
    return results


def _dkim_alignment(domain: str, setup: Setup, tags: dict[str, str]) -> Result:
    if setup.dkim_for(domain):
        return passed(
            "dmarc.dkim_alignment",
            domain,
            f"the node signs with d={domain}, the From domain itself (its key is configured "
            "for it): aligned, strict and relaxed",
        )
    return failed(
        "dmarc.dkim_alignment",
        domain,
        "no DKIM key for this domain: no signature can align with From",
        _keygen_fix(domain),
    )


def _spf_alignment(domain: str, setup: Setup, tags: dict[str, str]) -> list[Result]:
    strict = tags.get("aspf", "r").lower() == "s"
    if not setup.verp_domains:
        return [
            info(
                "dmarc.spf_alignment",
                domain,
                "no traffic class uses VERP: the return path is each job's return_path, or "
                "its From address (aligned unless a job sets another domain)",
            )
        ]
    results = []
    for traffic, bounce in setup.verp_domains:
        subject = f"{domain} {bounce}"
        mode = "strict (aspf=s)" if strict else "relaxed"
        if aligned(domain, bounce, strict=strict):
            results.append(
                passed(
                    "dmarc.spf_alignment",
                    subject,
                    f"[traffic.{traffic}]'s return path @{bounce} aligns with {domain} "
                    f"({mode}: organizational domain {organizational_domain(domain)})",
                )
            )
        else:
            fix = (
                f'use a bounce domain under {domain}: add "bounces.{domain}" to [feedback] '
                f'domains and set [traffic.{traffic}] verp_domain = "bounces.{domain}"'
                if not strict
                else "set aspf=r in the DMARC record (the bounce domain is a subdomain)"
            )
            results.append(
                failed(
                    "dmarc.spf_alignment",
                    subject,
                    f"[traffic.{traffic}]'s return path @{bounce} does not align with {domain} "
                    f"({mode}): DMARC can pass through DKIM only, so one broken signature "
                    "(a footer added by a list) fails DMARC",
                    fix,
                )
            )
    return results
