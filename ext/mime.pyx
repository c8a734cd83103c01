# cython: language_level=3, boundscheck=True, wraparound=True, cdivision=True
"""MIME template renderer: compile a message template once, render it per recipient.

A :class:`MessageTemplate` splits every field into static chunks and placeholder slots at
construction; everything static (headers without placeholders, MIME skeleton, attachments)
is encoded to bytes there. :meth:`MessageTemplate.render` only substitutes values, checks
and encodes what depends on them, and joins byte chunks once. The byte loops (line-ending
normalization, body scanning, quoted-printable, base64 line wrapping, SMTP dot-stuffing)
are typed C loops. See docs/templates.md for the template language and the policy per field.
"""

from cpython.object cimport PyObject
from libc.stdint cimport uint64_t
from libc.string cimport memchr, memcpy

import binascii
import os
import time

from salvo.ext.errors import (
    HeaderInjectionError,
    InvalidAddressError,
    MissingVariableError,
    TemplateError,
    TemplateSyntaxError,
)
from salvo.ext import template_parse
from salvo.ext.template_render import (
    DEFAULT_MAX_LOOP_ITEMS,
    DEFAULT_MAX_OUTPUT,
    Program,
    compile_tree,
)

__all__ = [
    "MessageTemplate",
    "make_message_id",
    "normalize_line_endings",
    "smtp_data",
]

cdef extern from "Python.h":
    PyObject* _new_bytes "PyBytes_FromStringAndSize"(const char*, Py_ssize_t)
    int _PyBytes_Resize(PyObject**, Py_ssize_t)
    char* _bytes_buf "PyBytes_AS_STRING"(PyObject*)
    void _decref "Py_DECREF"(PyObject*)

cdef enum:
    MAX_LINE = 998   # RFC 5322 hard limit, CRLF excluded
    FOLD_AT = 78     # RFC 5322 recommended limit
    QP_LINE = 76     # RFC 2045 quoted-printable / base64 line limit
    LONG_TOKEN = 900 # a verbatim header token this long could not stay under MAX_LINE
    EW_BYTES = 45    # UTF-8 octets per encoded word: "=?utf-8?b?" + 60 base64 + "?=" = 72

cdef bytes _HEX = b"0123456789ABCDEF"


# ---------------------------------------------------------------------------------------
# Byte loops


cdef PyObject* _alloc(Py_ssize_t n) except NULL:
    cdef PyObject* raw = _new_bytes(NULL, n)
    if raw == NULL:
        raise MemoryError()
    return raw


cdef bytes _finish(PyObject* raw, Py_ssize_t n):
    """Shrink a bytes object filled by a C loop to its used length and hand it to Python."""
    if _PyBytes_Resize(&raw, n) < 0:
        raise MemoryError()
    cdef bytes out = <bytes>raw
    _decref(raw)
    return out


cdef inline Py_ssize_t _find(const unsigned char* s, Py_ssize_t i, Py_ssize_t n,
                              unsigned char c) noexcept nogil:
    """Index of the first ``c`` in s[i:n], or n: memchr is vectorized."""
    cdef const void* p = memchr(s + i, c, n - i) if i < n else NULL
    return n if p == NULL else <const unsigned char*>p - s


cdef bint _has_bare_eol(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    """True when some CR is not followed by LF or some LF is not preceded by CR."""
    cdef Py_ssize_t i = 0, lf, cr
    while i < n:
        lf = _find(s, i, n, 10)
        cr = _find(s, i, lf, 13)
        if lf == n:
            return cr != n
        if cr != lf - 1:
            return True
        i = lf + 1
    return False


cdef Py_ssize_t _normalize_into(const unsigned char* s, Py_ssize_t n, char* o) noexcept nogil:
    """Copy s to o turning bare CR, bare LF and CRLF into CRLF; return the length written."""
    cdef Py_ssize_t i = 0, j = 0
    cdef unsigned char c
    while i < n:
        c = s[i]
        if c == 13:
            o[j] = 13
            o[j + 1] = 10
            j += 2
            i += 2 if (i + 1 < n and s[i + 1] == 10) else 1
        elif c == 10:
            o[j] = 13
            o[j + 1] = 10
            j += 2
            i += 1
        else:
            o[j] = c
            j += 1
            i += 1
    return j


def normalize_line_endings(bytes message):
    """Return ``message`` with every bare CR, bare LF and CRLF turned into CRLF.

    Returns the same object when it is already clean (the common case), so callers may
    use it unconditionally before DKIM-signing a message supplied by a user.
    """
    cdef const unsigned char* s = <const unsigned char*>message
    cdef Py_ssize_t n = len(message)
    if not _has_bare_eol(s, n):
        return message
    cdef PyObject* raw = _alloc(2 * n)
    cdef Py_ssize_t m = _normalize_into(s, n, _bytes_buf(raw))
    return _finish(raw, m)


def smtp_data(bytes message):
    """Return the bytes to send after an SMTP ``DATA`` command, terminator included.

    Normalizes bare CR and LF to CRLF (so the wire carries exactly one ``CRLF.CRLF``: the
    terminator; no SMTP smuggling), doubles a leading ``.`` on every line (RFC 5321
    4.5.2), makes the message end with CRLF and appends ``.\\r\\n``. An empty message gives
    ``.\\r\\n``.
    """
    cdef const unsigned char* s = <const unsigned char*>message
    cdef Py_ssize_t n = len(message)
    cdef Py_ssize_t i = 0, j = 0, cr = -1, lf = -1, end
    # Every input octet yields at most two output octets, plus CRLF and ".\r\n".
    cdef PyObject* raw = _alloc(2 * n + 5)
    cdef char* o = _bytes_buf(raw)
    with nogil:
        while i < n:
            # One line per turn; the next CR and LF positions are kept between turns so a
            # message of bare CRs does not rescan for LF each time.
            if cr < i:
                cr = _find(s, i, n, 13)
            if lf < i:
                lf = _find(s, i, n, 10)
            end = cr if cr < lf else lf
            if s[i] == 46:
                o[j] = 46
                j += 1
            memcpy(o + j, s + i, end - i)
            j += end - i
            if end == n:
                o[j] = 13
                o[j + 1] = 10
                j += 2
                break
            o[j] = 13
            o[j + 1] = 10
            j += 2
            i = end + 2 if (end == cr and end + 1 == lf) else end + 1
        o[j] = 46
        o[j + 1] = 13
        o[j + 2] = 10
        j += 3
    return _finish(raw, j)


# Body scan result flags.
cdef enum:
    SCAN_CTL = 1       # a control octet other than TAB/CR/LF (NUL included), or DEL
    SCAN_LONG = 2      # a line longer than MAX_LINE octets
    SCAN_BARE = 4      # a bare CR or LF, or no final CRLF: normalize first
    SCAN_EQ_US = 8     # "=_", which begins every boundary salvo makes


cdef inline int _scan_byte(const unsigned char* s, Py_ssize_t n, Py_ssize_t i,
                           Py_ssize_t* start, Py_ssize_t* high) noexcept nogil:
    cdef unsigned char c = s[i]
    cdef int flags = 0
    if <unsigned char>(c - 32) < 95 and c != 61:
        return 0
    if c >= 128:
        high[0] += 1
    elif c == 61:
        if i + 1 < n and s[i + 1] == 95:
            return SCAN_EQ_US
    elif c == 13:
        if i + 1 >= n or s[i + 1] != 10:
            return SCAN_BARE
    elif c == 10:
        if i == 0 or s[i - 1] != 13:
            flags = SCAN_BARE
        if i - 1 - start[0] > MAX_LINE:
            flags |= SCAN_LONG
        start[0] = i + 1
        return flags
    elif c != 9:
        return SCAN_CTL
    return 0


cdef int _scan_body(const unsigned char* s, Py_ssize_t n, Py_ssize_t* nonascii) noexcept nogil:
    """Classify a body in one pass: non-ASCII octets, controls, long lines, bare CR/LF."""
    cdef Py_ssize_t i = 0, k, start = 0, high = 0
    cdef int flags = 0
    cdef uint64_t w, e
    cdef uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL
    while i + 8 <= n:
        # Eight octets at a time: skip the word when none is a control, DEL, "=" or
        # non-ASCII (the borrow/carry tricks only add false positives, never misses).
        memcpy(&w, s + i, 8)
        e = w ^ (0x3D * ones)
        if ((w | (w - 0x20 * ones) | (w + ones) | ((e - ones) & ~e)) & highs) != 0:
            for k in range(i, i + 8):
                flags |= _scan_byte(s, n, k, &start, &high)
        i += 8
    while i < n:
        flags |= _scan_byte(s, n, i, &start, &high)
        i += 1
    if n - start > MAX_LINE:
        flags |= SCAN_LONG
    if n < 2 or s[n - 1] != 10:
        flags |= SCAN_BARE
    nonascii[0] = high
    return flags


cdef bytes _qp_encode(bytes data):
    """Quoted-printable (RFC 2045 6.7) for a CRLF-normalized text body.

    CRLF stays a hard line break; soft breaks keep lines at 76; trailing TAB/SP and a
    leading "." are encoded (the latter so no line of the part can ever read as an SMTP
    terminator, even before dot-stuffing).
    """
    cdef const unsigned char* s = <const unsigned char*>data
    cdef Py_ssize_t n = len(data)
    cdef Py_ssize_t i = 0, j = 0, col = 0, width
    cdef unsigned char c
    cdef bint lit
    cdef const char* hx = _HEX
    # Worst case: every octet as =XX plus a 3-octet soft break per 25 such escapes.
    cdef PyObject* raw = _alloc(3 * n + (3 * n // 25) * 3 + 8)
    cdef char* o = _bytes_buf(raw)
    with nogil:
        while i < n:
            c = s[i]
            if c == 13 and i + 1 < n and s[i + 1] == 10:
                o[j] = 13
                o[j + 1] = 10
                j += 2
                i += 2
                col = 0
                continue
            if 33 <= c <= 126:
                lit = c != 61
            elif c == 32 or c == 9:
                lit = i + 1 < n and s[i + 1] != 13
            else:
                lit = False
            width = 1 if lit else 3
            if col + width > QP_LINE - 1:
                o[j] = 61
                o[j + 1] = 13
                o[j + 2] = 10
                j += 3
                col = 0
            if c == 46 and col == 0:
                lit = False
                width = 3
            if lit:
                o[j] = c
            else:
                o[j] = 61
                o[j + 1] = hx[c >> 4]
                o[j + 2] = hx[c & 15]
            j += width
            col += width
            i += 1
    return _finish(raw, j)


cdef bytes _b64_lines(bytes data):
    """Base64 in CRLF-terminated lines of 76 characters (RFC 2045 6.8)."""
    cdef bytes flat = binascii.b2a_base64(data, newline=False)
    cdef const char* s = flat
    cdef Py_ssize_t n = len(flat)
    cdef Py_ssize_t i = 0, j = 0, k
    cdef PyObject* raw = _alloc(n + (n // QP_LINE + 1) * 2)
    cdef char* o = _bytes_buf(raw)
    with nogil:
        while i < n:
            k = n - i if n - i < QP_LINE else QP_LINE
            memcpy(o + j, s + i, k)
            i += k
            j += k
            o[j] = 13
            o[j + 1] = 10
            j += 2
    return _finish(raw, j)


# ---------------------------------------------------------------------------------------
# Header values


cdef enum:
    HV_NONASCII = 1   # needs encoded words
    HV_EWLIKE = 2     # contains "=?": encode it ourselves so no decoder interprets it
    HV_EDGE_WS = 4    # leading/trailing whitespace, which parsers strip from plain text


cdef int _check_header_value(str value, str field) except -1:
    """Refuse anything that could end a header line; return HV_* flags for the encoder."""
    cdef Py_UCS4 c, prev = 0
    cdef int flags = 0
    for c in value:
        if c < 0x20:
            if c != 9:
                raise HeaderInjectionError(field, f"control character U+{<long>c:04X} in a header value")
        elif c >= 0x7F:
            if c <= 0x9F or c == 0x2028 or c == 0x2029:
                raise HeaderInjectionError(field, f"character U+{<long>c:04X} in a header value")
            if 0xD800 <= c <= 0xDFFF:
                raise HeaderInjectionError(field, f"lone surrogate U+{<long>c:04X} in a header value")
            flags |= HV_NONASCII
        elif c == 0x3F and prev == 0x3D:
            flags |= HV_EWLIKE
        prev = c
    if value and (value[0] in " \t" or value[-1] in " \t"):
        flags |= HV_EDGE_WS
    return flags


cdef list _ws_pieces(str value):
    """Split before each whitespace run that follows a non-space: folding points.

    Each piece but the first starts with whitespace, so a CRLF can go before any piece and
    unfolding gives back the exact value. A whitespace-only tail stays with its piece (RFC
    5322 forbids a folded line of whitespace only).
    """
    cdef list pieces = []
    cdef Py_ssize_t i, start = 0, n = len(value)
    cdef Py_UCS4 c
    cdef bint prev_ws = True
    for i in range(n):
        c = value[i]
        if c == 32 or c == 9:
            if not prev_ws and i > start:
                # Only split when a non-space follows somewhere later in the run.
                pieces.append(value[start:i])
                start = i
            prev_ws = True
        else:
            prev_ws = False
    tail = value[start:]
    if pieces and not tail.strip(" \t"):
        pieces[-1] = pieces[-1] + tail
    else:
        pieces.append(tail)
    if pieces and pieces[0] == "" and len(pieces) > 1:
        pieces.pop(0)
    return pieces


cdef bytes _fold(str name, list pieces, str first_sep):
    """Join ``name: pieces`` folding with CRLF before a piece that would pass column 78.

    ``first_sep`` goes between the colon and the first piece (" ", or "" when the first
    piece starts with whitespace). Lines exceed 78 only for one token that is longer.
    """
    cdef list out = [name, ":"]
    cdef Py_ssize_t col = len(name) + 1, ln
    cdef bint first = True
    cdef str piece
    for piece in pieces:
        if first:
            piece = first_sep + piece
        ln = len(piece)
        if col + ln > FOLD_AT and (not first or ln <= FOLD_AT) and piece[0] in " \t":
            out.append("\r\n")
            col = 0
        out.append(piece)
        col += ln
        first = False
    out.append("\r\n")
    return "".join(out).encode("utf-8")


cdef list _encoded_words(str value, Py_ssize_t first_col):
    """Split ``value`` into RFC 2047 B-encoded words of at most 72 characters.

    Each word holds whole UTF-8 characters; the first one is sized to fit on the header's
    first line after ``first_col`` characters. The pieces start with a space (fold points);
    a decoder drops the whitespace between adjacent encoded words.
    """
    cdef bytes b = value.encode("utf-8")
    cdef const unsigned char* s = b
    cdef Py_ssize_t n = len(b), start = 0, end, cap
    cdef list words = []
    cap = ((FOLD_AT - first_col - 1 - 12) // 4) * 3
    if cap < 6:
        cap = EW_BYTES
    while start < n:
        end = start + cap
        if end >= n:
            end = n
        else:
            while end > start and (s[end] & 0xC0) == 0x80:
                end -= 1
            if end == start:
                end = start + 1
                while end < n and (s[end] & 0xC0) == 0x80:
                    end += 1
        words.append(" =?utf-8?b?" + binascii.b2a_base64(b[start:end], newline=False).decode() + "?=")
        start = end
        cap = EW_BYTES
    return words


cdef bint _has_long_piece(list pieces, Py_ssize_t limit):
    cdef str p
    for p in pieces:
        if len(p) > limit:
            return True
    return False


cdef bytes _unstructured(str name, str value, str field, bint verbatim):
    """One header line (CRLF included) for a free-text value: plain and folded when it is
    printable ASCII, else encoded words. ``verbatim`` fields (URLs, message ids) may not be
    encoded, so what would need encoding is refused instead."""
    cdef int flags = _check_header_value(value, field)
    cdef list pieces
    if flags & (HV_NONASCII | HV_EWLIKE):
        if verbatim:
            raise HeaderInjectionError(
                field, "non-ASCII text or '=?' in a header that cannot carry encoded words")
        return _fold(name, _encoded_words(value, len(name) + 1), "")
    if len(name) + 2 + len(value) <= FOLD_AT and not (flags & HV_EDGE_WS and not verbatim):
        return (name + ": " + value + "\r\n").encode("ascii")
    pieces = _ws_pieces(value)
    if verbatim:
        if _has_long_piece(pieces, LONG_TOKEN):
            raise TemplateError(f"{field}: a token over {LONG_TOKEN} characters cannot be folded")
    elif _has_long_piece(pieces, FOLD_AT - 1) or flags & HV_EDGE_WS:
        # Free text has no token that must stay intact: encoded words keep every line at 78.
        return _fold(name, _encoded_words(value, len(name) + 1), "")
    return _fold(name, pieces, " ")


# Characters allowed unquoted in an RFC 5322 atom, plus the dot of a dot-atom.
cdef str _ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
cdef frozenset _ATEXT_SET = frozenset(_ATEXT)
cdef frozenset _ADDR_BAD = frozenset('()<>[]:;@\\,"')


cdef bint _dot_atom_ok(str part):
    if not part or part[0] == "." or part[-1] == "." or ".." in part:
        return False
    cdef Py_UCS4 c
    for c in part:
        if c < 128:
            if c != 46 and c not in _ATEXT_SET:
                return False
        elif c in _SPACES:
            return False
    return True


cdef frozenset _SPACES = frozenset(
    "\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u202f\u205f\u3000\ufeff"
)


cdef tuple _parse_address(str value, str field):
    """Split ``addr`` or ``Name <addr>`` into (display name, addr-spec), strictly."""
    _check_header_value(value, field)
    value = value.strip(" \t")
    cdef str name = "", addr
    cdef Py_ssize_t lt
    if value.endswith(">"):
        lt = value.rfind("<")
        if lt < 0:
            raise InvalidAddressError(field, "'>' without '<'")
        name = value[:lt].strip(" \t")
        addr = value[lt + 1 : -1]
        if len(name) >= 2 and name[0] == '"' and name[-1] == '"':
            name = _unquote(name[1:-1])
    else:
        addr = value
    if addr.count("@") != 1:
        raise InvalidAddressError(field, f"{addr!r} must contain exactly one '@'")
    if "=?" in addr:
        raise HeaderInjectionError(field, "'=?' in an address")
    local, _, domain = addr.partition("@")
    if not _dot_atom_ok(local) or not _dot_atom_ok(domain):
        raise InvalidAddressError(
            field, f"{addr!r} is not local@domain of letters, digits, dots and atext")
    if len(local.encode("utf-8")) > 64 or len(addr.encode("utf-8")) > 254:
        raise InvalidAddressError(field, f"{addr!r} is too long (RFC 5321 4.5.3.1)")
    return name, addr


cdef str _unquote(str s):
    cdef list out = []
    cdef Py_ssize_t i = 0, n = len(s)
    while i < n:
        if s[i] == "\\" and i + 1 < n:
            i += 1
        out.append(s[i])
        i += 1
    return "".join(out)


cdef bint _is_plain_phrase(str name):
    """True for words of atext separated by single spaces: no quoting needed."""
    cdef Py_UCS4 c, prev = 32
    for c in name:
        if c == 32:
            if prev == 32:
                return False
        elif c >= 128 or c not in _ATEXT_SET:
            return False
        prev = c
    return prev != 32


cdef bytes _address_header(str hname, str value, str field):
    """One header line (CRLF included) for a single mailbox."""
    name, addr = _parse_address(value, field)
    cdef list pieces
    if not name:
        return (hname + ": " + addr + "\r\n").encode("utf-8")
    cdef int flags = _check_header_value(name, field)
    if flags & (HV_NONASCII | HV_EWLIKE):
        pieces = _encoded_words(name, len(hname) + 1)
    else:
        if not _is_plain_phrase(name):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        pieces = _ws_pieces(name)
        if _has_long_piece(pieces, FOLD_AT - 1):
            pieces = _encoded_words(name, len(hname) + 1)
        else:
            pieces[0] = " " + pieces[0]
    pieces.append(" <" + addr + ">")
    return _fold(hname, pieces, "")


# ---------------------------------------------------------------------------------------
# Dates and message ids


cdef tuple _DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
cdef tuple _MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
cdef long _date_sec = -1
cdef bytes _date_line = b""


cdef bytes _date_header(object date):
    """``Date:`` line; for "now" cached per second since thousands of renders share it."""
    global _date_sec, _date_line
    cdef long sec
    if date is None:
        sec = <long>time.time()
        if sec != _date_sec:
            t = time.gmtime(sec)
            _date_line = (
                f"Date: {_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} "
                f"{t.tm_year} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000\r\n"
            ).encode("ascii")
            _date_sec = sec
        return _date_line
    off = date.utcoffset()
    mins = 0 if off is None else int(off.total_seconds()) // 60
    sign = "-" if mins < 0 else "+"
    mins = abs(mins)
    return (
        f"Date: {_DAYS[date.weekday()]}, {date.day:02d} {_MONTHS[date.month - 1]} "
        f"{date.year} {date.hour:02d}:{date.minute:02d}:{date.second:02d} "
        f"{sign}{mins // 60:02d}{mins % 60:02d}\r\n"
    ).encode("ascii")


cdef frozenset _ID_BAD = frozenset('<>@()[]\\,;:" \t')


cdef str _ascii_domain(str domain):
    try:
        d = domain.encode("ascii").decode()
    except UnicodeEncodeError:
        try:
            d = domain.encode("idna").decode()
        except UnicodeError as exc:
            raise TemplateError(f"domain {domain!r} cannot be IDNA-encoded: {exc}") from None
    if not d or any(c in _ID_BAD or not c.isprintable() for c in d):
        raise TemplateError(f"domain {domain!r} cannot be used in a Message-ID")
    return d


def make_message_id(domain):
    """Return a new unique ``<id@domain>``: time in microseconds and 96 random bits."""
    return f"<{time.time_ns() // 1000:x}.{os.urandom(12).hex()}@{_ascii_domain(domain)}>"


cdef bytes _message_id_header(str mid):
    if not (mid.startswith("<") and mid.endswith(">")):
        mid = "<" + mid + ">"
    cdef str inner = mid[1:-1]
    left, at, right = inner.partition("@")
    if (not at or not left or not right or "@" in right or not inner.isascii()
            or any(c in _ID_BAD or not c.isprintable() for c in left + right)):
        raise HeaderInjectionError("Message-ID", f"{mid!r} is not <left@right> of printable ASCII")
    return ("Message-ID: " + mid + "\r\n").encode("ascii")


# ---------------------------------------------------------------------------------------
# Template compilation


cdef class _Slot:
    """A placeholder: the path to look up and whether HTML escaping is skipped."""

    cdef readonly str name
    cdef readonly tuple path
    cdef readonly bint raw

    def __init__(self, str name, tuple path, bint raw):
        self.name = name
        self.path = path
        self.raw = raw


cdef list _parse_template(str text, str field, bint html, tuple limits, bint body=False):
    """Turn template text into a list of literal strings and :class:`_Slot` objects when
    it has only ``{{ path }}`` placeholders (the fast path), else into one compiled
    :class:`Program` (statements, filters, expressions: docs/templates.md)."""
    tree = template_parse.parse(text, field)
    cdef list parts = []
    for node in tree:
        if node[0] == "text":
            parts.append(node[1])
            continue
        slot = _simple_slot(node) if node[0] == "output" else None
        if slot is None:
            return [compile_tree(_normalized_tree(tree) if body else tree,
                                 field, html, max_items=limits[0], max_output=limits[1])]
        parts.append(slot)
    return parts or [""]


cdef object _simple_slot(tuple node):
    """The :class:`_Slot` of ``{{ path }}`` or ``{{ path | raw }}`` (``safe``), else None."""
    expr = node[1]
    raw = False
    if expr[0] == "filter" and expr[1] in ("raw", "safe") and not expr[3]:
        raw = True
        expr = expr[2]
    cdef list path = []
    label = expr[3] if expr[0] == "item" else None
    while expr[0] == "item":
        key = expr[2]
        if key[0] != "const" or type(key[1]) not in (str, int):
            return None
        path.append(key[1])
        expr = expr[1]
    if expr[0] != "name":
        return None
    path.append(expr[1])
    path.reverse()
    return _Slot(label or expr[1], tuple(path), raw)


cdef list _normalized_tree(list tree):
    """The tree with CRLF line ends in its literal text, as static text gets below."""
    cdef list out = []
    for node in tree:
        kind = node[0]
        if kind == "text":
            out.append(("text", _normalize_str(node[1])))
        elif kind == "if":
            out.append(("if", [(t, _normalized_tree(b)) for t, b in node[1]],
                        None if node[2] is None else _normalized_tree(node[2])))
        elif kind == "for":
            out.append(("for", node[1], node[2], _normalized_tree(node[3]),
                        None if node[4] is None else _normalized_tree(node[4])))
        else:
            out.append(node)
    return out


cdef tuple _placeholder_paths(list fields):
    """``(name, path)`` for each distinct placeholder of the fields' parsed templates,
    in order of first use."""
    cdef list out = []
    cdef set seen = set()
    cdef list parts
    for parts in fields:
        for p in parts:
            if type(p) is _Slot and (<_Slot>p).name not in seen:
                seen.add((<_Slot>p).name)
                out.append(((<_Slot>p).name, (<_Slot>p).path))
    return tuple(out)


cdef bint _is_static(list parts):
    return len(parts) == 1 and type(parts[0]) is str


cdef object _MISSING = object()


cdef inline object _lookup(dict variables, tuple path):
    """The value at a dotted path, or ``_MISSING``: the one lookup that render and
    :meth:`MessageTemplate.missing` share, so the check and the renderer cannot disagree."""
    cdef object v = variables.get(path[0], _MISSING)
    cdef Py_ssize_t i
    for i in range(1, len(path)):
        if v is _MISSING:
            return v
        if type(v) is dict:
            v = (<dict>v).get(path[i], _MISSING)
        else:
            v = _item(v, path[i])
    return v


cdef object _item(object v, str seg):
    """``v[seg]``, or ``_MISSING`` when ``v`` has no such item or takes no such index."""
    try:
        return v[seg]
    except (KeyError, TypeError, IndexError):
        return _MISSING


cdef str _value(dict variables, _Slot slot, str field):
    """Look up a slot's dotted path and turn the value into text."""
    cdef object v = _lookup(variables, slot.path)
    if v is _MISSING:
        raise MissingVariableError(slot.name, field)
    if type(v) is str:
        return <str>v
    if v is None:
        return ""
    if isinstance(v, (str, int, float)):
        return str(v)
    raise TemplateError(
        f"variable {slot.name!r} in {field} is a {type(v).__name__}: use str, int, float, "
        "bool or None")


cdef inline bint _needs_escape(str v):
    # Most values (names, ids, plain URLs) have nothing to escape: five C-level scans
    # instead of five replaces, ten variables per message.
    return "&" in v or "<" in v or ">" in v or '"' in v or "'" in v


cdef inline str _html_escape(str v):
    # Jinja2's (markupsafe's) entities, so both languages escape alike.
    return (v.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;")
            .replace("'", "&#39;").replace('"', "&#34;"))


cdef str _substitute(list parts, dict variables, str field, bint html, Py_ssize_t limit):
    cdef list out = []
    cdef object p
    cdef str v
    for p in parts:
        if type(p) is str:
            out.append(p)
        elif type(p) is _Slot:
            v = _value(variables, <_Slot>p, field)
            if html and not (<_Slot>p).raw and _needs_escape(v):
                v = _html_escape(v)
            out.append(v)
        else:
            return p.render(variables)
    # Checked once on the result: placeholders alone cannot grow a field past its values.
    v = "".join(out)
    if len(v) > limit:
        raise TemplateError(f"{field}: output over {limit:,} characters (the limit)")
    return v


# Extra headers a template may not set: salvo writes them itself, or (Bcc, Return-Path)
# they must never be in a message as sent.
cdef frozenset _RESERVED = frozenset(
    ("from", "to", "subject", "date", "message-id", "mime-version", "bcc", "return-path"))
cdef frozenset _ADDRESS_HEADERS = frozenset(("reply-to", "sender"))
# Structured headers whose value must stay exactly as written (URLs, ids): no encoding.
cdef frozenset _VERBATIM_HEADERS = frozenset(
    ("list-unsubscribe", "list-unsubscribe-post", "list-id", "in-reply-to", "references"))

cdef enum:
    KIND_TEXT = 0
    KIND_ADDRESS = 1
    KIND_VERBATIM = 2


cdef str _check_header_name(object name):
    if type(name) is not str or not 1 <= len(name) <= 76:
        raise TemplateError(f"header name {name!r} must be a str of 1 to 76 characters")
    for c in name:
        if not ("!" <= c <= "~") or c == ":":
            raise TemplateError(f"header name {name!r}: only printable ASCII but ':' (RFC 5322)")
    low = name.lower()
    if low in _RESERVED or low.startswith("content-"):
        raise TemplateError(f"header {name!r} is set by salvo and cannot be overridden")
    return name


cdef class _Header:
    """An extra header: static bytes, or a name and template rendered per message."""

    cdef str name
    cdef list parts
    cdef int kind
    cdef bytes line

    cdef Py_ssize_t limit

    cdef bytes render(self, dict variables):
        if self.line is not None:
            return self.line
        return _header_line(self.name, self.kind,
                            _substitute(self.parts, variables, self.name, False, self.limit))


cdef bytes _header_line(str name, int kind, str value):
    if kind == KIND_ADDRESS:
        return _address_header(name, value, name)
    return _unstructured(name, value, name, kind == KIND_VERBATIM)


cdef _Header _compile_header(str name, object value, int kind, tuple limits):
    if type(value) is not str:
        raise TemplateError(f"header {name!r}: value must be a str, not {type(value).__name__}")
    cdef _Header h = _Header.__new__(_Header)
    h.name = name
    h.kind = kind
    h.limit = limits[1]
    h.parts = _parse_template(value, name, False, limits)
    for p in h.parts:
        if type(p) is str:
            _check_header_value(p, name)
    h.line = _header_line(name, kind, h.parts[0]) if _is_static(h.parts) else None
    return h


cdef frozenset _TOKEN_BAD = frozenset('()<>@,;:\\"/[]?= \t')


cdef str _check_content_type(object ct):
    if type(ct) is not str or not ct.isascii():
        raise TemplateError(f"attachment content type {ct!r} must be an ASCII str")
    major, slash, minor = ct.partition("/")
    for tok in (major, minor):
        if not tok or any(c in _TOKEN_BAD or not ("!" <= c <= "~") for c in tok):
            raise TemplateError(f"attachment content type {ct!r} is not type/subtype")
    if major.lower() in ("multipart", "message"):
        raise TemplateError(f"attachment content type {ct!r}: composite types cannot be base64")
    return ct


cdef str _ATTR_CHARS = "!#$&+-.^_`|~" + "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


cdef str _disposition(str filename):
    """``Content-Disposition`` line(s) naming the file; RFC 2231 when it is not plain ASCII."""
    _check_header_value(filename, "attachment filename")
    if not filename:
        raise TemplateError("attachment filename must not be empty")
    if filename.isascii() and '"' not in filename and "\\" not in filename \
            and "=?" not in filename and len(filename) <= 60:
        return f'Content-Disposition: attachment; filename="{filename}"\r\n'
    # RFC 2231 extended value, in continuations of at most ~60 characters each.
    cdef list segs = []
    cdef list cur = ["utf-8''"]
    cdef Py_ssize_t ln = 7
    for b in filename.encode("utf-8"):
        ch = chr(b)
        piece = ch if ch in _ATTR_CHARS else f"%{b:02X}"
        if ln + len(piece) > 60:
            segs.append("".join(cur))
            cur = []
            ln = 0
        cur.append(piece)
        ln += len(piece)
    segs.append("".join(cur))
    if len(segs) == 1:
        return f"Content-Disposition: attachment;\r\n filename*={segs[0]}\r\n"
    return "Content-Disposition: attachment;" + ";".join(
        f"\r\n filename*{i}*={seg}" for i, seg in enumerate(segs)) + "\r\n"


cdef bytes _attachment_part(object att):
    if isinstance(att, dict):
        try:
            filename, ctype, data = att["filename"], att["content_type"], att["data"]
        except KeyError as exc:
            raise TemplateError(f"attachment dict lacks {exc.args[0]!r}") from None
    else:
        try:
            filename, ctype, data = att
        except (TypeError, ValueError):
            raise TemplateError("an attachment is (filename, content_type, data)") from None
    if type(filename) is not str:
        raise TemplateError(f"attachment filename {filename!r} must be a str")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TemplateError(f"attachment {filename!r}: data must be bytes")
    return (
        f"Content-Type: {_check_content_type(ctype)}\r\n"
        f"Content-Transfer-Encoding: base64\r\n{_disposition(filename)}\r\n"
    ).encode("ascii") + _b64_lines(bytes(data))


# ---------------------------------------------------------------------------------------
# Body parts


cdef class _Body:
    """One text/plain or text/html part; static parts are encoded once at compile time."""

    cdef list parts
    cdef bint html
    cdef str field
    cdef tuple heads       # part headers for 7bit, quoted-printable, base64
    cdef tuple boundaries  # bytes a 7bit payload must not contain
    cdef list static       # [headers, payload] when the part has no placeholders
    cdef Py_ssize_t limit

    cdef list render(self, dict variables):
        if self.static is not None:
            return self.static
        return self.encode(_substitute(self.parts, variables, self.field, self.html, self.limit))

    cdef list encode(self, str text):
        """Normalize line ends to CRLF, then pick the cheapest safe transfer encoding."""
        cdef bytes b
        try:
            b = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise TemplateError(f"{self.field}: {exc}") from None
        cdef const unsigned char* s = b
        cdef Py_ssize_t n = len(b), nonascii = 0
        cdef PyObject* raw
        cdef int flags = _scan_body(s, n, &nonascii)
        if flags & SCAN_BARE:
            # Also ends the text with a line break, as EmailMessage.set_content does.
            raw = _alloc(2 * n + 2)
            n = _normalize_into(s, n, _bytes_buf(raw))
            if n < 2 or _bytes_buf(raw)[n - 1] != 10:
                _bytes_buf(raw)[n] = 13
                _bytes_buf(raw)[n + 1] = 10
                n += 2
            b = _finish(raw, n)
            s = b
            flags = _scan_body(s, n, &nonascii)
        if nonascii == 0 and not flags & (SCAN_CTL | SCAN_LONG):
            if flags & SCAN_EQ_US:
                for bd in self.boundaries:
                    if bd in b:
                        break
                else:
                    return [self.heads[0], b]
            else:
                return [self.heads[0], b]
        # Quoted-printable costs 3 octets per non-ASCII octet, base64 4/3 for all.
        if nonascii * 6 <= n:
            return [self.heads[1], _qp_encode(b)]
        return [self.heads[2], _b64_lines(b)]


cdef _Body _compile_body(str text, str field, bint html, tuple boundaries, tuple limits):
    cdef _Body body = _Body.__new__(_Body)
    ctype = "text/html" if html else "text/plain"
    body.limit = limits[1]
    body.parts = [_normalize_str(p) if type(p) is str else p
                  for p in _parse_template(text, field, html, limits, True)]
    body.html = html
    body.field = field
    body.boundaries = boundaries
    body.heads = tuple(
        f"Content-Type: {ctype}; charset=utf-8\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
        .encode("ascii") for cte in ("7bit", "quoted-printable", "base64"))
    body.static = body.encode(body.parts[0]) if _is_static(body.parts) else None
    return body


cdef str _normalize_str(str s):
    """Static template text gets CRLF at compile time so render rarely has to rewrite it."""
    return s.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")


# ---------------------------------------------------------------------------------------
# The template


cdef class MessageTemplate:
    """A message compiled once per job and rendered once per recipient.

    ``from_``, ``subject``, ``text``, ``html`` and the values of ``headers`` may contain
    ``{{ name }}`` placeholders (docs/templates.md). At least one of ``text`` and ``html``
    is required. ``attachments`` is a list of ``(filename, content_type, data)`` tuples or
    dicts with those keys; they are base64-encoded here, once. ``message_id_domain``
    defaults to the domain of the From address. ``max_loop_items`` bounds the items of
    any one ``for`` loop, ``max_output`` the characters of each rendered field: past
    either, render raises :class:`TemplateError`.

    Raises :class:`TemplateSyntaxError` for malformed placeholders, :class:`TemplateError`
    for a reserved or invalid header name, :class:`HeaderInjectionError` for control
    characters in static header text.
    """

    cdef object _from_line        # bytes, or the parsed template of a dynamic From
    cdef list _from_parts
    cdef _Header _subject
    cdef list _extras
    cdef bytes _mime_version
    cdef list _prefix             # multipart skeleton before the first body part
    cdef _Body _text
    cdef _Body _html
    cdef bytes _between           # delimiter between text and html
    cdef bytes _suffix            # closing delimiter(s), attachments included
    cdef str _mid_domain
    cdef tuple _paths             # (name, path) of each distinct placeholder, render order
    cdef list _fields             # parsed fields in render order, when one is a Program
    cdef readonly frozenset requires

    def __init__(self, from_, subject, text=None, html=None, headers=None,
                 attachments=None, *, message_id_domain=None,
                 max_loop_items=DEFAULT_MAX_LOOP_ITEMS, max_output=DEFAULT_MAX_OUTPUT):
        if type(from_) is not str or type(subject) is not str:
            raise TemplateError("from_ and subject must be str")
        if text is None and html is None:
            raise TemplateError("a message needs text, html or both")
        cdef tuple limits = (int(max_loop_items), int(max_output))
        self._from_parts = _parse_template(from_, "From", False, limits)
        for p in self._from_parts:
            if type(p) is str:
                _check_header_value(p, "From")
        if _is_static(self._from_parts):
            self._from_line = _address_header("From", from_, "From")
            if message_id_domain is None:
                message_id_domain = _parse_address(from_, "From")[1].rpartition("@")[2]
        else:
            self._from_line = None
        self._mid_domain = None if message_id_domain is None else _ascii_domain(message_id_domain)
        self._subject = _compile_header("Subject", subject, KIND_TEXT, limits)

        self._extras = []
        seen = set()
        for name, value in (headers or {}).items():
            name = _check_header_name(name)
            low = name.lower()
            if low in seen:
                raise TemplateError(f"header {name!r} given twice")
            seen.add(low)
            kind = (KIND_ADDRESS if low in _ADDRESS_HEADERS
                    else KIND_VERBATIM if low in _VERBATIM_HEADERS else KIND_TEXT)
            self._extras.append(_compile_header(name, value, kind, limits))
        self._mime_version = b"MIME-Version: 1.0\r\n"
        if self._extras and all((<_Header>h).line is not None for h in self._extras):
            self._mime_version += b"".join([(<_Header>h).line for h in self._extras])
            self._extras = []

        parts = [_attachment_part(a) for a in (attachments or ())]
        token = os.urandom(12).hex()
        alt = f"=_a{token}".encode("ascii")
        mixed = f"=_m{token}".encode("ascii")
        boundaries = (alt, mixed)
        for t, field, is_html in ((text, "text", False), (html, "html", True)):
            if t is not None and type(t) is not str:
                raise TemplateError(f"{field} must be a str or None")
        self._text = None if text is None else _compile_body(text, "text", False, boundaries, limits)
        self._html = None if html is None else _compile_body(html, "html", True, boundaries, limits)

        prefix = b""
        suffix = b""
        if parts:
            prefix = b'Content-Type: multipart/mixed;\r\n boundary="' + mixed + b'"\r\n\r\n--' + mixed + b"\r\n"
            suffix = b"".join([b"\r\n--" + mixed + b"\r\n" + p for p in parts])
            suffix += b"\r\n--" + mixed + b"--\r\n"
        if self._text is not None and self._html is not None:
            prefix += b'Content-Type: multipart/alternative;\r\n boundary="' + alt + b'"\r\n\r\n--' + alt + b"\r\n"
            self._between = b"\r\n--" + alt + b"\r\n"
            suffix = b"\r\n--" + alt + b"--\r\n" + suffix
        else:
            self._between = None
        self._prefix = [prefix] if prefix else []
        self._suffix = suffix
        fields = [self._from_parts, self._subject.parts]
        fields += [(<_Header>h).parts for h in self._extras]
        if self._text is not None:
            fields.append(self._text.parts)
        if self._html is not None:
            fields.append(self._html.parts)
        self._paths = _placeholder_paths(fields)
        cdef set names = set([name for name, _ in self._paths])
        self._fields = None
        for parts in fields:
            if len(parts) == 1 and type(parts[0]) is Program:
                self._fields = fields
                names.update(parts[0].roots)
        self.requires = frozenset(names)

    def missing(self, variables=None):
        """The placeholders ``variables`` cannot fill, as a tuple of dotted names in the
        order :meth:`render` meets them (empty when every one resolves).

        A name is missing exactly when :meth:`render` would raise
        :class:`MissingVariableError` for it: a segment is absent, or a value on the way is
        not a mapping (``order.id`` with ``order`` a string). The first name is the one
        render would raise for. Only lookups: nothing is rendered or encoded, and value
        types are not checked (a list where text is expected fails at render).
        """
        cdef dict vars_ = {} if variables is None else (
            variables if type(variables) is dict else dict(variables))
        if self._fields is not None:
            return self._check(vars_)[0]
        cdef list out = None
        cdef tuple item
        for item in self._paths:
            if _lookup(vars_, <tuple>item[1]) is _MISSING:
                if out is None:
                    out = []
                out.append(item[0])
        return () if out is None else tuple(out)

    def check(self, variables=None):
        """What rendering for ``variables`` would meet, without encoding anything:
        ``(missing, error)``, the names :meth:`missing` gives and the text of the first
        other template error (a loop or output limit, a value of the wrong type) or None.

        For a template of placeholders only, the error is always None (lookups only, as
        :meth:`missing`); one with statements or filters is run as render runs it.
        """
        cdef dict vars_ = {} if variables is None else (
            variables if type(variables) is dict else dict(variables))
        if self._fields is None:
            return self.missing(vars_), None
        return self._check(vars_)

    cdef tuple _check(self, dict vars_):
        cdef list out = []
        cdef set seen = set()
        cdef str error = None
        cdef list parts
        for parts in self._fields:
            for p in parts:
                if type(p) is _Slot:
                    if _lookup(vars_, (<_Slot>p).path) is _MISSING:
                        out.append((<_Slot>p).name)
                elif type(p) is Program:
                    try:
                        out.extend(p.missing(vars_))
                    except TemplateError as exc:
                        error = str(exc)
                        break
            if error is not None:
                break
        cdef list names = []
        for name in out:
            if name not in seen:
                seen.add(name)
                names.append(name)
        return tuple(names), error

    def render(self, to, variables=None, message_id=None, *, date=None):
        """Render the message for one recipient; returns RFC 5322 bytes with CRLF line ends.

        ``to`` is ``addr`` or ``Name <addr>``; ``variables`` a dict (nested dicts for dotted
        names); ``message_id`` ``<id@domain>`` or None to generate one; ``date`` an aware
        ``datetime`` or None for now. Raises :class:`MissingVariableError`,
        :class:`HeaderInjectionError`, :class:`InvalidAddressError` or
        :class:`TemplateError`.
        """
        cdef dict vars_ = {} if variables is None else (
            variables if type(variables) is dict else dict(variables))
        if type(to) is not str:
            raise InvalidAddressError("To", f"{to!r} is not a str")
        cdef list out = []
        cdef bytes from_line
        if self._from_line is not None:
            from_line = self._from_line
            domain = self._mid_domain
        else:
            value = _substitute(self._from_parts, vars_, "From", False, self._subject.limit)
            from_line = _address_header("From", value, "From")
            domain = self._mid_domain or _parse_address(value, "From")[1].rpartition("@")[2]
        out.append(from_line)
        out.append(_address_header("To", to, "To"))
        out.append(self._subject.render(vars_))
        out.append(_date_header(date))
        if message_id is None:
            message_id = make_message_id(domain)
        elif type(message_id) is not str:
            raise TemplateError("message_id must be a str")
        out.append(_message_id_header(message_id))
        out.append(self._mime_version)
        for h in self._extras:
            out.append((<_Header>h).render(vars_))
        out.extend(self._prefix)
        if self._text is not None:
            out.extend(self._text.render(vars_))
            if self._html is not None:
                out.append(self._between)
        if self._html is not None:
            out.extend(self._html.render(vars_))
        out.append(self._suffix)
        return b"".join(out)
