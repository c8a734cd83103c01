"""SPF (RFC 7208): parse a record, evaluate ``check_host`` for an address, count lookups.

Everything goes through a :data:`~salvo.core.doctor.model.Lookup`; nothing here does I/O.
The limits are RFC 7208's (section 4.6.4): at most 10 terms that query DNS (``include``,
``a``, ``mx``, ``ptr``, ``exists``, ``redirect``) in one evaluation, at most 10 names per
``mx`` and ``ptr``, at most 2 lookups that find nothing ("void lookups").
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from .model import Answer, Lookup, Outcome, normal_name

MAX_LOOKUPS = 10
MAX_VOID_LOOKUPS = 2
MAX_NAMES = 10  # per mx and ptr
MAX_DEPTH = 20  # include/redirect nesting the evaluation follows (loops end here)

QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
LOOKUP_TERMS = frozenset({"include", "a", "mx", "ptr", "exists", "redirect"})

_MODIFIER = re.compile(r"^([A-Za-z][A-Za-z0-9_.-]*)=(.*)$", re.S)
_MECHANISM = re.compile(r"^([+\-~?]?)([A-Za-z0-9]+)(.*)$", re.S)
_DUAL_CIDR = re.compile(r"^(?::([^/]+))?(?:/(\d{1,3}))?(?://(\d{1,3}))?$")
_MACRO = re.compile(r"%(?:\{([A-Za-z])(\d*)(r?)([.\-+,/_=]*)\}|(.))", re.S)
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


class SpfSyntaxError(ValueError):
    """The record cannot be parsed; the message says which term and why."""


@dataclass(frozen=True)
class Term:
    qualifier: str  # "+", "-", "~", "?"
    name: str  # a mechanism of MECHANISMS
    target: str = ""  # the domain-spec (may hold macros) or the address
    cidr4: int | None = None
    cidr6: int | None = None

    def __str__(self) -> str:
        text = ("" if self.qualifier == "+" else self.qualifier) + self.name
        if self.target:
            text += f":{self.target}"
        if self.cidr4 is not None:
            text += f"/{self.cidr4}"
        if self.cidr6 is not None:
            text += f"//{self.cidr6}"
        return text


@dataclass(frozen=True)
class Record:
    terms: tuple[Term, ...]
    redirect: str | None = None
    exp: str | None = None

    @property
    def all_term(self) -> Term | None:
        return next((t for t in self.terms if t.name == "all"), None)


def is_spf(text: str) -> bool:
    """Whether a TXT string is an SPF record (``v=spf1`` alone or followed by a space)."""
    return text.lower() == "v=spf1" or text.lower().startswith("v=spf1 ")


def parse(text: str) -> Record:
    """The terms of an SPF record; :class:`SpfSyntaxError` names the bad term."""
    if not is_spf(text):
        raise SpfSyntaxError("does not start with 'v=spf1'")
    terms: list[Term] = []
    modifiers: dict[str, str] = {}
    for word in text.split(" ")[1:]:
        if not word:
            continue
        modifier = _MODIFIER.match(word)
        if modifier:
            name = modifier.group(1).lower()
            if name in modifiers and name in ("redirect", "exp"):
                raise SpfSyntaxError(f"'{name}=' appears twice")
            if name in ("redirect", "exp"):
                _check_domain_spec(modifier.group(2), word)
            modifiers[name] = modifier.group(2)
            continue
        terms.append(_mechanism(word))
    return Record(tuple(terms), modifiers.get("redirect"), modifiers.get("exp"))


def _mechanism(word: str) -> Term:
    match = _MECHANISM.match(word)
    if not match or match.group(2).lower() not in MECHANISMS:
        raise SpfSyntaxError(f"unknown mechanism {word!r}")
    qualifier, name, rest = match.group(1) or "+", match.group(2).lower(), match.group(3)
    if name == "all":
        if rest:
            raise SpfSyntaxError(f"'all' takes no argument: {word!r}")
        return Term(qualifier, name)
    if name in ("include", "exists"):
        if not rest.startswith(":") or len(rest) < 2:
            raise SpfSyntaxError(f"'{name}' needs a domain: {word!r}")
        _check_domain_spec(rest[1:], word)
        return Term(qualifier, name, rest[1:])
    if name == "ptr":
        if rest and not rest.startswith(":"):
            raise SpfSyntaxError(f"bad 'ptr' term {word!r}")
        if rest:
            _check_domain_spec(rest[1:], word)
        return Term(qualifier, name, rest[1:])
    if name in ("ip4", "ip6"):
        return _ip_term(qualifier, name, rest, word)
    cidr = _DUAL_CIDR.match(rest)  # a, mx
    if not cidr:
        raise SpfSyntaxError(f"bad '{name}' term {word!r}")
    target, c4, c6 = cidr.group(1) or "", cidr.group(2), cidr.group(3)
    if target:
        _check_domain_spec(target, word)
    if (c4 is not None and int(c4) > 32) or (c6 is not None and int(c6) > 128):
        raise SpfSyntaxError(f"prefix length out of range in {word!r}")
    return Term(qualifier, name, target, _int(c4), _int(c6))


def _ip_term(qualifier: str, name: str, rest: str, word: str) -> Term:
    if not rest.startswith(":"):
        raise SpfSyntaxError(f"'{name}' needs an address: {word!r}")
    address, _, prefix = rest[1:].partition("/")
    version = 4 if name == "ip4" else 6
    try:
        ip = ipaddress.ip_address(address)
        if ip.version != version:
            raise ValueError
        length = int(prefix) if prefix else (32 if version == 4 else 128)
        ipaddress.ip_network(f"{ip}/{length}", strict=False)
        if not prefix.isdigit() and prefix:
            raise ValueError
    except ValueError:
        raise SpfSyntaxError(f"not an IPv{version} address or network: {word!r}") from None
    given = length if prefix else None  # shown as written: "ip4:192.0.2.1", not ".../32"
    return Term(qualifier, name, address, *((given, None) if version == 4 else (None, given)))


def _int(text: str | None) -> int | None:
    return None if text is None else int(text)


def _check_domain_spec(spec: str, word: str) -> None:
    if not spec or any(c.isspace() for c in spec) or not spec.isascii():
        raise SpfSyntaxError(f"bad domain in {word!r}")
    for match in _MACRO.finditer(spec):
        literal = match.group(5)
        if literal is not None and literal not in "%_-":
            raise SpfSyntaxError(f"bad macro '%{literal}' in {word!r}")
        if match.group(1) and match.group(1).lower() not in "slodiphv":
            raise SpfSyntaxError(f"unknown macro letter in {word!r}")
    if "%" not in spec and not _valid_domain(spec):
        raise SpfSyntaxError(f"not a domain name in {word!r}")


def _valid_domain(name: str) -> bool:
    name = name.rstrip(".")
    labels = name.split(".")
    return 0 < len(name) <= 253 and len(labels) >= 2 and all(_LABEL.match(x) for x in labels)


@dataclass(frozen=True)
class Verdict:
    """The result of ``check_host``: pass, fail, softfail, neutral, none, permerror or
    temperror; why; and how many DNS-querying terms it took."""

    result: str
    reason: str
    lookups: int


class _Stop(Exception):
    def __init__(self, result: str, reason: str) -> None:
        super().__init__(reason)
        self.result, self.reason = result, reason


@dataclass
class _Evaluation:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    sender: str
    helo: str
    lookup: Lookup
    lookups: int = 0
    voids: int = 0
    cache: dict[tuple[str, str], Answer] = field(default_factory=dict)

    def query(self, name: str, rdtype: str) -> Answer:
        key = (normal_name(name), rdtype)
        if key not in self.cache:
            self.cache[key] = self.lookup(*key)
        answer = self.cache[key]
        if answer.outcome is Outcome.ERROR:
            raise _Stop("temperror", f"{rdtype} {key[0]}: {answer.error}")
        if answer.missing:
            self.voids += 1
            if self.voids > MAX_VOID_LOOKUPS:
                raise _Stop("permerror", f"more than {MAX_VOID_LOOKUPS} lookups found nothing")
        return answer

    def count(self, term: str) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise _Stop("permerror", f"more than {MAX_LOOKUPS} DNS-querying terms (at {term!r})")

    def addresses(self, name: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        answer = self.query(name, "A" if self.ip.version == 4 else "AAAA")
        return [ipaddress.ip_address(a) for a in answer.records if _is_ip(a)]

    def expand(self, spec: str, domain: str) -> str:
        return expand_macros(spec, ip=self.ip, sender=self.sender, domain=domain, helo=self.helo)

    def check(self, domain: str, depth: int = 0) -> tuple[str, str]:
        if depth > MAX_DEPTH:
            raise _Stop("permerror", "include/redirect nested too deep (a loop?)")
        if not _valid_domain(domain):
            return "none", f"{domain!r} is not a domain name"
        answer = self.lookup(normal_name(domain), "TXT")  # not a term: not counted, not void
        if answer.outcome is Outcome.ERROR:
            raise _Stop("temperror", f"TXT {domain}: {answer.error}")
        records = [r for r in answer.records if is_spf(r)]
        if not records:
            return "none", f"{domain} has no SPF record"
        if len(records) > 1:
            raise _Stop("permerror", f"{domain} has {len(records)} SPF records")
        try:
            record = parse(records[0])
        except SpfSyntaxError as exc:
            raise _Stop("permerror", f"{domain}: {exc}") from None
        for term in record.terms:
            if self.matches(term, domain, depth):
                result = QUALIFIERS[term.qualifier]
                return result, f"{term} in {domain}'s record"
        if record.redirect is not None:
            self.count(f"redirect={record.redirect}")
            target = self.expand(record.redirect, domain)
            result, reason = self.check(target, depth + 1)
            if result == "none":
                raise _Stop("permerror", f"redirect={target}: {reason}")
            return result, reason
        return "neutral", f"no term of {domain}'s record matched"

    def matches(self, term: Term, domain: str, depth: int) -> bool:
        name = term.name
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            length = term.cidr4 if name == "ip4" else term.cidr6
            network = ipaddress.ip_network(
                term.target if length is None else f"{term.target}/{length}", strict=False
            )
            return self.ip.version == network.version and self.ip in network
        self.count(str(term))
        target = self.expand(term.target, domain) if term.target else domain
        if name == "include":
            result, reason = self.check(target, depth + 1)
            if result in ("temperror", "permerror"):
                raise _Stop(result, reason)
            if result == "none":
                raise _Stop("permerror", f"include:{target}: {reason}")
            return result == "pass"
        if name == "exists":
            answer = self.query(target, "A")
            return bool(answer.records)
        if name == "a":
            return self._in_any(self.addresses(target), term)
        if name == "mx":
            hosts = [r.split()[-1] for r in self.query(target, "MX").records]
            if len(hosts) > MAX_NAMES:
                raise _Stop("permerror", f"{target} has more than {MAX_NAMES} MX hosts")
            return any(self._in_any(self.addresses(h), term) for h in hosts if h != ".")
        # ptr: the validated names of the address that end in the target
        reverse = ipaddress.ip_address(self.ip).reverse_pointer
        names = self.query(reverse, "PTR").records[:MAX_NAMES]
        suffix = normal_name(target)
        for ptr_name in names:
            ptr_name = normal_name(ptr_name)
            if (ptr_name == suffix or ptr_name.endswith("." + suffix)) and self.ip in (
                self.addresses(ptr_name)
            ):
                return True
        return False

    def _in_any(self, addresses: list, term: Term) -> bool:
        length = term.cidr4 if self.ip.version == 4 else term.cidr6
        for address in addresses:
            prefix = length if length is not None else address.max_prefixlen
            if self.ip in ipaddress.ip_network(f"{address}/{prefix}", strict=False):
                return True
        return False


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_host(
    ip: str, domain: str, lookup: Lookup, *, sender: str = "", helo: str = ""
) -> Verdict:
    """RFC 7208's ``check_host(ip, domain, sender)``: would ``domain``'s SPF let ``ip``
    send mail? ``sender`` defaults to ``postmaster@domain``."""
    evaluation = _Evaluation(
        ipaddress.ip_address(ip), sender or f"postmaster@{domain}", helo or domain, lookup
    )
    try:
        result, reason = evaluation.check(normal_name(domain))
    except _Stop as stop:
        result, reason = stop.result, stop.reason
    return Verdict(result, reason, evaluation.lookups)


def expand_macros(spec: str, *, ip, sender: str, domain: str, helo: str = "") -> str:
    """A domain-spec with its macros (``%{i}``, ``%{d2}``, ``%{ir}``...) expanded."""
    local, _, sender_domain = sender.rpartition("@")
    ip = ipaddress.ip_address(ip)
    ip_text = str(ip) if ip.version == 4 else ".".join(ip.exploded.replace(":", ""))
    values = {
        "s": sender,
        "l": local or "postmaster",
        "o": sender_domain or domain,
        "d": domain,
        "i": ip_text,
        "p": "unknown",
        "v": "in-addr" if ip.version == 4 else "ip6",
        "h": helo or domain,
    }

    def one(match: re.Match) -> str:
        literal = match.group(5)
        if literal is not None:
            return {"%": "%", "_": " ", "-": "%20"}.get(literal, "")
        value = values.get(match.group(1).lower(), "")
        delimiters = match.group(4) or "."
        parts = re.split("[" + re.escape(delimiters) + "]", value)
        if match.group(3):
            parts.reverse()
        if match.group(2):
            parts = parts[-int(match.group(2)) :] if int(match.group(2)) else parts
        return ".".join(parts)

    expanded = _MACRO.sub(one, spec)
    while len(expanded) > 253 and "." in expanded:  # RFC 7208 7.3: drop labels on the left
        expanded = expanded.split(".", 1)[1]
    return expanded


@dataclass(frozen=True)
class LookupCount:
    """The DNS-querying terms of a record and everything it includes (every branch,
    as a receiver evaluating a non-matching address would), and what is wrong on the way."""

    total: int
    chain: tuple[str, ...]  # "include:_spf.x.example (3)" per term that queries DNS
    problems: tuple[str, ...]


def count_lookups(domain: str, lookup: Lookup, *, limit: int = 50) -> LookupCount:
    """Walk ``domain``'s record and its includes and redirects, counting the terms that
    query DNS; stops after ``limit`` of them (a loop or a huge tree)."""
    chain: list[str] = []
    problems: list[str] = []
    seen: set[str] = set()

    def walk(name: str, depth: int) -> int:
        name = normal_name(name)
        if name in seen or depth > MAX_DEPTH:
            problems.append(f"{name} is included more than once (a loop?)")
            return 0
        seen.add(name)
        answer = lookup(name, "TXT")
        records = [r for r in answer.records if is_spf(r)]
        if answer.outcome is Outcome.ERROR:
            problems.append(f"{name}: {answer.error}")
            return 0
        if len(records) != 1:
            problems.append(f"{name} has {len(records)} SPF records (needs exactly 1)")
            return 0
        try:
            record = parse(records[0])
        except SpfSyntaxError as exc:
            problems.append(f"{name}: {exc}")
            return 0
        total = 0
        steps = [(str(t), t.name, t.target) for t in record.terms if t.name in LOOKUP_TERMS]
        if record.redirect is not None:
            steps.append((f"redirect={record.redirect}", "redirect", record.redirect))
        for text, kind, target in steps:
            if len(chain) >= limit:
                break
            total += 1
            index = len(chain)
            chain.append(text)
            if kind in ("include", "redirect") and "%" not in target:
                inner = walk(target, depth + 1)
                total += inner
                chain[index] = f"{text} ({inner} inside)"
        return total

    total = walk(domain, 0)
    return LookupCount(total, tuple(chain), tuple(problems))


def with_address(record: str, ip: str) -> str:
    """``record`` with ``ip4:ADDR`` (or ``ip6:``) added before its ``all`` or ``redirect``."""
    version = ipaddress.ip_address(ip).version
    term = f"ip{version}:{ip}"
    words = record.split()
    for index, word in enumerate(words):
        if word.lower().lstrip("+-~?") == "all" or word.lower().startswith("redirect="):
            return " ".join([*words[:index], term, *words[index:]])
    return " ".join([*words, term])
