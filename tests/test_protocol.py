"""The producer protocol: valid jobs decode; every bad frame gives a typed error naming why."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from salvo.core.protocol import (
    Accepted,
    InvalidJob,
    Job,
    JobTooLarge,
    MalformedFrame,
    ProtocolError,
    Recipient,
    Rejected,
    Reply,
    SchemaError,
    decode_job,
    decode_reply,
    encode_job,
    encode_reply,
    error_reply,
    peek_job_id,
)

pack = msgspec.msgpack.encode

JOB = {
    "id": "job-123",
    "tenant": "acme",
    "campaign": "spring",
    "traffic": "marketing",
    "from": "Acme <news@acme.example>",
    "return_path": "bounces@acme.example",
    "subject": "Hi {{ name }}",
    "text": "Hello {{ name }}",
    "html": "<p>Hello {{ name }}</p>",
    "headers": {"Reply-To": "help@acme.example"},
    "recipients": [{"to": "ann@example.org", "vars": {"name": "Ann"}}],
    "send_after": None,
    "expires_in": None,
}


def job(**changes):
    data = {**JOB, **changes}
    return {k: v for k, v in data.items() if v is not DROP}


DROP = object()
# A job whose recipient variables nest 100,000 arrays deep.
DEEP = pack(job(recipients=[{"to": "a@x", "vars": {"v": "@@"}}])).replace(
    b"\xa2@@", b"\x91" * 100_000 + b"\xc0"
)


def test_full_job_decodes():
    got = decode_job(pack(JOB))
    assert got.id == "job-123" and got.from_ == "Acme <news@acme.example>"
    assert got.tenant == "acme" and got.campaign == "spring" and got.traffic == "marketing"
    assert got.recipients == [Recipient(to="ann@example.org", vars={"name": "Ann"})]
    assert got.headers == {"Reply-To": "help@acme.example"}
    assert got.not_before() is None and got.expires_in is None and got.v == 1


def test_minimal_job_gets_documented_defaults():
    got = decode_job(
        pack(
            {
                "id": "j",
                "from": "a@x.example",
                "subject": "",
                "text": "t",
                "recipients": [{"to": "b@y.example"}],
            }
        )
    )
    assert (got.tenant, got.campaign, got.traffic, got.return_path) == (
        "default",
        None,
        "default",
        None,
    )
    assert got.html is None and got.headers == {} and got.raw is None
    assert got.recipients[0].vars == {} and got.recipients[0].message_id is None


def test_raw_job_and_times():
    raw = job(subject=None, text=None, html=None, headers={}, raw="From: a@x\r\n\r\nbody\r\n")
    assert decode_job(pack(raw)).raw.startswith("From:")
    assert decode_job(pack(job(send_after=1_700_000_000))).not_before() == 1_700_000_000
    got = decode_job(pack(job(send_after="2030-01-02T03:04:05Z", expires_in=3600)))
    assert got.not_before() == 1893553445.0 and got.expires_in == 3600


def test_unknown_fields_are_ignored():
    got = decode_job(
        pack(job(future_field={"x": [1, 2]}, recipients=[{"to": "a@b.example", "new": 1}]))
    )
    assert got.recipients[0].to == "a@b.example"


def test_job_and_reply_round_trip():
    original = decode_job(pack(JOB))
    assert decode_job(encode_job(original)) == original
    assert decode_job(encode_job(JOB)) == original
    reply = Reply(
        id="job-123",
        status="partial",
        accepted=[Accepted("ann@example.org", "<1@acme.example>")],
        rejected=[Rejected("bob@example.org", "suppressed")],
    )
    assert decode_reply(encode_reply(reply)) == reply
    wire = msgspec.msgpack.decode(encode_reply(Reply(id="x", status="retry", error="spool full")))
    assert wire == {
        "id": "x",
        "status": "retry",
        "accepted": [],
        "rejected": [],
        "error": "spool full",
    }


@pytest.mark.parametrize(
    ("frame", "error", "field", "text"),
    [
        (b"\xc1", MalformedFrame, None, "not a msgpack value"),
        (b"\x81", MalformedFrame, None, "truncated"),
        (pack(JOB) + b"\x00", MalformedFrame, None, "trailing"),
        (DEEP, MalformedFrame, None, "nested too deeply"),
        (pack([JOB]), SchemaError, None, "must be a msgpack map"),
        (pack("job"), SchemaError, None, "must be a msgpack map"),
        (pack(job(id=5)), SchemaError, "id", "Expected `str`, got `int`"),
        (pack(job(recipients={"to": "x"})), SchemaError, "recipients", "Expected `array`"),
        (pack(job(recipients=[{"to": 1}])), SchemaError, "recipients[0].to", "Expected `str`"),
        (pack(job(headers={"X-A": 1})), SchemaError, "headers[...]", "Expected `str`"),
        (pack(job(headers={1: "a"})), SchemaError, "headers", "Expected `str`"),
        (pack(job(send_after="tomorrow")), SchemaError, "send_after", "datetime"),
        (pack(job(send_after="2030-01-01T00:00:00")), SchemaError, "send_after", "timezone"),
        (pack(job(send_after=-1)), SchemaError, "send_after", ">= 0"),
        (pack(job(expires_in=0)), SchemaError, "expires_in", "> 0"),
        (pack(job(expires_in="1h")), SchemaError, "expires_in", "Expected `float | null`"),
        (pack(job(id=DROP)), SchemaError, "id", "required field is missing"),
        (pack(job(**{"from": DROP})), SchemaError, "from", "required field is missing"),
        (pack(job(recipients=DROP)), SchemaError, "recipients", "required field is missing"),
        (pack(job(recipients=[{"vars": {}}])), SchemaError, "recipients[0].to", "missing"),
        (pack(job(id="")), InvalidJob, "id", "printable"),
        (pack(job(id="a\nb")), InvalidJob, "id", "printable"),
        (pack(job(id="x" * 256)), InvalidJob, "id", "255"),
        (pack(job(v=2)), InvalidJob, "v", "unsupported protocol version 2"),
        (pack(job(**{"from": " "})), InvalidJob, "from", "empty"),
        (pack(job(**{"from": "a@x\r\nBcc: e@vil"})), InvalidJob, "from", "CR, LF"),
        (pack(job(return_path="b@x\n")), InvalidJob, "return_path", "CR, LF"),
        (pack(job(subject="Hi\r\nBcc: e@vil")), InvalidJob, "subject", "CR, LF"),
        (pack(job(subject="Hi\x00")), InvalidJob, "subject", "NUL"),
        (pack(job(headers={"X-A": "v\r\nX-B: w"})), InvalidJob, "headers['X-A']", "CR, LF"),
        (pack(job(headers={"Bad Name": "v"})), InvalidJob, "headers", "invalid header name"),
        (pack(job(headers={"X:A": "v"})), InvalidJob, "headers", "invalid header name"),
        (pack(job(headers={"subject": "v"})), InvalidJob, "headers", "set by salvo"),
        (pack(job(headers={"Content-Type": "v"})), InvalidJob, "headers", "set by salvo"),
        (
            pack(job(recipients=[{"to": "a@x"}, {"to": "b@x\r\n"}])),
            InvalidJob,
            "recipients[1].to",
            "CR",
        ),
        (pack(job(recipients=[{"to": ""}])), InvalidJob, "recipients[0].to", "empty"),
        (
            pack(job(recipients=[{"to": "a@x", "message_id": "<a\n@b>"}])),
            InvalidJob,
            "recipients[0].message_id",
            "control",
        ),
        (pack(job(recipients=[])), InvalidJob, "recipients", "at least one"),
        (pack(job(raw="From: a@x\r\n\r\nhi")), InvalidJob, None, "either raw or subject"),
        (pack(job(subject=DROP)), InvalidJob, "subject", "required"),
        (pack(job(text=None, html=None)), InvalidJob, "text", "give text, html"),
        (
            pack(job(recipients=[{"to": "a@x.example"}] * 10_001)),
            JobTooLarge,
            "recipients",
            "10001 recipients; the limit is 10000",
        ),
    ],
)
def test_bad_frames_give_typed_errors_naming_the_field(frame, error, field, text):
    with pytest.raises(error) as info:
        decode_job(frame)
    assert isinstance(info.value, ProtocolError)
    assert info.value.field == field
    assert text in str(info.value)
    if field:
        assert str(info.value).startswith(f"{field}: ")


def test_size_limit_is_checked_before_decoding():
    big = pack(job(text="x" * 1000))
    with pytest.raises(JobTooLarge, match=rf"job frame is {len(big)} bytes; the limit is 1000"):
        decode_job(big, max_bytes=1000)
    assert decode_job(big, max_bytes=len(big)).text == "x" * 1000
    with pytest.raises(JobTooLarge):
        decode_job(pack(job(recipients=[{"to": "a@x"}] * 3)), max_recipients=2)


def test_error_reply_carries_the_id_when_it_can_be_read():
    frame = pack(job(id="job-9", recipients=[]))
    with pytest.raises(ProtocolError) as info:
        decode_job(frame)
    reply = error_reply(frame, info.value)
    assert reply == Reply(
        id="job-9", status="error", error="recipients: at least one recipient is required"
    )
    assert peek_job_id(b"\xc1") == ""
    assert peek_job_id(pack([1])) == ""
    assert peek_job_id(pack({"id": 7})) == ""
    assert peek_job_id(pack({"id": "a\nb"})) == ""


def test_decode_reply_errors_are_typed():
    with pytest.raises(MalformedFrame):
        decode_reply(b"\xc1")
    with pytest.raises(SchemaError, match="status"):
        decode_reply(pack({"id": "x", "status": "maybe"}))


def test_job_struct_is_what_python_producers_build():
    built = Job(
        id="j", from_="a@x.example", subject="s", text="t", recipients=[Recipient(to="b@y.example")]
    )
    assert msgspec.msgpack.decode(encode_job(built))["from"] == "a@x.example"
    assert decode_job(encode_job(built)) == built


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_protocol_errors(data):
    with contextlib.suppress(ProtocolError):
        decode_job(data)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
job_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=8) | st.integers(0, 2**32),
        "from": st.text(max_size=8) | st.none(),
        "subject": st.text(max_size=8) | st.none(),
        "text": st.text(max_size=8),
        "raw": st.text(max_size=8),
        "headers": st.dictionaries(
            st.text(max_size=8), st.text(max_size=8) | st.booleans(), max_size=3
        ),
        "recipients": st.lists(
            st.fixed_dictionaries(
                {"to": st.text(max_size=8)},
                optional={"vars": msgpack_values, "message_id": st.text(max_size=8)},
            ),
            max_size=3,
        ),
        "send_after": st.floats() | st.text(max_size=25) | st.integers(-(2**40), 2**40),
        "expires_in": st.floats() | st.integers(-(2**40), 2**40),
        "v": st.integers(0, 3),
        "extra": msgpack_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(msgpack_values | job_like)
def test_arbitrary_msgpack_values_raise_only_protocol_errors(value):
    try:
        got = decode_job(pack(value))
    except ProtocolError as exc:
        assert str(exc)
    else:
        assert got.id and got.recipients
