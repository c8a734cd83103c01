"""Fuzz targets: one function per parser that reads outside data, for atheris and Hypothesis.

Each :class:`Target` takes bytes, feeds them to a parser, and lets through only the errors
that parser documents (``expected``); anything else escaping :func:`run_one` is a crash, a
finding. Targets derive their structure from the bytes themselves (fields split at NUL,
chunks at a length byte), so the coverage-guided engine (atheris, one target per process)
and Hypothesis (``strategy()``: random bytes mixed with well-formed ones) share them.
Several targets also check a property on the way (a round trip, two parsers agreeing): a
broken one is an ``AssertionError``, a crash too.

``seeds()`` are valid inputs, the starting corpus of atheris. Targets never do I/O after
import but for the compose target's key file, written once into a temporary directory.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import random
import tempfile
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset
import h11
import msgspec

from salvo.actors import http
from salvo.actors.resolver import _negative_ttl as negative_ttl
from salvo.actors.resolver import lookup_of
from salvo.core import address, kpis, mx, pauses, protocol, smtp_server, templates
from salvo.core.compose import Composer, KeySpec
from salvo.core.config import ConfigError, parse_config
from salvo.core.errors import InvalidAddressError
from salvo.core.feedback import tokens
from salvo.core.feedback.parse import parse_report
from salvo.core.feedback.unsubscribe import form_fields, is_one_click
from salvo.core.smtp import Capabilities, Reply, ReplyParser, SMTPProtocolError
from salvo.core.suppression_csv import parse_time
from salvo.ext import dkim as xdkim
from salvo.ext import mime
from salvo.ext.errors import DKIMError, TemplateError

__all__ = ["TARGETS", "Target", "run_one"]


@dataclass(frozen=True)
class Target:
    """A parser under fuzzing: ``run(data)`` and the errors it may raise on bad input."""

    name: str
    what: str
    run: Callable[[bytes], None]
    expected: tuple[type[BaseException], ...] = ()
    seeds: Callable[[], list[bytes]] = field(default=lambda: [])
    structured: Callable[[], Any] | None = None  # a Hypothesis strategy of bytes


def run_one(target: Target, data: bytes) -> None:
    """One execution: the documented errors are answers, anything else propagates."""
    with contextlib.suppress(*target.expected):
        target.run(data)


# -- helpers ------------------------------------------------------------------------------


def _text(data: bytes) -> str:
    # Producers' strings come from msgpack or JSON: valid Unicode, never lone surrogates.
    return data.decode("utf-8", "replace")


def _fields(data: bytes, n: int) -> list[str]:
    parts = data.split(b"\x00", n - 1)
    parts += [b""] * (n - len(parts))
    return [_text(p) for p in parts]


def _chunks(data: bytes) -> list[bytes]:
    """Split ``data`` where its first byte says (so the engine explores split points)."""
    if not data:
        return [b""]
    step = data[0] % 17 + 1
    body = data[1:]
    return [body[i : i + step] for i in range(0, len(body), step)] or [b""]


def _pack(obj: Any) -> bytes:
    return msgspec.msgpack.encode(obj)


# -- the producer protocol: job frames ----------------------------------------------------


def _job(data: bytes) -> None:
    try:
        job = protocol.decode_job(data, max_recipients=50)
    except protocol.ProtocolError as exc:
        protocol.error_reply(data, exc)  # what the node answers: must not raise either
        raise
    # A decoded job goes back and forth unchanged (the client library encodes Jobs).
    again = protocol.decode_job(protocol.encode_job(job), max_recipients=50)
    assert again == job, (again, job)
    protocol.encode_reply(protocol.Reply(id=job.id, status="accepted"))


def _reply_frame(data: bytes) -> None:
    reply = protocol.decode_reply(data)
    str(reply.status)


def _reply_frame_seeds() -> list[bytes]:
    accepted = protocol.Accepted("ann@example.org", "<m@fuzz.example>")
    rejected = protocol.Rejected("x@y", "invalid-address", "no @")
    reply = protocol.Reply(id="j", status="partial", accepted=[accepted], rejected=[rejected])
    return [protocol.encode_reply(reply), _pack(_GOOD_JOB)]


_GOOD_JOB = {
    "id": "job-1",
    "from": "Acme <news@fuzz.example>",
    "subject": "Hi {{ name }}",
    "text": "Hello {{ name }}, order {{ order.id }}",
    "html": "<p>Hello {{ name }}</p>",
    "headers": {"Reply-To": "help@fuzz.example", "X-Campaign": "{{ campaign }}"},
    "recipients": [
        {"to": "ann@example.org", "vars": {"name": "Ann", "order": {"id": 7}, "campaign": "c"}},
        {
            "to": "Bob <bob@b\u00fccher.example>",
            "vars": {"name": "Bob", "order": {"id": "x"}, "campaign": "d"},
            "message_id": "<a@b>",
        },
    ],
    "tenant": "acme",
    "campaign": "spring",
    "send_after": 1700000000,
    "expires_in": 3600,
}


def _job_seeds() -> list[bytes]:
    raw = {
        "id": "raw-1",
        "from": "news@fuzz.example",
        "raw": "From: news@fuzz.example\r\nSubject: hi\r\n\r\nbody\r\n",
        "recipients": [{"to": "x@example.com"}],
    }
    return [_pack(_GOOD_JOB), _pack(raw), _pack({"id": "x"}), b"\x80", b""]


def _json_values():
    from hypothesis import strategies as st

    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats()
        | st.text(max_size=40)
        | st.binary(max_size=20)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
        ),
        max_leaves=12,
    )


def _job_strategy():
    from hypothesis import strategies as st

    keys = st.sampled_from([*_GOOD_JOB, "raw", "return_path", "traffic", "v", "x"])
    text = st.text(max_size=60) | st.sampled_from(["", "a@b.c", "{{ x }}", "\r\n", "{{"])
    rcpt = st.fixed_dictionaries(
        {"to": text},
        optional={
            "vars": st.dictionaries(st.text(max_size=8), _json_values(), max_size=3),
            "message_id": text,
        },
    )
    base = st.fixed_dictionaries({k: st.just(v) for k, v in _GOOD_JOB.items()})
    changed = st.tuples(
        base,
        st.dictionaries(keys, text | _json_values() | st.lists(rcpt, max_size=3), max_size=4),
    ).map(lambda t: {**t[0], **t[1]})
    return st.one_of(st.binary(max_size=200), changed.map(_pack))


# -- SMTP replies and EHLO -----------------------------------------------------------------


def _smtp_reply(data: bytes) -> None:
    parser = ReplyParser()
    for chunk in _chunks(data):
        for reply in parser.feed(chunk):
            str(reply)
            assert 200 <= reply.code <= 559, reply
            if reply.code == 250:
                Capabilities.from_ehlo(reply)
        assert parser.buffered <= 2 * 64 * 1024 + 4096, parser.buffered


def _ehlo(data: bytes) -> None:
    lines = _text(data).split("\n")
    caps = Capabilities.from_ehlo(Reply(250, None, ("mx.example", *lines)))
    assert caps.size is None or caps.size > 0
    assert caps.rcpt_max is None or caps.rcpt_max > 0


def _reply_seeds() -> list[bytes]:
    return [
        b"\x03250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 LIMITS RCPTMAX=50\r\n",
        b"\x10550-5.1.1 no such user\r\n550 5.1.1 see https://x.example\r\n",
        b"\x00220 mx.example ESMTP\n421 4.3.2 bye\r\n",
    ]


def _ehlo_seeds() -> list[bytes]:
    return [b"PIPELINING\nSIZE 10240000\nAUTH PLAIN LOGIN\nAUTH=LOGIN\nLIMITS RCPTMAX=20\n"]


def _reply_strategy():
    from hypothesis import strategies as st

    code = st.sampled_from([b"220", b"250", b"354", b"421", b"450", b"550", b"199", b"600"])
    sep = st.sampled_from([b" ", b"-", b"", b"\t"])
    text = st.binary(max_size=30) | st.sampled_from([b"5.1.1 x", b"2.0.0", b"SIZE 0", b""])
    end = st.sampled_from([b"\r\n", b"\n", b"\r", b""])
    line = st.tuples(code, sep, text, end).map(b"".join)
    return st.one_of(
        st.binary(max_size=200),
        st.tuples(st.binary(min_size=1, max_size=1), st.lists(line, max_size=8)).map(
            lambda t: t[0] + b"".join(t[1])
        ),
    )


# -- addresses and IDN ---------------------------------------------------------------------


def _address(data: bytes) -> None:
    text = _text(data)
    try:
        parsed = address.parse_mailbox(text)
    except InvalidAddressError:
        parsed = None
    # mailbox_key is documented to give parse_mailbox's result and errors on the hot path.
    try:
        key = address.mailbox_key(text)
    except InvalidAddressError:
        key = None
    assert (key is None) == (parsed is None), (text, key, parsed)
    if parsed is not None:
        assert key == (parsed.key, parsed.domain), (text, key, parsed)
        # A normalized address is a fixed point.
        assert address.parse_address(str(parsed)).key == parsed.key, (text, parsed)
    with contextlib.suppress(InvalidAddressError):
        address.domain_of_mailbox(text)
    address.normalize_domain(text.rpartition("@")[2])


def _address_seeds() -> list[bytes]:
    return [
        b"ann@example.org",
        "Ann <J\u00f6rg.M@B\u00fccher.Example.>".encode(),
        "\u7528\u6237@\u4f8b\u5b50.\u5e7f\u544a".encode(),
        b"a.b+c@xn--bcher-kva.example",
    ]


def _address_strategy():
    from hypothesis import strategies as st

    label = st.text(st.characters(codec="utf-8"), min_size=0, max_size=12)
    local = st.text(
        st.sampled_from("abcAB.+-_!#~\u00e9\u00df\u0130") | st.characters(), max_size=20
    )
    domain = st.lists(label, min_size=1, max_size=4).map(".".join)
    shaped = st.tuples(
        st.sampled_from(["", "Ann <", "<"]), local, domain, st.sampled_from(["", ">", "."])
    ).map(lambda t: f"{t[0]}{t[1]}@{t[2]}{t[3]}")
    return st.one_of(st.binary(max_size=80), shaped.map(str.encode))


# -- DNS answers -----------------------------------------------------------------------------


def _dns(data: bytes) -> None:
    message = dns.message.from_wire(data, ignore_trailing=True)
    rng = random.Random(0)
    if message.question:
        question = message.question[0]
        qname, rdtype = question.name, question.rdtype
    else:
        qname, rdtype = dns.name.from_text("fuzz.example"), dns.rdatatype.MX
    kind = {dns.rdatatype.MX: "MX", dns.rdatatype.A: "A", dns.rdatatype.AAAA: "AAAA"}.get(rdtype)
    if kind is None or not isinstance(message, dns.message.QueryMessage):
        return
    if message.rcode() == dns.rcode.NXDOMAIN:
        assert negative_ttl(message) >= 0
        return
    try:
        # As dnspython's resolver does for a NOERROR reply: a reply it cannot make an
        # answer of counts as that server failing (its own handling, not salvo's).
        answer = dns.resolver.Answer(qname, rdtype, dns.rdataclass.IN, message)
    except Exception:
        return
    lookup = lookup_of(answer, kind)
    domain = qname.to_text(omit_final_dot=True)
    if kind == "MX":
        hosts = mx.mx_hosts(domain, lookup, rng)
        if isinstance(hosts, mx.MXHosts):
            empty = mx.Lookup.nodata()
            answers = {h: (empty, empty) for _, h in hosts.hosts}
            mx.plan(hosts, answers)
    else:
        hosts = mx.MXHosts(domain, ((0, domain),))
        mx.plan(hosts, {domain: (lookup, mx.Lookup.nodata())}, own_addresses={"192.0.2.1"})
    mx.literal_plan(f"[{domain}]")


def _dns_response(qname: str, rdtype: str, rows: list[str]) -> bytes:
    query = dns.message.make_query(qname, rdtype)
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    for row in rows:
        response.answer.append(dns.rrset.from_text(qname, 300, "IN", rdtype, row))
    return response.to_wire()


def _dns_seeds() -> list[bytes]:
    return [
        _dns_response("fuzz.example.", "MX", ["10 mx1.fuzz.example.", "20 mx2.fuzz.example."]),
        _dns_response("fuzz.example.", "MX", ["0 ."]),
        _dns_response("mx1.fuzz.example.", "A", ["192.0.2.10", "10.0.0.1"]),
        _dns_response("mx1.fuzz.example.", "AAAA", ["2001:db8::1", "::1"]),
        dns.message.make_response(dns.message.make_query("none.example.", "MX")).to_wire(),
    ]


# -- templates, MIME assembly and composition ---------------------------------------------


def _variables(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in text.split("&"):
        name, _, value = item.partition("=")
        node = out
        *parents, last = name.split(".")
        for p in parents:
            node = node.setdefault(p, {}) if isinstance(node.get(p, {}), dict) else {}
        node[last] = value
    return out


def _template(data: bytes) -> None:
    from_, subject, text, html, hname, hvalue, to, variables = _fields(data, 8)
    template = mime.MessageTemplate(
        from_,
        subject,
        text=text or None,
        html=html if html or not text else None,
        headers={hname: hvalue} if hname else None,
    )
    values = _variables(variables)
    missing = template.missing(values)
    try:
        message = template.render(to, values, message_id=None)
    except mime.MissingVariableError as exc:
        assert missing and exc.name == missing[0], (missing, exc.name)
        raise
    assert not missing, missing
    assert b"\r\n\r\n" in message
    mime.smtp_data(message)


def _template_seeds() -> list[bytes]:
    return [
        b"\x00".join(
            [
                b"Acme <news@fuzz.example>",
                b"Hi {{ name }}",
                b"Hello {{ name }}\r\n.dot\r\n",
                b"<p>{{ name }} {{ order.id | raw }}</p>",
                b"Reply-To",
                b"{{ reply }}",
                b"Ann <ann@example.org>",
                b"name=Ann&reply=r@fuzz.example&order.id=7",
            ]
        )
    ]


def _template_strategy():
    from hypothesis import strategies as st

    piece = st.sampled_from(["{{ name }}", "{{", "}}", "{{ a.b }}", "{{ name | x }}", "\r\n", ""])
    field_ = st.lists(piece | st.text(max_size=10), max_size=5).map("".join)
    return st.one_of(
        st.binary(max_size=200),
        st.lists(field_, min_size=8, max_size=8).map(lambda f: "\x00".join(f).encode()),
    )


_KEY_DIR: list[Path] = []


@functools.cache
def _ed25519_pem() -> bytes:
    from salvo.core.dkimkeys import generate_private_key

    return generate_private_key("ed25519-sha256")


@functools.cache
def _composer() -> Composer:
    # Under the runner's own temporary folder when it gives one (libFuzzer ends the
    # process without running Python's exit handlers).
    directory = Path(tempfile.mkdtemp(prefix="salvo-fuzz-", dir=os.environ.get("SALVO_FUZZ_TMP")))
    _KEY_DIR.append(directory)
    key = directory / "fuzz.example.ed25519.pem"
    key.write_bytes(_ed25519_pem())
    specs = [KeySpec("s1", key, "ed25519-sha256", "relaxed/simple")]
    return Composer({"fuzz.example": specs}, clock=lambda: 1_700_000_000.0, cache_size=4)


def _compose(data: bytes) -> None:
    job = protocol.decode_job(data, max_recipients=5)
    checked = templates.job_template(job)  # the render check at intake
    for rcpt in job.recipients:
        if checked is not None and checked.missing(rcpt.vars):
            continue  # intake rejects it with missing-variable
        message = _composer().compose(
            object(), job, rcpt.to, rcpt.vars, rcpt.message_id or "<m@fuzz.example>"
        )
        assert message.endswith(b"\r\n") or job.raw is not None


def _compose_strategy():
    return _job_strategy()


def _dkim_sign(data: bytes) -> None:
    mode = ("relaxed", "simple")[data[0] & 1] if data else "relaxed"
    signer = _signer(mode)
    message = mime.normalize_line_endings(data[1:])
    fields, body = xdkim.parse_headers(message)
    xdkim.canonicalize_headers(fields, mode)
    xdkim.canonicalize_body(body, mode)
    signature = xdkim.sign_many(message, [signer], timestamp=1_700_000_000)
    assert signature.startswith(b"DKIM-Signature:") and signature.endswith(b"\r\n")
    mime.smtp_data(signature + message)


@functools.cache
def _signer(mode: str) -> xdkim.DKIMSigner:
    return xdkim.DKIMSigner(
        "fuzz.example",
        "s1",
        _ed25519_pem(),
        algorithm="ed25519-sha256",
        canonicalization=(mode, mode),
    )


def _dkim_sign_seeds() -> list[bytes]:
    return [
        b"\x01From: a@fuzz.example\r\nTo: b@example.org\r\nSubject: hi\r\n there\r\n\r\n"
        b"body  \r\n\r\n\r\n",
        b"\x00from :a@fuzz.example\nX: y\n\nline\n",
    ]


# -- DKIM keys ---------------------------------------------------------------------------


def _dkim_key(data: bytes) -> None:
    from salvo.core import dkimkeys

    form = data[0] % 4 if data else 0
    body = data[1:]
    if form == 0:
        pem = body
    elif form == 1:
        pem = _armor(b"PRIVATE KEY", body)
    elif form == 2:
        pem = _armor(b"PUBLIC KEY", body)
    else:
        pem = b"v=DKIM1; k=" + (b"ed25519" if len(body) == 32 else b"rsa") + b"; p="
        pem += base64.b64encode(body)
    if form != 2 and form != 3:
        for alg in ("rsa-sha256", "ed25519-sha256"):
            try:
                xdkim.DKIMSigner("fuzz.example", "s1", pem, algorithm=alg)
                xdkim.public_key_record(pem, alg)
            except DKIMError:
                pass
    record = dkimkeys.dns_record(pem)
    assert record.startswith("v=DKIM1; k=")
    dkimkeys.public_key_pem(pem)


def _armor(label: bytes, der: bytes) -> bytes:
    b64 = base64.encodebytes(der)
    return b"-----BEGIN " + label + b"-----\n" + b64 + b"-----END " + label + b"-----\n"


def _dkim_key_seeds() -> list[bytes]:
    from cryptography.hazmat.primitives import serialization

    ed = serialization.load_pem_private_key(_ed25519_pem(), None)
    der = ed.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub = ed.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    raw = ed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return [b"\x00" + _ed25519_pem(), b"\x01" + der, b"\x02" + pub, b"\x03" + raw]


# -- bounce and ARF reports, feedback tokens -------------------------------------------------


def _feedback(data: bytes) -> None:
    report = parse_report(data)
    msgspec.json.encode(report)  # stored and published as JSON: must encode


_SECRET = b"fuzz-secret-0123456789abcdef0123"


def _tokens(data: bytes) -> None:
    text = _text(data)
    for found in (
        tokens.read_verp_address(_SECRET, text),
        tokens.read_unsubscribe_mailto(_SECRET, text),
    ):
        if found is not None:
            seq, idx = found
            assert tokens.read_verp_token(_SECRET, tokens.verp_token(_SECRET, seq, idx))
    found = tokens.read_unsubscribe_token(_SECRET, text)
    if found is not None:
        assert tokens.unsubscribe_token(_SECRET, *found) == text


def _feedback_seeds() -> list[bytes]:
    return [
        b"From: MAILER-DAEMON@mx.example\r\nTo: b-abc@bounces.fuzz.example\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--B\r\n"
        b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n"
        b"Final-Recipient: rfc822; ann@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n\r\n--B\r\n"
        b"Content-Type: message/rfc822\r\n\r\nMessage-ID: <m@fuzz.example>\r\n\r\nx\r\n--B--\r\n",
        b"From: fbl@isp.example\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=feedback-report; boundary="C"\r\n\r\n'
        b"--C\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n"
        b"Original-Rcpt-To: ann@example.org\r\n\r\n--C--\r\n",
        b"Subject: Out of office\r\nAuto-Submitted: auto-replied\r\n\r\naway\r\n",
    ]


def _token_seeds() -> list[bytes]:
    return [
        tokens.verp_address(_SECRET, 12, 3, "bounces.fuzz.example").encode(),
        tokens.unsubscribe_mailto(_SECRET, 1, 0, "fuzz.example").encode(),
        tokens.unsubscribe_token(_SECRET, "acme", "ann@example.org").encode(),
    ]


# -- the inbound SMTP server (feedback listener) --------------------------------------------


def _smtp_server(data: bytes) -> None:
    server = smtp_server.SMTPServer(
        "fb.fuzz.example", lambda rcpt: rcpt.endswith("@fuzz.example"), max_size=4096
    )
    server.greeting().encode()
    for chunk in _chunks(data):
        if server.closed:
            break
        pending = list(server.receive(chunk))
        while pending:
            item = pending.pop(0)
            if isinstance(item, smtp_server.Message):
                pending.extend(server.stored(len(item.data) % 2 == 0, "id"))
            else:
                assert 200 <= item.code < 600, item
                item.encode()


def _smtp_server_seeds() -> list[bytes]:
    return [
        b"\x07EHLO c.example\r\nMAIL FROM:<> SIZE=100 BODY=8BITMIME\r\n"
        b"RCPT TO:<b-x@fuzz.example>\r\nDATA\r\nSubject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n",
        b"\x02HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRSET\r\nVRFY x\r\nNOOP\r\n",
    ]


def _smtp_server_strategy():
    from hypothesis import strategies as st

    command = st.sampled_from(
        [
            b"EHLO x",
            b"HELO x",
            b"MAIL FROM:<a@b.c>",
            b"MAIL FROM:<> SIZE=99999999",
            b"RCPT TO:<r@fuzz.example>",
            b"RCPT TO:<x@y>",
            b"DATA",
            b".",
            b"..x",
            b"RSET",
            b"NOOP",
            b"QUIT",
            b"VRFY",
            b"HELP",
            b"BDAT 1",
            b"Subject: x",
            b"",
        ]
    ) | st.binary(max_size=30)
    end = st.sampled_from([b"\r\n", b"\n", b"\r"])
    lines = st.lists(st.tuples(command, end).map(b"".join), max_size=12).map(b"".join)
    return st.one_of(
        st.binary(max_size=200),
        st.tuples(st.binary(min_size=1, max_size=1), lines).map(b"".join),
    )


# -- HTTP: requests, query strings, form and JSON bodies ------------------------------------


def _http(data: bytes) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=http.MAX_HEAD)
    conn.receive_data(data)
    conn.receive_data(b"")
    body = b""
    head = None
    for _ in range(64):  # bounded: each event consumes input
        event = conn.next_event()
        if isinstance(event, h11.Request):
            head = http.request_head(event)
        elif isinstance(event, h11.Data):
            body += event.data
        elif event is h11.NEED_DATA or isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    if head is None:
        return
    method, _path, query, headers = head
    assert method == method.upper()
    is_one_click(body, headers.get("content-type", ""))
    form_fields(body)
    with contextlib.suppress(kpis.KpiQueryError):  # a 400 answer
        _kpi_query(query.encode("utf-8", "surrogateescape"))


def _http_seeds() -> list[bytes]:
    return [
        b"GET /api/kpis?tenant=acme&window=15m HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer abc\r\n\r\n",
        b"POST /u/abc HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 26\r\n\r\nList-Unsubscribe=One-Click",
        b"POST /api/pause HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5\r\n{"a":\r\n0\r\n\r\n',
    ]


def _kpi_query(data: bytes) -> None:
    query = _text(data)
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        return  # the admin API answers 400 for a malformed query string
    parsed = kpis.parse_query(pairs)
    assert 60 <= parsed.window_s <= kpis.MAX_WINDOW
    parsed.minutes(1_700_000_000.0)
    parsed.dim  # noqa: B018  (the spool key of the filter)


def _kpi_seeds() -> list[bytes]:
    return [b"tenant=acme&campaign=spring&provider=gmail&window=15m", b"window=1d", b""]


def _control(data: bytes) -> None:
    body = pauses.control_body(data)
    pauses.parse_for(body.get("for"))
    pauses.check(body["scope"], body["name"])
    pauses.check(body["scope"], body["name"], pauses.CANCEL_SCOPES)


def _control_seeds() -> list[bytes]:
    return [
        b'{"scope": "tenant", "name": "acme", "for": "2h", "reason": "x"}',
        b'{"scope": "campaign", "name": "spring", "for": "1.5d"}',
        b'{"scope": "provider", "name": "gmail"}',
    ]


def _control_strategy():
    import json

    from hypothesis import strategies as st

    obj = st.fixed_dictionaries(
        {},
        optional={
            "scope": st.sampled_from(["tenant", "campaign", "provider", "source", ""])
            | _json_values(),
            "name": st.text(max_size=20) | _json_values(),
            "for": st.sampled_from(["2h", "30", "0", "1e9", " 5 M ", "1.5d", "-1"])
            | _json_values(),
        },
    )
    return st.one_of(
        st.binary(max_size=100),
        obj.map(lambda o: json.dumps(o, default=repr).encode()),
    )


# -- operator input: the config file, CSV times --------------------------------------------


def _config(data: bytes) -> None:
    parse_config(data, base_dir="", source="fuzz")


def _config_seeds() -> list[bytes]:
    root = Path(__file__).resolve().parent.parent
    example = root / "salvo.example.toml"
    seeds = [b"", b"[node]\n", b"[dns]\ntimeout = '5s'\nnameservers = ['127.0.0.1:53']\n"]
    if example.exists():
        seeds.append(example.read_bytes())
    return seeds


def _config_strategy():
    from hypothesis import strategies as st

    table = st.sampled_from(
        [
            "node",
            "spool",
            "dns",
            "http",
            "ingress",
            "feedback",
            "unsubscribe",
            "pools.a",
            "traffic.bulk",
            "routes",
            "dkim",
            "alerts",
            "x",
        ]
    )
    key = st.sampled_from(
        [
            "timeout",
            "max_mx_hosts",
            "size",
            "nameservers",
            "domains",
            "base_url",
            "path",
            "listen",
            "token_file",
            "rate",
            "max_connections",
            "x",
        ]
    )
    value = st.sampled_from(
        [
            "1",
            "-1",
            "'5m'",
            "'x'",
            "true",
            "[]",
            "['a']",
            "{}",
            "1e999",
            "'1GiB'",
            "'0s'",
            "'127.0.0.1:0'",
            "''",
            "0",
        ]
    )
    line = st.tuples(key, value).map(lambda t: f"{t[0]} = {t[1]}\n")
    doc = st.lists(
        st.tuples(table, st.lists(line, max_size=4)).map(lambda t: f"[{t[0]}]\n" + "".join(t[1])),
        max_size=4,
    ).map(lambda parts: "".join(parts).encode())
    return st.one_of(st.binary(max_size=200), doc)


def _csv_time(data: bytes) -> None:
    parse_time(_text(data))


TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target(
            "job",
            "job frames: protocol.decode_job",
            _job,
            (protocol.ProtocolError,),
            _job_seeds,
            _job_strategy,
        ),
        Target(
            "reply_frame",
            "reply frames: protocol.decode_reply",
            _reply_frame,
            (protocol.ProtocolError,),
            _reply_frame_seeds,
        ),
        Target(
            "smtp_reply",
            "SMTP replies: smtp.ReplyParser (bytes split anywhere)",
            _smtp_reply,
            (SMTPProtocolError,),
            _reply_seeds,
            _reply_strategy,
        ),
        Target("ehlo", "EHLO keywords: smtp.Capabilities.from_ehlo", _ehlo, (), _ehlo_seeds),
        Target(
            "address",
            "addresses and IDN: address.parse_mailbox, mailbox_key",
            _address,
            (InvalidAddressError,),
            _address_seeds,
            _address_strategy,
        ),
        Target(
            "dns",
            "DNS answers: dnspython wire -> resolver.lookup_of -> mx.mx_hosts, plan",
            _dns,
            (dns.exception.DNSException,),
            _dns_seeds,
        ),
        Target(
            "template",
            "templates: ext.mime.MessageTemplate, render, smtp_data",
            _template,
            (TemplateError,),
            _template_seeds,
            _template_strategy,
        ),
        Target(
            "compose",
            "job to signed message: compose.Composer (render or raw, DKIM)",
            _compose,
            (protocol.ProtocolError, TemplateError, DKIMError),
            _job_seeds,
            _compose_strategy,
        ),
        Target(
            "dkim_sign",
            "raw messages: ext.dkim parse_headers, canonicalize, sign",
            _dkim_sign,
            (DKIMError,),
            _dkim_sign_seeds,
        ),
        Target(
            "dkim_key",
            "DKIM keys: ext.dkim key loader, dkimkeys.dns_record",
            _dkim_key,
            (DKIMError,),
            _dkim_key_seeds,
        ),
        Target(
            "feedback",
            "bounce/ARF/auto-reply reports: feedback.parse_report",
            _feedback,
            (),
            _feedback_seeds,
        ),
        Target(
            "tokens",
            "VERP and unsubscribe tokens: feedback.tokens.read_*",
            _tokens,
            (),
            _token_seeds,
        ),
        Target(
            "smtp_server",
            "inbound SMTP: smtp_server.SMTPServer (bytes split anywhere)",
            _smtp_server,
            (),
            _smtp_server_seeds,
            _smtp_server_strategy,
        ),
        Target(
            "http",
            "HTTP requests: h11 + http.request_head, unsubscribe form bodies",
            _http,
            (h11.RemoteProtocolError,),
            _http_seeds,
        ),
        Target(
            "kpi_query",
            "/api/kpis query strings: kpis.parse_query",
            _kpi_query,
            (kpis.KpiQueryError,),
            _kpi_seeds,
        ),
        Target(
            "control",
            "/api/pause JSON bodies: pauses.control_body, parse_for, check",
            _control,
            (pauses.PauseError,),
            _control_seeds,
            _control_strategy,
        ),
        Target(
            "config",
            "the config file: config.parse_config",
            _config,
            (ConfigError,),
            _config_seeds,
            _config_strategy,
        ),
        Target(
            "csv_time",
            "suppression CSV times: suppression_csv.parse_time",
            _csv_time,
            (ValueError,),
            lambda: [b"2024-05-01T12:00:00Z", b"1700000000"],
        ),
    ]
}


def cleanup() -> None:
    """Remove the compose target's key directory (the runner calls it at exit)."""
    import shutil

    for directory in _KEY_DIR:
        shutil.rmtree(directory, ignore_errors=True)
    _KEY_DIR.clear()
