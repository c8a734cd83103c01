# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""DKIM signing (RFC 6376, RSA-SHA256 and Ed25519-SHA256 per RFC 8463) for the hot path.

Parsing, canonicalization and the building and folding of the DKIM-Signature field are
C loops over the message buffer; SHA-256 is hashlib (OpenSSL) and the signature is
``cryptography`` (OpenSSL). The key is loaded once per :class:`DKIMSigner`.

Input messages must use CRLF line ends only: a bare CR or LF raises
:class:`~salvo.ext.errors.LineEndingError` (normalize with the MIME module first), because
what is signed must be exactly what goes on the wire.
"""

from cpython.bytearray cimport (
    PyByteArray_AS_STRING,
    PyByteArray_FromStringAndSize,
    PyByteArray_Resize,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

import base64
import binascii
import hashlib
import time

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from salvo.ext.errors import DKIMError, LineEndingError, WeakKeyError

__all__ = [
    "DEFAULT_HEADERS",
    "OVERSIGNED_HEADERS",
    "DKIMSigner",
    "canonicalize_body",
    "canonicalize_headers",
    "parse_headers",
    "public_key_record",
    "sign_many",
]

#: Header fields signed when ``headers=None``, in h= order.
DEFAULT_HEADERS = (
    "from", "to", "cc", "subject", "date", "message-id", "reply-to", "in-reply-to",
    "references", "sender", "mime-version", "content-type", "content-transfer-encoding",
    "list-unsubscribe", "list-unsubscribe-post", "list-id", "feedback-id",
)
#: Header fields listed once more than they occur, so that a prepended copy breaks the
#: signature (an attacker cannot add a second Subject that a reader would see).
OVERSIGNED_HEADERS = frozenset((
    "from", "to", "cc", "subject", "date", "message-id", "reply-to", "mime-version",
    "content-type", "content-transfer-encoding", "list-unsubscribe", "list-unsubscribe-post",
))

cdef enum:
    SIMPLE = 0
    RELAXED = 1
    MAX_LINE = 78    # RFC 5322 2.1.1: lines SHOULD NOT pass 78 characters before CRLF
    B_MIN_ROOM = 16  # fold before "b=" unless this much of its value fits behind it

cdef object _sha256 = hashlib.sha256
cdef object _b64 = binascii.b2a_base64
cdef object _PKCS1 = padding.PKCS1v15()
cdef object _SHA256 = hashes.SHA256()
cdef bytes _CRLF = b"\r\n"
cdef bytes _SIG_NAME = b"DKIM-Signature:"


# ---------------------------------------------------------------- byte-level helpers

cdef inline bint _has_byte_below(uint64_t x, uint64_t n) noexcept nogil:
    """True if some byte of ``x`` is < n (n <= 128), bit-twiddling "hasless"."""
    return ((x - 0x0101010101010101ULL * n) & ~x & 0x8080808080808080ULL) != 0


cdef inline uint64_t _spaces(uint64_t x) noexcept nogil:
    """High bit set in exactly the bytes of ``x`` that are SP."""
    cdef uint64_t t = x ^ 0x2020202020202020ULL
    return ~(((t & 0x7F7F7F7F7F7F7F7FULL) + 0x7F7F7F7F7F7F7F7FULL) | t
             | 0x7F7F7F7F7F7F7F7FULL)


cdef inline uint64_t _below_33(uint64_t x) noexcept nogil:
    """High bit set in exactly the bytes of ``x`` that are < 33 (WSP, CR, LF, controls)."""
    return ~(((x & 0x7F7F7F7F7F7F7F7FULL) + 0x0101010101010101ULL * (0x80 - 33)) | x) \
        & 0x8080808080808080ULL


cdef inline unsigned char _lower(unsigned char c) noexcept nogil:
    return c + 32 if 65 <= c <= 90 else c


cdef inline bint _is_wsp(unsigned char c) noexcept nogil:
    return c == 32 or c == 9


cdef int _bare(const unsigned char* p, Py_ssize_t i) except -1:
    what = "bare CR" if p[i] == 13 else "bare LF"
    raise LineEndingError(
        f"{what} at offset {i}: DKIM signs exactly what is sent, so normalize line endings"
        " to CRLF first (salvo.ext.mime.normalize_line_endings)"
    )


cdef int _mode(object mode) except -1:
    if isinstance(mode, bytes):
        mode = (<bytes>mode).decode("ascii", "replace")
    if mode == "relaxed":
        return RELAXED
    if mode == "simple":
        return SIMPLE
    raise DKIMError(f"unknown canonicalization {mode!r}: use 'relaxed' or 'simple'")


# ---------------------------------------------------------------- body canonicalization

cdef Py_ssize_t _simple_body(const unsigned char* p, Py_ssize_t n, bint* add_crlf) except -1:
    """Check line ends; return how many leading bytes of the body the canonical body keeps.

    RFC 6376 3.4.3: trailing empty lines go, one CRLF ends the body; an empty body is CRLF.
    ``add_crlf`` is set when that CRLF is not in the input (empty or unterminated body).
    """
    cdef Py_ssize_t i = 0, lim, end
    cdef uint64_t x
    cdef unsigned char c
    while i < n:
        if i + 8 <= n:
            memcpy(&x, p + i, 8)
            if not _has_byte_below(x, 14):
                i += 8
                continue
            lim = i + 8
        else:
            lim = n
        while i < lim:
            c = p[i]
            if c == 13:
                if i + 1 < n and p[i + 1] == 10:
                    i += 2
                    continue
                _bare(p, i)
            elif c == 10:
                _bare(p, i)
            i += 1
    end = n
    while end >= 2 and p[end - 2] == 13 and p[end - 1] == 10:
        end -= 2
    if end == 0:
        add_crlf[0] = True
        return 0
    if end == n:
        add_crlf[0] = True
        return n
    add_crlf[0] = False
    return end + 2


cdef Py_ssize_t _relaxed_body(const unsigned char* p, Py_ssize_t n,
                              unsigned char* out) except -1:
    """Write the relaxed canonical body (RFC 6376 3.4.4) of p[:n] to out (n + 2 bytes).

    WSP runs become one SP, WSP before a line end goes, trailing empty lines go. An
    unterminated last line is treated as if it ended in CRLF, as it will on the wire (the
    SMTP client adds the CRLF before the final dot), so its trailing WSP goes too.
    """
    cdef Py_ssize_t i = 0, j, o = 0, line_start = 0, last_end = 0, lim
    cdef uint64_t x, y
    cdef unsigned char c
    while i < n:
        # Fast path: 8 bytes that relaxed leaves alone (no control byte, and every SP
        # followed by a byte > SP) are copied as one word.
        if i + 9 <= n:
            memcpy(&x, p + i, 8)
            memcpy(&y, p + i + 1, 8)
            if not _has_byte_below(x, 32) and (_spaces(x) & _below_33(y)) == 0:
                memcpy(out + o, &x, 8)
                i += 8
                o += 8
                continue
            lim = i + 8
        else:
            lim = n
        while i < lim:
            c = p[i]
            if c > 32 or (c == 32 and i + 1 < n and p[i + 1] > 32):
                out[o] = c
                o += 1
                i += 1
            elif c == 32 or c == 9:
                j = i + 1
                while j < n and _is_wsp(p[j]):
                    j += 1
                # Keep one SP unless the run ends the line (or the body).
                if j < n and p[j] != 13 and p[j] != 10:
                    out[o] = 32
                    o += 1
                i = j
            elif c == 13:
                if i + 1 >= n or p[i + 1] != 10:
                    _bare(p, i)
                out[o] = 13
                out[o + 1] = 10
                o += 2
                if o - 2 > line_start:
                    last_end = o
                line_start = o
                i += 2
            elif c == 10:
                _bare(p, i)
            else:
                out[o] = c
                o += 1
                i += 1
    if o > line_start:
        out[o] = 13
        out[o + 1] = 10
        o += 2
        last_end = o
    return last_end


# ---------------------------------------------------------------- header parsing

cdef struct Field:
    Py_ssize_t start     # first byte of the name
    Py_ssize_t name_end  # end of the name, WSP before the colon excluded
    Py_ssize_t colon     # the ':'
    Py_ssize_t end       # end of the field, its terminating CRLF excluded


cdef Py_ssize_t _relaxed_field(const unsigned char* p, const Field* f,
                               unsigned char* out) noexcept nogil:
    """Write the relaxed form of one field (RFC 6376 3.4.2), without CRLF; return length.

    Lowercase name, no WSP around the colon, unfolded, WSP runs as one SP, no WSP at the
    ends of the value. The parser guarantees every CRLF inside the field is a fold.
    """
    cdef Py_ssize_t i, o = 0
    cdef bint pending = False, content = False
    cdef unsigned char c
    for i in range(f.start, f.name_end):
        out[o] = _lower(p[i])
        o += 1
    out[o] = 58
    o += 1
    for i in range(f.colon + 1, f.end):
        c = p[i]
        if c == 32 or c == 9:
            pending = True
        elif c != 13 and c != 10:
            if pending and content:
                out[o] = 32
                o += 1
            pending = False
            content = True
            out[o] = c
            o += 1
    return o


cdef Py_ssize_t _canon_field(const unsigned char* p, const Field* f, int mode,
                             unsigned char* out) noexcept nogil:
    if mode == RELAXED:
        return _relaxed_field(p, f, out)
    memcpy(out, p + f.start, f.end - f.start)
    return f.end - f.start


cdef class _Message:
    """A parsed message: the header fields as offsets into the message, body offset, and
    the body hashes computed so far (each canonical body is hashed once per message)."""

    cdef bytes data
    cdef const unsigned char* p
    cdef Py_ssize_t n
    cdef Py_ssize_t body
    cdef Field* fields
    cdef Py_ssize_t nfields
    cdef object bh_simple
    cdef object bh_relaxed

    def __dealloc__(self):
        PyMem_Free(self.fields)

    cdef bytes body_hash(self, int mode):
        """Base64 SHA-256 of the canonical body in ``mode``."""
        cdef bint add_crlf = False
        cdef Py_ssize_t k, n = self.n - self.body
        cdef const unsigned char* b = self.p + self.body
        cdef object h, buf
        cached = self.bh_relaxed if mode == RELAXED else self.bh_simple
        if cached is not None:
            return cached
        if mode == SIMPLE:
            k = _simple_body(b, n, &add_crlf)
            if self.body == 0 and k == self.n:
                h = _sha256(self.data)
            else:
                h = _sha256(memoryview(self.data)[self.body:self.body + k])
            if add_crlf:
                h.update(_CRLF)
        else:
            buf = PyByteArray_FromStringAndSize(NULL, n + 2)
            k = _relaxed_body(b, n, <unsigned char*>PyByteArray_AS_STRING(buf))
            PyByteArray_Resize(buf, k)
            h = _sha256(buf)
        cached = _b64(h.digest(), newline=False)
        if mode == RELAXED:
            self.bh_relaxed = cached
        else:
            self.bh_simple = cached
        return cached


cdef _Message _parse(object message):
    """Split ``message`` into header fields and body, refusing bare CR/LF in the header."""
    cdef _Message m = _Message.__new__(_Message)
    cdef const unsigned char* p
    cdef Py_ssize_t n, i = 0, cap = 32, start, name_end, colon
    cdef unsigned char c
    cdef Field* f
    if type(message) is not bytes:
        if not isinstance(message, (bytearray, memoryview)):
            raise TypeError(f"message must be bytes, not {type(message).__name__}")
        message = bytes(message)
    m.data = message
    m.p = p = <const unsigned char*>PyBytes_AS_STRING(message)
    m.n = n = PyBytes_GET_SIZE(message)
    m.fields = <Field*>PyMem_Malloc(cap * sizeof(Field))
    if m.fields == NULL:
        raise MemoryError()
    while i < n:
        c = p[i]
        if c == 13:
            if i + 1 < n and p[i + 1] == 10:
                i += 2
                break  # the empty line: the body follows
            _bare(p, i)
        if c == 10:
            _bare(p, i)
        start = i
        while i < n and 33 <= p[i] <= 126 and p[i] != 58:
            i += 1
        name_end = i
        while i < n and _is_wsp(p[i]):
            i += 1
        if name_end == start or i >= n or p[i] != 58:
            line = message[start:start + 60].split(b"\r\n", 1)[0]
            raise DKIMError(f"malformed header line {line!r}: expected 'Name: value'")
        colon = i
        i += 1
        while True:
            while i < n and p[i] != 13 and p[i] != 10:
                i += 1
            if i >= n:
                break
            if p[i] == 10 or i + 1 >= n or p[i + 1] != 10:
                _bare(p, i)
            if i + 2 < n and _is_wsp(p[i + 2]):
                i += 2  # folded: the field goes on
                continue
            break
        if m.nfields == cap:
            cap *= 2
            f = <Field*>PyMem_Realloc(m.fields, cap * sizeof(Field))
            if f == NULL:
                raise MemoryError()
            m.fields = f
        f = &m.fields[m.nfields]
        f.start = start
        f.name_end = name_end
        f.colon = colon
        f.end = i
        m.nfields += 1
        i += 2
    m.body = i if i < n else n
    return m


# ---------------------------------------------------------------- field writer

cdef struct Writer:
    unsigned char* buf
    Py_ssize_t n
    Py_ssize_t col


cdef inline void _fold(Writer* w) noexcept nogil:
    w.buf[w.n] = 13
    w.buf[w.n + 1] = 10
    w.buf[w.n + 2] = 32
    w.n += 3
    w.col = 1


cdef void _put(Writer* w, const char* s, Py_ssize_t k, bint glue) noexcept nogil:
    """Append a token, folding first if it would pass MAX_LINE. A ``glue`` token follows
    the previous one without a space when it stays on the same line."""
    cdef Py_ssize_t sep = 0 if glue else 1
    if w.col + sep + k > MAX_LINE and w.col > 1:
        _fold(w)
    elif sep:
        w.buf[w.n] = 32
        w.n += 1
        w.col += 1
    memcpy(w.buf + w.n, s, k)
    w.n += k
    w.col += k


cdef void _put_b_tag(Writer* w) noexcept nogil:
    """Append ``b=``, folding first unless some of the value fits behind it."""
    if w.col + 3 + B_MIN_ROOM > MAX_LINE:
        _fold(w)
        memcpy(w.buf + w.n, b"b=", 2)
        w.n += 2
        w.col += 2
    else:
        _put(w, b"b=", 2, False)


cdef void _put_b_value(Writer* w, const char* s, Py_ssize_t k) noexcept nogil:
    """Append the b= value, folded inside (whitespace in it is ignored, RFC 6376 3.5)."""
    cdef Py_ssize_t room
    while True:
        room = MAX_LINE - w.col
        if room > k:
            room = k
        memcpy(w.buf + w.n, s, room)
        w.n += room
        w.col += room
        s += room
        k -= room
        if k == 0:
            break
        _fold(w)


# ---------------------------------------------------------------- keys

cdef object _load_key(object pem, str algorithm):
    """Load a PEM private key, check its type against ``algorithm`` and its size."""
    if isinstance(pem, str):
        pem = pem.encode("ascii")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise DKIMError(f"cannot load the private key (unencrypted PEM expected): {e}") from e
    if algorithm == "rsa-sha256":
        if not isinstance(key, rsa.RSAPrivateKey):
            raise DKIMError(f"rsa-sha256 needs an RSA key, got {type(key).__name__}")
        if key.key_size < 1024:
            raise WeakKeyError(
                f"RSA key of {key.key_size} bits: receivers ignore signatures made with keys"
                " shorter than 1024 bits (RFC 8301 3.2); use 2048"
            )
    elif algorithm == "ed25519-sha256":
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise DKIMError(f"ed25519-sha256 needs an Ed25519 key, got {type(key).__name__}")
    else:
        raise DKIMError(
            f"unknown algorithm {algorithm!r}: use 'rsa-sha256' or 'ed25519-sha256'"
            " (rsa-sha1 is forbidden by RFC 8301)"
        )
    return key


cdef str _algorithm(object algorithm):
    if isinstance(algorithm, bytes):
        algorithm = (<bytes>algorithm).decode("ascii", "replace")
    if not isinstance(algorithm, str):
        raise DKIMError(f"algorithm must be a string, not {type(algorithm).__name__}")
    return algorithm


def public_key_record(private_key_pem, algorithm="rsa-sha256"):
    """The DNS TXT value publishing the public half of ``private_key_pem``.

    ``v=DKIM1; k=rsa; p=<base64 DER SubjectPublicKeyInfo>`` for rsa-sha256, and
    ``v=DKIM1; k=ed25519; p=<base64 raw 32-byte key>`` for ed25519-sha256 (RFC 8463).
    """
    alg = _algorithm(algorithm)
    key = _load_key(private_key_pem, alg)
    pub = key.public_key()
    if alg == "rsa-sha256":
        der = pub.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode("ascii")
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode("ascii")


# ---------------------------------------------------------------- signer

cdef bytes _ascii_token(object value, str what, str allowed):
    if isinstance(value, bytes):
        value = (<bytes>value).decode("ascii", "replace")
    if not isinstance(value, str) or not value:
        raise DKIMError(f"{what} must be a non-empty string")
    if not value.isascii():
        raise DKIMError(f"{what} {value!r} is not ASCII: use the A-label (punycode) form")
    for ch in value:
        if not (ch.isalnum() or ch in allowed):
            raise DKIMError(f"{what} {value!r} contains {ch!r}")
    return value.encode("ascii")


cdef bytes _header_name(object name):
    if isinstance(name, bytes):
        name = (<bytes>name).decode("ascii", "replace")
    if not isinstance(name, str) or not name or len(name) > 200:
        raise DKIMError(f"bad header name {name!r}")
    for ch in name:
        if not ("!" <= ch <= "~") or ch == ":":
            raise DKIMError(f"bad header name {name!r}")
    return name.lower().encode("ascii")


cdef class DKIMSigner:
    """Signs messages for one (domain, selector, key); reuse it, the key is loaded once.

    ``headers=None`` signs :data:`DEFAULT_HEADERS`; otherwise the given names (From is
    always added). Names in ``oversign`` (default :data:`OVERSIGNED_HEADERS`) are listed in
    h= once more than they occur. ``identity`` sets i=, ``expires_in`` (seconds) sets x=.
    """

    cdef readonly str domain
    cdef readonly str selector
    cdef readonly str algorithm
    cdef readonly tuple canonicalization
    cdef readonly tuple headers
    cdef object _key
    cdef bint _rsa
    cdef int _hmode, _bmode
    cdef object _expires_in
    cdef bytes _static         # "DKIM-Signature: v=1; a=...; s=...;" folded
    cdef Py_ssize_t _static_col
    cdef Py_ssize_t _b64len     # length of the base64 b= value
    cdef bytes _names          # h= names (lowercase), concatenated
    cdef Py_ssize_t* _noff
    cdef Py_ssize_t* _nlen
    cdef char* _nover
    cdef Py_ssize_t _nnames
    cdef Py_ssize_t _from      # index of "from" in the names

    def __cinit__(self):
        self._noff = self._nlen = NULL
        self._nover = NULL

    def __dealloc__(self):
        PyMem_Free(self._noff)
        PyMem_Free(self._nlen)
        PyMem_Free(self._nover)

    def __init__(self, domain, selector, private_key_pem, *, algorithm="rsa-sha256",
                 canonicalization=("relaxed", "relaxed"), headers=None, identity=None,
                 expires_in=None, oversign=None):
        cdef Writer w
        cdef Py_ssize_t i, off
        alg = _algorithm(algorithm)
        d = _ascii_token(domain, "domain", "-._")
        s = _ascii_token(selector, "selector", "-._")
        if isinstance(canonicalization, (str, bytes)):
            canonicalization = (
                canonicalization.split("/" if isinstance(canonicalization, str) else b"/")
            )
        if len(canonicalization) != 2:
            raise DKIMError(f"canonicalization must be (header, body), got {canonicalization!r}")
        self._hmode = _mode(canonicalization[0])
        self._bmode = _mode(canonicalization[1])
        self._key = _load_key(private_key_pem, alg)
        self._rsa = alg == "rsa-sha256"
        self.domain, self.selector, self.algorithm = d.decode(), s.decode(), alg
        modes = ("simple", "relaxed")
        self.canonicalization = (modes[self._hmode], modes[self._bmode])
        sig_bytes = (self._key.key_size + 7) // 8 if self._rsa else 64
        self._b64len = (sig_bytes + 2) // 3 * 4

        if expires_in is not None:
            if not isinstance(expires_in, int) or expires_in <= 0:
                raise DKIMError(f"expires_in must be a positive int (seconds), got {expires_in!r}")
        self._expires_in = expires_in

        tags = [b"v=1;", b"a=" + alg.encode() + b";",
                ("c=%s/%s;" % self.canonicalization).encode(), b"d=" + d + b";"]
        if identity is not None:
            ident = _ascii_token(identity, "identity", "-._@+!#$%&'*/?^`{|}~")
            local, at, idom = ident.rpartition(b"@")
            idom_l, d_l = idom.lower(), d.lower()
            if not at or not (idom_l == d_l or idom_l.endswith(b"." + d_l)):
                raise DKIMError(f"identity {identity!r} must be @{self.domain} or a subdomain")
            tags.append(b"i=" + ident + b";")
        tags.append(b"s=" + s + b";")

        names = [_header_name(h) for h in (DEFAULT_HEADERS if headers is None else headers)]
        if b"dkim-signature" in names:
            raise DKIMError("DKIM-Signature must not be signed: signers are independent")
        if b"from" not in names:
            names.insert(0, b"from")
        names = list(dict.fromkeys(names))
        over = {_header_name(h) for h in (OVERSIGNED_HEADERS if oversign is None else oversign)}
        self.headers = tuple(n.decode() for n in names)
        self._nnames = len(names)
        PyMem_Free(self._noff)  # __init__ may run twice
        PyMem_Free(self._nlen)
        PyMem_Free(self._nover)
        self._noff = <Py_ssize_t*>PyMem_Malloc(self._nnames * sizeof(Py_ssize_t))
        self._nlen = <Py_ssize_t*>PyMem_Malloc(self._nnames * sizeof(Py_ssize_t))
        self._nover = <char*>PyMem_Malloc(self._nnames)
        if self._noff == NULL or self._nlen == NULL or self._nover == NULL:
            raise MemoryError()
        self._names = b"".join(names)
        off = 0
        for i, n in enumerate(names):
            self._noff[i] = off
            self._nlen[i] = len(n)
            self._nover[i] = n in over
            off += len(n)
        self._from = names.index(b"from")

        # The static tags, folded once; sign() goes on from (_static, _static_col).
        static = bytearray(len(_SIG_NAME) + sum(len(t) + 3 for t in tags))
        w.buf = <unsigned char*>PyByteArray_AS_STRING(static)
        w.n = w.col = len(_SIG_NAME)
        memcpy(w.buf, <const char*>_SIG_NAME, w.n)
        for t in tags:
            _put(&w, <const char*>(<bytes>t), len(t), False)
        self._static = bytes(static[:w.n])
        self._static_col = w.col

    def __repr__(self):
        return (f"DKIMSigner(domain={self.domain!r}, selector={self.selector!r},"
                f" algorithm={self.algorithm!r}, canonicalization={self.canonicalization!r})")

    def sign(self, message, *, timestamp=None):
        """Return the ``DKIM-Signature: ...`` field (CRLF-terminated) to prepend to
        ``message`` (bytes, CRLF line ends). ``timestamp`` (Unix seconds) sets t=."""
        return self._sign(_parse(message), _timestamp(timestamp))

    cdef bytes _sign(self, _Message m, long long t):
        cdef Py_ssize_t nf = m.nfields, nn = self._nnames
        cdef Py_ssize_t i, k, j, c, total, cap, hcap, hn, plen, entry, nentries
        cdef const char* names = PyBytes_AS_STRING(self._names)
        cdef Field sigf
        cdef Writer w
        cdef int* match = NULL
        cdef Py_ssize_t* count = NULL
        cdef unsigned char* hbuf
        cdef char tok[256]
        cdef const unsigned char* p = m.p
        cdef Field* f
        bh = m.body_hash(self._bmode)
        tx = b"t=%d;" % t
        if self._expires_in is not None:
            tx += b" x=%d;" % (t + self._expires_in)
        match = <int*>PyMem_Malloc(nf * sizeof(int) + 1)
        count = <Py_ssize_t*>PyMem_Malloc(nn * sizeof(Py_ssize_t))
        w.buf = NULL
        try:
            if match == NULL or count == NULL:
                raise MemoryError()
            # Which h= name each field has (or -1), and how often each name occurs.
            for k in range(nn):
                count[k] = 0
            for i in range(nf):
                f = &m.fields[i]
                match[i] = -1
                for k in range(nn):
                    if self._nlen[k] == f.name_end - f.start:
                        for j in range(self._nlen[k]):
                            if _lower(p[f.start + j]) != <unsigned char>names[self._noff[k] + j]:
                                break
                        else:
                            match[i] = k
                            count[k] += 1
                            break
            if count[self._from] == 0:
                raise DKIMError("the message has no From header field, which DKIM must sign")

            # The field up to "b=": static tags, t= (x=), h=, bh=.
            nentries = 0
            total = 0
            for k in range(nn):
                c = count[k] + (1 if self._nover[k] else 0)
                nentries += c
                total += c * (self._nlen[k] + 4)
            cap = (PyBytes_GET_SIZE(self._static) + len(tx) + total + 128
                   + self._b64len + 3 * (self._b64len // 60 + 4))
            w.buf = <unsigned char*>PyMem_Malloc(cap)
            if w.buf == NULL:
                raise MemoryError()
            w.n = PyBytes_GET_SIZE(self._static)
            w.col = self._static_col
            memcpy(w.buf, PyBytes_AS_STRING(self._static), w.n)
            _put(&w, tx, len(tx), False)

            # The canonical header data: the signed fields in h= order, bottom-most first.
            hcap = m.body + 2 * nf + cap + 8
            hdata = PyByteArray_FromStringAndSize(NULL, hcap)
            hbuf = <unsigned char*>PyByteArray_AS_STRING(hdata)
            hn = 0
            entry = 0
            for k in range(nn):
                c = count[k] + (1 if self._nover[k] else 0)
                i = nf
                while c > 0:
                    c -= 1
                    # h= entry: "h=" before the first, ":" between, ";" after the last.
                    j = 0
                    if entry == 0:
                        tok[0], tok[1] = 104, 61
                        j = 2
                    memcpy(tok + j, names + self._noff[k], self._nlen[k])
                    j += self._nlen[k]
                    entry += 1
                    tok[j] = 59 if entry == nentries else 58
                    j += 1
                    _put(&w, tok, j, entry > 1)
                    while i > 0:
                        i -= 1
                        if match[i] == k:
                            hn += _canon_field(p, &m.fields[i], self._hmode, hbuf + hn)
                            hbuf[hn] = 13
                            hbuf[hn + 1] = 10
                            hn += 2
                            break
            tok[0], tok[1], tok[2] = 98, 104, 61
            memcpy(tok + 3, PyBytes_AS_STRING(bh), 44)
            tok[47] = 59
            _put(&w, tok, 48, False)
            # "b=" with an empty value goes into the hash (RFC 6376 3.7), without CRLF.
            _put_b_tag(&w)
            plen = w.n
            sigf.start = 0
            sigf.name_end = sigf.colon = len(_SIG_NAME) - 1
            sigf.end = plen
            hn += _canon_field(w.buf, &sigf, self._hmode, hbuf + hn)
            PyByteArray_Resize(hdata, hn)

            if self._rsa:
                sig = self._key.sign(hdata, _PKCS1, _SHA256)
            else:
                sig = self._key.sign(_sha256(hdata).digest())
            b = _b64(sig, newline=False)
            _put_b_value(&w, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))
            w.buf[w.n] = 13
            w.buf[w.n + 1] = 10
            return PyBytes_FromStringAndSize(<char*>w.buf, w.n + 2)
        finally:
            PyMem_Free(match)
            PyMem_Free(count)
            PyMem_Free(w.buf)


cdef long long _timestamp(object timestamp) except? -1:
    if timestamp is None:
        return <long long>time.time()
    if not isinstance(timestamp, (int, float)) or timestamp < 0:
        raise DKIMError(f"timestamp must be Unix seconds, got {timestamp!r}")
    return <long long>timestamp


def sign_many(message, signers, *, timestamp=None):
    """Sign ``message`` with each of ``signers`` independently (e.g. RSA + Ed25519, or the
    author and the sending domain); return all DKIM-Signature fields concatenated, in
    order. The message is parsed once and each distinct canonical body hashed once."""
    cdef _Message m = _parse(message)
    cdef long long t = _timestamp(timestamp)
    cdef DKIMSigner s
    out = []
    for s in signers:
        out.append(s._sign(m, t))
    return b"".join(out)


def parse_headers(message):
    """Split a CRLF message into ``([(name, value), ...], body)``.

    ``name`` is the bytes before the colon (WSP before the colon kept), ``value`` all after
    it up to the field's terminating CRLF (folds kept, that CRLF not). The body starts
    after the first empty line; without one it is empty. Bare CR/LF raise LineEndingError.
    """
    cdef _Message m = _parse(message)
    cdef Field* f
    cdef Py_ssize_t i
    data = m.data
    fields = []
    for i in range(m.nfields):
        f = &m.fields[i]
        fields.append((data[f.start:f.colon], data[f.colon + 1:f.end]))
    return fields, data[m.body:]


def canonicalize_headers(fields, mode):
    """The canonical form (``mode`` "relaxed" or "simple") of ``(name, value)`` fields as
    :func:`parse_headers` returns them: each field followed by CRLF, concatenated. These
    are the bytes DKIM hashes for the signed fields."""
    cdef int md = _mode(mode)
    cdef Field f
    cdef const unsigned char* p
    cdef Py_ssize_t i, n
    out = bytearray()
    for name, value in fields:
        raw = bytes(name) + b":" + bytes(value)
        p = <const unsigned char*>PyBytes_AS_STRING(raw)
        n = PyBytes_GET_SIZE(raw)
        for i in range(n):
            # A CR/LF in a value is only allowed as a fold: CRLF followed by WSP.
            if p[i] == 13 and not (i + 2 < n and p[i + 1] == 10 and _is_wsp(p[i + 2])):
                raise LineEndingError(f"CR not part of a fold in header field {raw[:40]!r}")
            if p[i] == 10 and not (i > 0 and p[i - 1] == 13):
                _bare(p, i)
        f.start = 0
        f.colon = len(name)
        f.name_end = len(bytes(name).rstrip(b" \t"))
        f.end = n
        buf = bytearray(n + 2)
        n = _canon_field(p, &f, md, <unsigned char*>PyByteArray_AS_STRING(buf))
        out += buf[:n]
        out += _CRLF
    return bytes(out)


def canonicalize_body(body, mode):
    """The canonical form of a message body (``mode`` "relaxed" or "simple"), as hashed
    for bh=. An unterminated last line is canonicalized as if it ended in CRLF."""
    cdef int md = _mode(mode)
    cdef bint add_crlf = False
    cdef Py_ssize_t k
    body = bytes(body)
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(body)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(body)
    if md == SIMPLE:
        k = _simple_body(p, n, &add_crlf)
        return body[:k] + _CRLF if add_crlf else body[:k]
    buf = PyByteArray_FromStringAndSize(NULL, n + 2)
    k = _relaxed_body(p, n, <unsigned char*>PyByteArray_AS_STRING(buf))
    PyByteArray_Resize(buf, k)
    return bytes(buf)
