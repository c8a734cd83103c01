"""The SMTP reply parser: exact bytes in, replies or SMTPProtocolError out, bounded."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from salvo.core.smtp import Reply, ReplyParser, SMTPProtocolError
from salvo.core.smtp.reply import MAX_LINE, MAX_LINES, MAX_REPLY_BYTES

VALID = [
    (b"250 OK\r\n", [Reply(250, None, ("OK",))]),
    (b"250\r\n", [Reply(250, None, ("",))]),
    (b"250 \r\n", [Reply(250, None, ("",))]),
    (b"220 mx.example ESMTP\n", [Reply(220, None, ("mx.example ESMTP",))]),  # bare LF
    (
        b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 10\r\n",
        [Reply(250, None, ("mx.example", "PIPELINING", "SIZE 10"))],
    ),
    (b"250-\r\n250 last\r\n", [Reply(250, None, ("", "last"))]),
    (b"550 5.1.1 No such user\r\n", [Reply(550, (5, 1, 1), ("No such user",))]),
    (
        b"550-5.7.1 blocked\r\n550-5.7.1 see url\r\n550 5.7.1 end\r\n",
        [Reply(550, (5, 7, 1), ("blocked", "see url", "end"))],
    ),
    (b"250 2.0.0\r\n", [Reply(250, (2, 0, 0), ("",))]),
    # An ESC whose class differs from the code's is text, not a status (RFC 2034).
    (b"550 4.1.1 odd\r\n", [Reply(550, None, ("4.1.1 odd",))]),
    (b"250 2.1.10x\r\n", [Reply(250, None, ("2.1.10x",))]),
    (b"250 a\tb\r\n", [Reply(250, None, ("a\tb",))]),
    ("250 café\r\n".encode(), [Reply(250, None, ("café",))]),  # RFC 6531 UTF-8 text
    (b"250 a\r\n354 b\r\n", [Reply(250, None, ("a",)), Reply(354, None, ("b",))]),
    (b"421 4.3.2 bye\r\n", [Reply(421, (4, 3, 2), ("bye",))]),
    (b"250 partial", []),
]


@pytest.mark.parametrize(("data", "replies"), VALID)
def test_valid_replies(data, replies):
    assert ReplyParser().feed(data) == replies


@pytest.mark.parametrize(("data", "replies"), VALID)
def test_byte_by_byte_gives_the_same(data, replies):
    parser = ReplyParser()
    got = []
    for i in range(len(data)):
        got += parser.feed(data[i : i + 1])
    assert got == replies


INVALID = [
    b"hello\r\n",
    b"25 short\r\n",
    b"2500 long\r\n",
    b"150 one-yz is not SMTP\r\n",
    b"650 six\r\n",
    b"270 second digit\r\n",
    b"250OK\r\n",
    b"250-a\r\n251 b\r\n",  # code changes inside a multiline reply
    b"250 \x00nul\r\n",
    b"250 \x1bescape\r\n",
    b"250 bare\rcr\r\n",
    b"250 \xff\xfe\r\n",  # neither ASCII nor UTF-8
    b"\r\n",
    b"250" + b"x" * 10 + b"\r\n",
    b"250 " + b"x" * MAX_LINE + b"\r\n",
    b"250 " + b"x" * (MAX_LINE + 10),  # no end of line yet, already too long
    b"250-x\r\n" * (MAX_LINES + 1),
    (b"250-" + b"x" * 1000 + b"\r\n") * (MAX_REPLY_BYTES // 1000 + 1),
]


@pytest.mark.parametrize("data", INVALID, ids=lambda d: repr(d[:20]))
def test_invalid_replies_raise_protocol_error(data):
    parser = ReplyParser()
    with pytest.raises(SMTPProtocolError):
        parser.feed(data)
    assert parser.buffered == 0
    with pytest.raises(SMTPProtocolError):  # and it stays failed
        parser.feed(b"250 OK\r\n")


def test_long_but_allowed_line():
    text = b"x" * (MAX_LINE - 6)
    assert ReplyParser().feed(b"250 " + text + b"\r\n") == [Reply(250, None, (text.decode(),))]


def test_clear_drops_read_ahead():
    parser = ReplyParser()
    parser.feed(b"250-half\r\n250 inj")
    parser.clear()
    assert parser.buffered == 0
    assert parser.feed(b"220 fresh\r\n") == [Reply(220, None, ("fresh",))]


def test_predicates_and_text():
    r = Reply(451, (4, 7, 1), ("try", "later"))
    assert (r.is_positive, r.is_intermediate, r.is_transient, r.is_permanent) == (
        False,
        False,
        True,
        False,
    )
    assert r.text == "try later"
    assert str(r) == "451 4.7.1 try later"
    assert Reply(354).is_intermediate and Reply(250).is_positive and Reply(550).is_permanent


def test_a_10mb_banner_fails_with_bounded_buffer():
    parser = ReplyParser()
    chunk = b"x" * 65536
    with pytest.raises(SMTPProtocolError):
        parser.feed(b"220 ")
        for _ in range(160):  # 10 MB at most; the limit trips long before
            parser.feed(chunk)
            assert parser.buffered <= MAX_LINE + MAX_REPLY_BYTES


_pieces = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [b"250", b"-", b" ", b"\r\n", b"\n", b"\r", b"550 5.1.1 x", b"2", b"\xc3\xa9", b"\xff"]
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_pieces, max_size=40), st.data())
def test_arbitrary_streams_only_raise_protocol_errors(pieces, data):
    stream = b"".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    parser = ReplyParser()
    start = 0
    try:
        for end in [*cuts, len(stream)]:
            for reply in parser.feed(stream[start:end]):
                assert 200 <= reply.code < 600 and len(reply.lines) <= MAX_LINES
            start = end
            assert parser.buffered <= MAX_LINE + MAX_REPLY_BYTES
    except SMTPProtocolError:
        pass


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 3))
def test_endless_multiline_is_cut_off(width, step):
    parser = ReplyParser()
    line = b"250-" + b"y" * min(width, MAX_LINE - 6) + b"\r\n"
    with pytest.raises(SMTPProtocolError):
        for _ in range(MAX_LINES + 2):  # bounded: the line limit trips before this ends
            for i in range(0, len(line), step * 700):
                parser.feed(line[i : i + step * 700])
            assert parser.buffered <= MAX_LINE + MAX_REPLY_BYTES
