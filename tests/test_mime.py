"""Example-based tests of salvo.ext.mime: every message must parse back with Python's
``email`` package to exactly what was rendered, with CRLF only and bounded lines."""

import email
import email.policy
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from salvo.ext.errors import (
    HeaderInjectionError,
    InvalidAddressError,
    MissingVariableError,
    TemplateError,
    TemplateSyntaxError,
)
from salvo.ext.mime import MessageTemplate, make_message_id, normalize_line_endings, smtp_data

FROM = "Shop <news@shop.example>"
DATE = datetime(2024, 3, 5, 7, 8, 9, tzinfo=UTC)


def parse(msg: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(msg, policy=email.policy.default)


def lines(msg: bytes) -> list[bytes]:
    assert msg.endswith(b"\r\n")
    return msg[:-2].split(b"\r\n")


def assert_wellformed(msg: bytes) -> None:
    """CRLF only, no line over 998 octets, headers under 78 unless one token is longer."""
    stripped = msg.replace(b"\r\n", b"")
    assert b"\r" not in stripped and b"\n" not in stripped
    head, _, _ = msg.partition(b"\r\n\r\n")
    for line in lines(msg):
        assert len(line) <= 998
    for line in head.split(b"\r\n"):
        if len(line) > 78:
            assert b" " not in line.strip(), line


def content(part) -> str:
    return part.get_content().replace("\r\n", "\n")


def text_of(value: str) -> str:
    """What a text part reads as after rendering: LF line ends and a final newline."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    return value if value.endswith("\n") else value + "\n"


def render(tpl: MessageTemplate, to="Ann <ann@example.org>", variables=None, **kw) -> bytes:
    msg = tpl.render(to, variables or {}, date=DATE, **kw)
    assert_wellformed(msg)
    return msg


@pytest.mark.parametrize(
    ("text", "html", "ctype"),
    [
        ("Hello {{ name }}\n", None, "text/plain"),
        (None, "<p>Hello {{ name }}</p>", "text/html"),
        ("Hello {{ name }}\n", "<p>Hello {{ name }}</p>", "multipart/alternative"),
    ],
)
@pytest.mark.parametrize("name", ["Ann", "Zoë Łukasiewicz", "Ζωή 日本語 🎉"])
def test_round_trip_body_combinations(text, html, ctype, name):
    tpl = MessageTemplate(FROM, "Hi {{ name }}", text=text, html=html)
    msg = parse(render(tpl, f"{name} <ann@example.org>", {"name": name}))
    assert msg.get_content_type() == ctype
    assert str(msg["Subject"]) == f"Hi {name}"
    assert msg["To"].addresses[0].display_name == name
    assert msg["To"].addresses[0].addr_spec == "ann@example.org"
    assert msg["From"].addresses[0].display_name == "Shop"
    assert msg["MIME-Version"] == "1.0"
    assert msg["Date"].datetime == DATE
    if text is not None:
        assert content(msg.get_body(("plain",))) == f"Hello {name}\n"
    if html is not None:
        assert content(msg.get_body(("html",))) == f"<p>Hello {name}</p>\n"
    assert list(msg.iter_attachments()) == []


def test_header_order_and_extra_headers():
    tpl = MessageTemplate(
        FROM,
        "s",
        text="t",
        headers={
            "Reply-To": "Hélène Support <help@shop.example>",
            "List-Unsubscribe": "<https://shop.example/u/{{ uid }}>",
            "X-Campaign": "spring-{{ uid }}",
        },
    )
    raw = render(tpl, variables={"uid": 7}, message_id="<abc@shop.example>")
    names = [ln.split(b":")[0] for ln in raw.partition(b"\r\n\r\n")[0].split(b"\r\n")]
    names = [n for n in names if not n.startswith(b" ")]
    assert names == [
        b"From",
        b"To",
        b"Subject",
        b"Date",
        b"Message-ID",
        b"MIME-Version",
        b"Reply-To",
        b"List-Unsubscribe",
        b"X-Campaign",
        b"Content-Type",
        b"Content-Transfer-Encoding",
    ]
    msg = parse(raw)
    assert msg["Reply-To"].addresses[0].display_name == "Hélène Support"
    assert msg["List-Unsubscribe"] == "<https://shop.example/u/7>"
    assert msg["X-Campaign"] == "spring-7"
    assert msg["Message-ID"] == "<abc@shop.example>"


def test_attachments_round_trip_tuple_and_dict():
    blob = bytes(range(256)) * 40
    tpl = MessageTemplate(
        FROM,
        "s",
        text="body",
        html="<b>body</b>",
        attachments=[
            ("report.pdf", "application/pdf", blob),
            {
                "filename": "naïve résumé — long name " * 4 + ".txt",
                "content_type": "text/plain",
                "data": b"a\nb",
            },
        ],
    )
    raw = render(tpl)
    msg = parse(raw)
    assert msg.get_content_type() == "multipart/mixed"
    assert content(msg.get_body(("plain",))) == "body\n"
    assert content(msg.get_body(("html",))) == "<b>body</b>\n"
    atts = list(msg.iter_attachments())
    assert [a.get_filename() for a in atts] == [
        "report.pdf",
        "naïve résumé — long name " * 4 + ".txt",
    ]
    assert atts[0].get_content() == blob
    assert atts[1].get_payload(decode=True) == b"a\nb"
    for line in lines(raw):
        assert len(line) <= 78


def test_text_only_with_attachment_is_mixed_of_plain():
    tpl = MessageTemplate(FROM, "s", text="x", attachments=[("a.bin", "application/x-a", b"\0")])
    msg = parse(render(tpl))
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "application/x-a"]


@pytest.mark.parametrize(
    "bad",
    [
        ("a.bin", "multipart/mixed", b""),
        ("a\r\nX: y", "text/plain", b""),
        ("a", "text", b""),
        ("a", "text/plain", "str data"),
        ("", "text/plain", b""),
        ("a", "text/plain"),
    ],
)
def test_bad_attachments_refused(bad):
    with pytest.raises(TemplateError):
        MessageTemplate(FROM, "s", text="x", attachments=[bad])


def test_transfer_encoding_choice():
    tpl = MessageTemplate(FROM, "s", text="{{ v }}")
    cte = lambda v: parse(render(tpl, variables={"v": v}))["Content-Transfer-Encoding"]  # noqa: E731
    assert cte("plain ascii") == "7bit"
    assert cte("mostly ascii, one é") == "quoted-printable"
    assert cte("ascii with NUL \x00 and ESC \x1b") == "quoted-printable"
    assert cte("x" * 999) == "quoted-printable"
    assert cte("x" * 998) == "7bit"
    assert cte("все по-русски, полностью") == "base64"
    for v in ["mostly ascii, one é", "x" * 5000, "все по-русски", "a\x00b\x7f"]:
        assert content(parse(render(tpl, variables={"v": v}))) == text_of(v)


def test_quoted_printable_details():
    tpl = MessageTemplate(FROM, "s", text="{{ v }}")
    raw = render(tpl, variables={"v": "é trailing space \n.dot line\n" + "long line " * 40})
    body = raw.partition(b"\r\n\r\n")[2]
    assert b" \r\n" not in body  # trailing space encoded
    assert b"\r\n=2Edot line" in body
    assert all(len(ln) <= 76 for ln in lines(body))


def test_7bit_body_containing_boundary_falls_back():
    tpl = MessageTemplate(FROM, "s", text="{{ v }}", html="<p>x</p>")
    boundary = re.search(rb'boundary="([^"]+)"', render(tpl, variables={"v": ""})).group(1)
    v = "--" + boundary.decode() + "\n--" + boundary.decode() + "--\n"
    msg = parse(render(tpl, variables={"v": v}))
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert content(msg.get_body(("plain",))) == v


def test_html_escaping_and_raw():
    tpl = MessageTemplate(FROM, "{{ v }}", text="{{ v }}", html="<p>{{ v }}|{{ v | raw }}</p>")
    v = "<script>&\"'</script>"
    msg = parse(render(tpl, variables={"v": v}))
    assert str(msg["Subject"]) == v
    assert content(msg.get_body(("plain",))) == v + "\n"
    html = content(msg.get_body(("html",)))
    # Jinja2's (markupsafe's) entities for the quotes: &#34; and &#39;
    assert html == f"<p>&lt;script&gt;&amp;&#34;&#39;&lt;/script&gt;|{v}</p>\n"


def test_literal_braces_and_whitespace_forms():
    tpl = MessageTemplate(FROM, "{{{{ a }} {{a}} {{  a  }}}}", text="x")
    assert str(parse(render(tpl, variables={"a": 1}))["Subject"]) == "{{ a }} 1 1}}"


def test_value_types():
    tpl = MessageTemplate(FROM, "{{ s }}|{{ i }}|{{ f }}|{{ b }}|{{ n }}", text="x")
    msg = parse(render(tpl, variables={"s": "x", "i": 3, "f": 1.5, "b": True, "n": None}))
    assert str(msg["Subject"]) == "x|3|1.5|True|"
    with pytest.raises(TemplateError, match="list"):
        render(tpl, variables={"s": [1], "i": 3, "f": 1.5, "b": True, "n": None})


def test_dotted_paths_and_missing_variables():
    tpl = MessageTemplate(FROM, "{{ user.name.first }}", text="{{ user.id }}")
    msg = parse(render(tpl, variables={"user": {"name": {"first": "Ann"}, "id": 9}}))
    assert str(msg["Subject"]) == "Ann"
    with pytest.raises(MissingVariableError) as exc:
        render(tpl, variables={"user": {"id": 9}})
    assert exc.value.name == "user.name.first" and exc.value.field == "Subject"
    with pytest.raises(MissingVariableError) as exc:
        render(tpl, variables={"user": {"name": {"first": "A"}}})
    assert exc.value.name == "user.id" and exc.value.field == "text"
    with pytest.raises(MissingVariableError, match=r"user\.name\.first"):
        render(tpl, variables={"user": "not a dict"})
    html = MessageTemplate(FROM, "s", html="{{ x }}", headers={"X-A": "{{ y }}"})
    with pytest.raises(MissingVariableError) as exc:
        render(html, variables={"x": 1})
    assert (exc.value.name, exc.value.field) == ("y", "X-A")


@pytest.mark.parametrize(
    "template",
    [
        "{{ a",
        "x {{ }}",
        "{{ 1a }}",
        "{{ a..b }}",
        "{{ a-b }}",
        "{{ a | nosuch }}",
        "{{ a | }}",
        "{% if a %}",
        "{% for a in b %}{% endif %}",
        "{{ a.b() }}",
        "{{ a b }}",
        "{{ {{ a }}",
    ],
)
def test_syntax_errors(template):
    with pytest.raises(TemplateSyntaxError):
        MessageTemplate(FROM, "s", text=template)
    with pytest.raises(TemplateSyntaxError):
        MessageTemplate(FROM, template, text="x")


def test_raw_filter_outside_html_changes_nothing():
    # As Jinja2's safe without autoescaping: the value as it is.
    tpl = MessageTemplate(FROM, "{{ a | raw }}", text="{{ a | safe }}")
    msg = parse(render(tpl, variables={"a": "<b>&"}))
    assert str(msg["Subject"]) == "<b>&"
    assert content(msg.get_body(("plain",))) == "<b>&\n"


@pytest.mark.parametrize(
    "name",
    [
        "From",
        "to",
        "SUBJECT",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "content-transfer-encoding",
        "Bcc",
        "Return-Path",
        "X Bad",
        "X:y",
        "",
        "X-é",
        "X" * 77,
    ],
)
def test_header_override_and_bad_names_refused(name):
    with pytest.raises(TemplateError):
        MessageTemplate(FROM, "s", text="x", headers={name: "v"})


def test_duplicate_header_names_refused():
    with pytest.raises(TemplateError, match="twice"):
        MessageTemplate(FROM, "s", text="x", headers={"X-A": "1", "x-a": "2"})


def test_template_needs_a_body():
    with pytest.raises(TemplateError):
        MessageTemplate(FROM, "s")


INJECTIONS = [
    "a\r\nBcc: evil@x",
    "a\nb",
    "a\rb",
    "a\x00b",
    "a\x1bb",
    "a\u2028b",
    "a\u2029b",
    "a\x85b",
    "a\x7fb",
]


def one_templated(field: str) -> MessageTemplate:
    """A template whose only placeholder is {{ v }}, in ``field``."""
    return MessageTemplate(
        "{{ v }} <news@shop.example>" if field == "From" else FROM,
        "{{ v }}" if field == "Subject" else "s",
        text="x",
        headers={"X-Campaign": "{{ v }}"}
        if field == "X-Campaign"
        else {"Reply-To": "{{ v }} <r@shop.example>"}
        if field == "Reply-To"
        else None,
    )


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize("field", ["Subject", "X-Campaign", "From", "Reply-To"])
def test_header_injection_refused(field, value):
    tpl = one_templated(field)
    render(tpl, variables={"v": "ok"})
    with pytest.raises(HeaderInjectionError) as exc:
        tpl.render("a@b.example", {"v": value})
    assert exc.value.field == field


@pytest.mark.parametrize("value", INJECTIONS)
def test_recipient_injection_refused(value):
    with pytest.raises(HeaderInjectionError) as exc:
        one_templated("Subject").render(value + " <a@b.example>", {"v": "x"})
    assert exc.value.field == "To"


def test_header_injection_in_static_text_refused_at_compile():
    with pytest.raises(HeaderInjectionError):
        MessageTemplate(FROM, "a\r\nBcc: x@y", text="x")
    with pytest.raises(HeaderInjectionError):
        MessageTemplate(FROM, "s", text="x", headers={"X-A": "a\nb"})


def test_header_looking_text_stays_inside_the_value():
    tpl = MessageTemplate(FROM, "{{ v }}", text="x", headers={"X-A": "{{ v }}"})
    msg = parse(render(tpl, variables={"v": "hi Bcc: evil@x.example"}))
    assert msg["Bcc"] is None
    assert str(msg["Subject"]) == "hi Bcc: evil@x.example"
    assert msg["X-A"] == "hi Bcc: evil@x.example"


@pytest.mark.parametrize(
    "v",
    ["=?utf-8?q?=0A?=", "x =?utf-8?b?DQpCY2M6IGV2aWxAeA==?= y", "=?iso-8859-1?q?a?= =?utf-8?q?b?="],
)
def test_encoded_word_lookalikes_read_literally(v):
    tpl = MessageTemplate(
        "{{ v }} <news@shop.example>", "{{ v }}", text="x", headers={"X-A": "{{ v }}"}
    )
    raw = render(tpl, variables={"v": v})
    msg = parse(raw)
    assert str(msg["Subject"]) == v
    assert msg["X-A"] == v
    assert msg["From"].addresses[0].display_name == v
    assert v.encode() not in raw.partition(b"\r\n\r\n")[0]


def test_verbatim_headers_refuse_what_they_cannot_encode():
    tpl = MessageTemplate(FROM, "s", text="x", headers={"List-Unsubscribe": "<{{ u }}>"})
    with pytest.raises(HeaderInjectionError):
        render(tpl, variables={"u": "https://x.example/?a=?b"})
    with pytest.raises(HeaderInjectionError):
        render(tpl, variables={"u": "https://x.example/é"})
    with pytest.raises(TemplateError):
        render(tpl, variables={"u": "https://x.example/" + "a" * 1000})


@pytest.mark.parametrize(
    "to",
    [
        "ann@example.org",
        "Ann <ann@example.org>",
        '"Doe, Ann" <ann@example.org>',
        "Ann Ö <ann@example.org>",
        "<ann@example.org>",
        "  Ann   <ann@example.org>  ",
        '"A \\"q\\" \\\\ b" <a.b+c@sub.example.org>',
    ],
)
def test_recipient_forms(to):
    msg = parse(render(MessageTemplate(FROM, "s", text="x"), to))
    addr = msg["To"].addresses[0]
    assert addr.addr_spec in ("ann@example.org", "a.b+c@sub.example.org")
    expected = {
        "ann@example.org": "",
        "Ann <ann@example.org>": "Ann",
        '"Doe, Ann" <ann@example.org>': "Doe, Ann",
        "Ann Ö <ann@example.org>": "Ann Ö",
        "<ann@example.org>": "",
        "  Ann   <ann@example.org>  ": "Ann",
        '"A \\"q\\" \\\\ b" <a.b+c@sub.example.org>': 'A "q" \\ b',
    }[to]
    assert addr.display_name == expected


def test_eai_address_stays_utf8():
    raw = render(MessageTemplate(FROM, "s", text="x"), "Jörg <jörg@bücher.example>")
    assert "To: =?utf-8?b?SsO2cmc=?= <jörg@bücher.example>\r\n".encode() in raw


@pytest.mark.parametrize(
    "to",
    [
        "",
        "ann",
        "ann@@example.org",
        "a@b@c",
        "ann @example.org",
        "ann@exa mple.org",
        "ann@example.org\r\nBcc: x@y",
        "ann\x00@example.org",
        "Ann <ann@example.org",
        "Ann ann@example.org>",
        ".ann@example.org",
        "ann..b@example.org",
        "ann@example.org.",
        "a(b)@example.org",
        "ann@\u00a0example.org",
        "x" * 65 + "@example.org",
        "=?utf-8?q?a?=@example.org",
        "a,b@example.org",
    ],
)
def test_bad_recipients_refused(to):
    tpl = MessageTemplate(FROM, "s", text="x")
    with pytest.raises((InvalidAddressError, HeaderInjectionError)):
        tpl.render(to, {})


def test_long_headers_fold_and_long_tokens_encode():
    tpl = MessageTemplate(FROM, "{{ v }}", text="x", headers={"X-Long": "{{ v }}"})
    words = " ".join(f"word{i}" for i in range(1000))
    for v in [words, "x" * 5000, "é" * 5000, "a " + "y" * 5000 + " b", words + " é"]:
        raw = render(tpl, "A " * 2000 + "<ann@example.org>", {"v": v})
        msg = parse(raw)
        assert str(msg["Subject"]) == v
        assert msg["X-Long"] == v
        assert msg["To"].addresses[0].display_name == ("A " * 2000).strip()
        head = raw.partition(b"\r\n\r\n")[0]
        assert max(len(ln) for ln in head.split(b"\r\n")) <= 78


def test_message_id_generation_and_validation():
    mid = make_message_id("shop.example")
    assert re.fullmatch(r"<[0-9a-f]+\.[0-9a-f]{24}@shop\.example>", mid)
    assert make_message_id("shop.example") != mid
    assert make_message_id("bücher.example").endswith("@xn--bcher-kva.example>")
    tpl = MessageTemplate(FROM, "s", text="x")
    assert parse(render(tpl))["Message-ID"].endswith("@shop.example>")
    assert parse(render(tpl, message_id="a.b@c"))["Message-ID"] == "<a.b@c>"
    for bad in ["<a b@c>", "<a@c>\r\nBcc: x@y", "abc", "<a@b@c>"]:
        with pytest.raises(TemplateError):
            tpl.render("a@b.example", {}, bad)
    custom = MessageTemplate(FROM, "s", text="x", message_id_domain="mail.example")
    assert parse(render(custom))["Message-ID"].endswith("@mail.example>")


def test_dates():
    tpl = MessageTemplate(FROM, "s", text="x")
    later = datetime(2024, 3, 5, 7, 8, 9, tzinfo=timezone(timedelta(hours=-5, minutes=-30)))
    raw = tpl.render("a@b.example", {}, date=later)
    assert b"\r\nDate: Tue, 05 Mar 2024 07:08:09 -0530\r\n" in raw
    now = parse(tpl.render("a@b.example", {}))["Date"].datetime
    assert abs((now - datetime.now(UTC)).total_seconds()) < 5


def test_dynamic_from():
    tpl = MessageTemplate("{{ rep }} at Shop <news@shop.example>", "s", text="x")
    msg = parse(render(tpl, variables={"rep": "Zoë"}))
    assert msg["From"].addresses[0].display_name == "Zoë at Shop"
    assert msg["Message-ID"].endswith("@shop.example>")


def test_mapping_variables_and_none():
    tpl = MessageTemplate(FROM, "static", text="static")
    assert parse(tpl.render("a@b.example", None))["Subject"] == "static"
    from types import MappingProxyType

    tpl = MessageTemplate(FROM, "{{ a.b }}", text="x")
    msg = parse(tpl.render("a@b.example", MappingProxyType({"a": MappingProxyType({"b": 1})})))
    assert msg["Subject"] == "1"


SMUGGLING = [
    "\n.\n",
    "\r.\r",
    "\r\n.\n",
    "\n.\r\n",
    "\r\n\x00.\r\n",
    "\r\n.\r\n",
    ".\r\n",
    "x\r\n.",
    "\n..\n",
    "\r\n.\r\nMAIL FROM:<x@y>\r\n",
]


@pytest.mark.parametrize("body", SMUGGLING)
@pytest.mark.parametrize("ctx", ["", "é", "все"])
def test_smuggling_in_bodies(body, ctx):
    tpl = MessageTemplate(FROM, "s", text="a{{ v }}b", html="<p>{{ v | raw }}</p>")
    raw = render(tpl, variables={"v": ctx + body})
    wire = smtp_data(raw)
    assert wire.count(b"\r\n.\r\n") == 1 and wire.endswith(b"\r\n.\r\n")
    msg = parse(raw)
    assert content(msg.get_body(("plain",))) == text_of("a" + ctx + body + "b")


def test_smtp_data_and_normalize():
    assert smtp_data(b"") == b".\r\n"
    assert smtp_data(b"a") == b"a\r\n.\r\n"
    assert smtp_data(b"a\r\n") == b"a\r\n.\r\n"
    assert smtp_data(b".a\n.\r\rb\r\n..") == b"..a\r\n..\r\n\r\nb\r\n...\r\n.\r\n"
    clean = b"x\r\ny\r\n"
    assert normalize_line_endings(clean) is clean
    assert normalize_line_endings(b"a\rb\nc\r\nd\n\re\r") == b"a\r\nb\r\nc\r\nd\r\n\r\ne\r\n"
    assert normalize_line_endings(b"") == b""


def test_static_template_renders_identically_but_for_date_and_id():
    tpl = MessageTemplate(
        FROM, "s", text="t", html="h", attachments=[("a", "application/x-a", b"1")]
    )
    a = tpl.render("a@b.example", {}, "<1@x>", date=DATE)
    b = tpl.render("a@b.example", {}, "<1@x>", date=DATE)
    assert a == b
    (att,) = parse(a).iter_attachments()
    assert att.get_payload(decode=True) == b"1"
