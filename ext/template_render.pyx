# cython: language_level=3, boundscheck=True, wraparound=True
"""The template language's renderer: a parsed template as typed nodes, run per recipient.

:func:`compile_field` turns the syntax tree of :mod:`salvo.ext.template_parse` into a
:class:`Program` once per job: names bound by ``for`` loops are resolved to slots at
compile time, so a render looks up only the recipient's variables. Values keep Jinja2's
semantics (Python's truth, comparisons and ``in``; ``a.b`` and ``a["b"]`` are item
lookups only, never attributes); ``Safe`` marks text that is not escaped again, as
Jinja2's ``Markup``, and the filters follow Jinja2's handling of it. A missing variable
is an :class:`Undefined` value: false in a test, taken by ``default``, equal only to
another undefined, and an error (:class:`MissingVariableError`) anywhere it would have
to become text, a number or a sequence. See docs/templates.md.
"""

import re
from urllib.parse import quote_from_bytes

from salvo.ext.errors import MissingVariableError, TemplateError
from salvo.ext import template_parse

__all__ = ["DEFAULT_MAX_LOOP_ITEMS", "DEFAULT_MAX_OUTPUT", "Program", "Safe", "compile_field",
           "escape"]

DEFAULT_MAX_LOOP_ITEMS = 1000
DEFAULT_MAX_OUTPUT = 1_000_000


class Safe(str):
    """Text that is already HTML (the ``raw``/``safe``/``escape`` filters' result)."""

    __slots__ = ()

    def __repr__(self):
        return f"Safe({str.__repr__(self)})"


cpdef str escape(str s):
    """HTML-escape ``& < > ' "`` as Jinja2 (markupsafe) does: ``&#39;`` and ``&#34;``."""
    cdef Py_UCS4 ch
    for ch in s:  # one typed pass: most values have nothing to escape
        if ch == 38 or ch == 60 or ch == 62 or ch == 39 or ch == 34:
            return (s.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;")
                    .replace("'", "&#39;").replace('"', "&#34;"))
    return s


cdef class Undefined:
    """The value of a path that names nothing; ``name`` is the path as written."""

    cdef readonly str name

    def __init__(self, str name):
        self.name = name

    def __eq__(self, other):
        return type(other) is Undefined

    def __ne__(self, other):
        return type(other) is not Undefined

    def __hash__(self):
        return id(Undefined)

    def __bool__(self):
        return False

    def __repr__(self):
        return "Undefined"  # as jinja2's, for str() of a list holding one


cdef class LoopInfo:
    """``loop`` inside a ``for``: index, index0, first, last, length, revindex(0)."""

    cdef Py_ssize_t index0
    cdef Py_ssize_t length

    cdef object get(self, int code, str label):
        if code == 0:
            return self.index0 + 1
        if code == 1:
            return self.index0
        if code == 2:
            return self.index0 == 0
        if code == 3:
            return self.index0 == self.length - 1
        if code == 4:
            return self.length
        if code == 5:
            return self.length - self.index0
        if code == 6:
            return self.length - self.index0 - 1
        return Undefined(label)


cdef tuple _LOOP_ATTRS = ("index", "index0", "first", "last", "length", "revindex", "revindex0")


cdef int _loop_code(object key):
    """The attribute code of ``loop.<key>`` (-1: no such attribute)."""
    if type(key) is str and key in _LOOP_ATTRS:
        return _LOOP_ATTRS.index(key)
    return -1


cdef class Ctx:
    """One render's state: variables, loop slots, limits, and missing names when checking."""

    cdef dict vars
    cdef list slots
    cdef list missing      # None: a missing variable raises
    cdef str field
    cdef bint html
    cdef Py_ssize_t size
    cdef Py_ssize_t max_output
    cdef Py_ssize_t max_items

    cdef object miss(self, Undefined u):
        """A missing variable reached a use that needs a value: raise, or note it."""
        if self.missing is None:
            raise MissingVariableError(u.name, self.field)
        self.missing.append(u.name)
        return u

    cdef inline int grow(self, Py_ssize_t n) except -1:
        self.size += n
        if self.size > self.max_output:
            raise TemplateError(
                f"{self.field}: output over {self.max_output:,} characters (the limit)")
        return 0


# ---------------------------------------------------------------------------------------
# Expressions


cdef class Expr:
    cdef str label

    cdef object eval(self, Ctx c):
        raise NotImplementedError


cdef class Const(Expr):
    cdef object value

    cdef object eval(self, Ctx c):
        return self.value


cdef class ListExpr(Expr):
    cdef list items

    cdef object eval(self, Ctx c):
        return [(<Expr>e).eval(c) for e in self.items]


cdef class Global(Expr):
    cdef str name

    cdef object eval(self, Ctx c):
        cdef object v = c.vars.get(self.name, _NOTHING)
        if v is _NOTHING:
            return Undefined(self.name)
        return v


cdef class Local(Expr):
    cdef Py_ssize_t slot

    cdef object eval(self, Ctx c):
        return c.slots[self.slot]


cdef object _NOTHING = object()


cdef class Item(Expr):
    """``a.b``, ``a.0``, ``a["b"]``, ``a[i]``: an item lookup, undefined when it fails."""

    cdef Expr obj
    cdef Expr key
    cdef object const_key
    cdef bint is_const
    cdef int loop_code     # the const key's ``loop`` attribute code

    cdef object eval(self, Ctx c):
        cdef object obj = self.obj.eval(c)
        cdef object v
        if self.is_const and type(obj) is dict:  # the common case: a literal key
            v = (<dict>obj).get(self.const_key, _NOTHING)
            return Undefined(self.label) if v is _NOTHING else v
        return self._lookup(obj, self.const_key if self.is_const else self.key.eval(c))

    cdef object _lookup(self, object obj, object key):
        cdef object v
        if type(obj) is dict:
            try:
                v = (<dict>obj).get(key, _NOTHING)
            except TypeError:
                return Undefined(self.label)
            return Undefined(self.label) if v is _NOTHING else v
        if type(obj) is Undefined:
            return Undefined(self.label)
        if type(obj) is LoopInfo:
            return (<LoopInfo>obj).get(self.loop_code if self.is_const else _loop_code(key),
                                       self.label)
        if type(obj) is Safe:
            try:
                return Safe(str.__getitem__(obj, key))
            except (TypeError, LookupError):
                return Undefined(self.label)
        try:
            return obj[key]
        except (TypeError, LookupError, AttributeError):
            return Undefined(self.label)


cdef class Not(Expr):
    cdef Expr operand

    cdef object eval(self, Ctx c):
        return not self.operand.eval(c)


cdef class And(Expr):
    cdef Expr left
    cdef Expr right

    cdef object eval(self, Ctx c):
        cdef object v = self.left.eval(c)
        if not v:
            return v
        return self.right.eval(c)


cdef class Or(Expr):
    cdef Expr left
    cdef Expr right

    cdef object eval(self, Ctx c):
        cdef object v = self.left.eval(c)
        if v:
            return v
        return self.right.eval(c)


cdef enum:
    OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN

cdef dict _OPS = {"==": OP_EQ, "!=": OP_NE, "<": OP_LT, "<=": OP_LE, ">": OP_GT,
                  ">=": OP_GE, "in": OP_IN, "notin": OP_NOTIN}


cdef class Compare(Expr):
    """``a < b <= c``: Python's chained comparison, as Jinja2."""

    cdef Expr first
    cdef list ops      # [(int op, Expr), ...]

    cdef object eval(self, Ctx c):
        cdef object left = self.first.eval(c), right
        cdef int op
        cdef bint r
        for op, e in self.ops:
            right = (<Expr>e).eval(c)
            r = _compare(c, op, left, right)
            if not r:
                return False
            left = right
        return True


cdef bint _compare(Ctx c, int op, object a, object b) except -1:
    if op == OP_EQ:
        return a == b
    if op == OP_NE:
        return a != b
    if op == OP_IN or op == OP_NOTIN:
        if type(b) is Undefined:
            c.miss(b)
            return False
        try:
            r = a in b
        except TypeError as exc:
            if type(a) is Undefined:
                c.miss(a)
                return False
            raise TemplateError(f"{c.field}: 'in': {exc}") from None
        return r if op == OP_IN else not r
    if type(a) is Undefined:
        c.miss(a)
        return False
    if type(b) is Undefined:
        c.miss(b)
        return False
    try:
        if op == OP_LT:
            return a < b
        if op == OP_LE:
            return a <= b
        if op == OP_GT:
            return a > b
        return a >= b
    except TypeError as exc:
        raise TemplateError(f"{c.field}: cannot compare: {exc}") from None


cdef class Test(Expr):
    """``x is [not] defined / undefined / none``."""

    cdef Expr operand
    cdef int kind        # 0 defined, 1 undefined, 2 none
    cdef bint negated

    cdef object eval(self, Ctx c):
        cdef object v = self.operand.eval(c)
        cdef bint r
        if self.kind == 0:
            r = type(v) is not Undefined
        elif self.kind == 1:
            r = type(v) is Undefined
        else:
            r = v is None
        return r != self.negated


# ---------------------------------------------------------------------------------------
# Filters


cdef enum:
    F_DEFAULT, F_UPPER, F_LOWER, F_TITLE, F_CAPITALIZE, F_TRIM, F_TRUNCATE, F_REPLACE,
    F_URLENCODE, F_ESCAPE, F_SAFE, F_JOIN, F_LENGTH, F_INT, F_ROUND, F_FORMAT_NUMBER, F_DATE

cdef dict _FILTERS = {
    "default": F_DEFAULT, "d": F_DEFAULT, "upper": F_UPPER, "lower": F_LOWER,
    "title": F_TITLE, "capitalize": F_CAPITALIZE, "trim": F_TRIM, "truncate": F_TRUNCATE,
    "replace": F_REPLACE, "urlencode": F_URLENCODE, "escape": F_ESCAPE, "e": F_ESCAPE,
    "raw": F_SAFE, "safe": F_SAFE, "join": F_JOIN, "length": F_LENGTH, "count": F_LENGTH,
    "int": F_INT, "round": F_ROUND, "format_number": F_FORMAT_NUMBER, "date": F_DATE,
}


cdef class Filter(Expr):
    cdef int code
    cdef str name
    cdef Expr operand
    cdef list args

    cdef object eval(self, Ctx c):
        cdef object v = self.operand.eval(c)
        cdef list args = [(<Expr>a).eval(c) for a in self.args] if self.args else _NO_ARGS
        if self.code == F_DEFAULT:
            if type(v) is Undefined or (len(args) > 1 and args[1] and not v):
                return args[0] if args else ""
            return v
        if type(v) is Undefined:
            return c.miss(v)
        for a in args:
            if type(a) is Undefined:
                return c.miss(a)
        try:
            return _filter(c, self.code, v, args)
        except (MissingVariableError, TemplateError):
            raise
        except Exception as exc:
            raise TemplateError(
                f"{c.field}: filter {self.name!r} on {_kind(v)}: {exc}") from None


cdef list _NO_ARGS = []


cdef str _kind(object v):
    if type(v) is Safe:
        return "str"
    return type(v).__name__


cdef inline object _soft_str(object v):
    if type(v) is str or type(v) is Safe:
        return v
    return _to_str(v)


cdef str _to_str(object v):
    """Python's str() of a value, as Jinja2 turns a non-text value into text."""
    if isinstance(v, str):
        return str.__str__(v)
    if type(v) is LoopInfo:
        raise TemplateError("'loop' is not text")
    return str(v)


cdef object _escape_any(object v):
    """markupsafe.escape: Safe stays, anything else becomes escaped Safe text."""
    if type(v) is Safe:
        return v
    return Safe(escape(_to_str(v)))


cdef object _filter(Ctx c, int code, object v, list args):
    cdef object s
    if code == F_UPPER:
        s = _soft_str(v)
        return Safe(str.upper(s)) if type(s) is Safe else str.upper(s)
    if code == F_LOWER:
        s = _soft_str(v)
        return Safe(str.lower(s)) if type(s) is Safe else str.lower(s)
    if code == F_CAPITALIZE:
        s = _soft_str(v)
        return Safe(str.capitalize(s)) if type(s) is Safe else str.capitalize(s)
    if code == F_TRIM:
        s = _soft_str(v)
        return Safe(str.strip(s)) if type(s) is Safe else str.strip(s)
    if code == F_TITLE:
        return _title(str.__str__(_soft_str(v)))
    if code == F_SAFE:
        return v if type(v) is Safe else Safe(_to_str(v))
    if code == F_ESCAPE:
        return _escape_any(v)
    if code == F_LENGTH:
        return _length(v)
    if code == F_INT:
        return _int(v)
    if code == F_ROUND:
        if type(v) is str or type(v) is Safe:
            raise TemplateError(f"{c.field}: filter 'round' on a str")
        return round(v, args[0] if args else 0)
    if code == F_TRUNCATE:
        return _truncate(v, args[0] if args else 255)
    if code == F_REPLACE:
        return _replace(c, v, args[0], args[1])
    if code == F_JOIN:
        return _join(c, v, args[0] if args else "")
    if code == F_URLENCODE:
        return _urlencode(c, v)
    if code == F_FORMAT_NUMBER:
        if type(v) is int and -1000 < <long long>v < 1000:
            return str(v)
        if type(v) is int or type(v) is float:
            return format(v, ",")
        return format_number(v)
    if code == F_DATE:
        return format_date(v, args[0])
    raise AssertionError(code)


cdef str _title(str s):
    """Jinja2's title: the first character of each word upper case, the rest lower; words
    begin after whitespace, "-", "(", "{", "[" and "<"."""
    cdef list out = []
    cdef Py_ssize_t i, start = 0, n = len(s)
    cdef bint sep, prev_sep = True
    cdef Py_UCS4 ch
    for i in range(n):
        ch = s[i]
        sep = ch == 45 or ch == 40 or ch == 123 or ch == 91 or ch == 60 or (<str>s[i]).isspace()
        if prev_sep and not sep:
            out.append(s[start:i])
            start = i
        elif sep and not prev_sep:
            out.append(s[start].upper() + s[start + 1:i].lower())
            start = i
        prev_sep = sep
    if prev_sep:
        out.append(s[start:])
    else:
        out.append(s[start].upper() + s[start + 1:].lower())
    return "".join(out)


cdef object _length(object v):
    if type(v) is LoopInfo:
        return (<LoopInfo>v).length
    return len(v)


cdef object _int(object v):
    # Jinja2's int filter: int(), then int(float()), then 0.
    try:
        if isinstance(v, str):
            return int(v, 10)
        return int(v)
    except (TypeError, ValueError):
        try:
            return int(float(v))
        except (TypeError, ValueError, OverflowError):
            return 0


cdef object _truncate(object s, object length):
    if type(length) is bool or type(length) is not int:
        if not isinstance(length, (int, float)):
            raise TemplateError(f"truncate's length must be a number, not {_kind(length)}")
    if length < 3:
        raise TemplateError(f"truncate's length must be at least 3, not {length}")
    if len(s) <= length + 5:
        return s
    if not isinstance(s, str):
        raise TemplateError(f"truncate applies to text, not {_kind(s)}")
    cdef str head = str.__str__(s)[: length - 3]
    head = head.rsplit(" ", 1)[0]
    if type(s) is Safe:
        return Safe(head + "...")
    return head + "..."


cdef object _replace(Ctx c, object s, object old, object new):
    if not c.html:
        return _to_str(s).replace(_to_str(old), _to_str(new), -1)
    if type(old) is Safe or (type(new) is Safe and type(s) is not Safe):
        s = _escape_any(s)
    else:
        s = _soft_str(s)
    if type(s) is Safe:
        # Markup.replace escapes the replacement unless it is Safe (not the needle).
        return Safe(str.replace(s, _to_str(old), _escape_any(new), -1))
    return str.replace(s, _to_str(old), _to_str(new), -1)


cdef object _join(Ctx c, object value, object d):
    cdef list items = _items(c, value)
    cdef Py_ssize_t i
    cdef bint any_safe = False
    for x in items:
        if type(x) is Undefined:
            c.miss(x)
    if not c.html:
        return _to_str(d).join([_to_str(x) for x in items])
    if type(d) is not Safe:
        for i in range(len(items)):
            if type(items[i]) is Safe:
                any_safe = True
            else:
                items[i] = _to_str(items[i])
        if any_safe:
            return Safe(str.join(_escape_any(d), [_escape_any(x) for x in items]))
        return str.join(_to_str(d), items)
    return Safe(str.join(d, [_escape_any(x) for x in items]))


cdef list _items(Ctx c, object value):
    """The elements a loop or ``join`` goes over: a list's items, a dict's keys, a text's
    characters; a missing value is an error, as is any other type."""
    cdef list out
    if type(value) is list:
        out = list(<list>value)
    elif type(value) is dict or type(value) is tuple:
        out = list(value)
    elif isinstance(value, str):
        out = list(str.__str__(value))
    elif type(value) is Undefined:
        c.miss(value)
        return []
    else:
        raise TemplateError(f"{c.field}: a {_kind(value)} is not a sequence")
    return out


cdef str _url_quote(object v, bint for_qs):
    cdef str s = _to_str(v)
    cdef Py_UCS4 ch
    for ch in s:  # text that needs no quoting (ids, tokens) stays as it is, without a copy
        if not (48 <= ch <= 57 or 65 <= ch <= 90 or 97 <= ch <= 122 or ch == 95 or ch == 46
                or ch == 45 or ch == 126 or (ch == 47 and not for_qs)):
            break
    else:
        return s
    cdef str rv = quote_from_bytes(s.encode("utf-8"), b"" if for_qs else b"/")
    return rv.replace("%20", "+") if for_qs else rv


cdef object _urlencode(Ctx c, object v):
    if isinstance(v, str) or not isinstance(v, (list, tuple, dict)):
        return _url_quote(v, False)
    pairs = (<dict>v).items() if type(v) is dict else v
    out = []
    for pair in pairs:
        if type(pair) is Undefined:
            return c.miss(pair)
        try:
            k, val = pair
        except (TypeError, ValueError):
            raise TemplateError("urlencode takes text, a map or a list of pairs") from None
        out.append(f"{_url_quote(k, True)}={_url_quote(val, True)}")
    return "&".join(out)


def format_number(v):
    """``1234567.5`` -> ``1,234,567.5``: thousands separated by commas, no locale.
    Numbers, or text that reads as one; anything else is a :class:`TemplateError`."""
    if type(v) is bool:
        raise TemplateError("format_number needs a number, not a bool")
    if isinstance(v, (int, float)):
        return format(v, ",")
    if isinstance(v, str):
        text = str.__str__(v).strip()
        try:
            return format(int(text), ",")
        except ValueError:
            pass
        try:
            return format(float(text), ",")
        except ValueError:
            pass
    raise TemplateError(f"format_number needs a number, not {v!r:.40}")


_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)(?:[Tt ](\d\d):(\d\d)(?::(\d\d)(?:\.\d+)?)?)?\s*"
    r"(Z|z|[+\-]\d\d:?\d\d)?\Z")


def format_date(v, fmt):
    """A date from an epoch (seconds, UTC) or an RFC 3339 text (its own offset), written
    with strftime-style ``%`` directives in English, whatever the machine's locale:
    ``%Y %m %d %H %M %S %y %e %j %B %b %A %a %p %I %z %Z %%``."""
    import datetime as dt
    if type(fmt) is not str and type(fmt) is not Safe:
        raise TemplateError("date's format must be text")
    if type(v) is bool:
        raise TemplateError("date needs an epoch or an RFC 3339 text, not a bool")
    if isinstance(v, (int, float)):
        try:
            d = dt.datetime.fromtimestamp(v, dt.timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise TemplateError(f"date: {v!r} is out of range") from None
    elif isinstance(v, str):
        m = _RFC3339.match(str.__str__(v).strip())
        if m is None:
            raise TemplateError(f"date: {v!r:.40} is not an epoch or an RFC 3339 date")
        y, mo, da, h, mi, se, tz = m.groups()
        if tz is None or tz in "Zz":
            zone = dt.timezone.utc
        else:
            sign = -1 if tz[0] == "-" else 1
            digits = tz[1:].replace(":", "")
            zone = dt.timezone(sign * dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
        try:
            d = dt.datetime(int(y), int(mo), int(da), int(h or 0), int(mi or 0),
                            min(int(se or 0), 59), tzinfo=zone)
        except ValueError as exc:
            raise TemplateError(f"date: {v!r:.40}: {exc}") from None
    else:
        raise TemplateError(f"date needs an epoch or an RFC 3339 text, not {type(v).__name__}")
    return _strftime(d, str.__str__(fmt))


def _strftime(d, str fmt):
    out = []
    i, n = 0, len(fmt)
    while i < n:
        ch = fmt[i]
        if ch != "%" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        k = fmt[i + 1]
        i += 2
        if k == "Y":
            out.append(f"{d.year:04d}")
        elif k == "y":
            out.append(f"{d.year % 100:02d}")
        elif k == "m":
            out.append(f"{d.month:02d}")
        elif k == "d":
            out.append(f"{d.day:02d}")
        elif k == "e":
            out.append(f"{d.day:2d}")
        elif k == "H":
            out.append(f"{d.hour:02d}")
        elif k == "I":
            out.append(f"{(d.hour % 12) or 12:02d}")
        elif k == "p":
            out.append("AM" if d.hour < 12 else "PM")
        elif k == "M":
            out.append(f"{d.minute:02d}")
        elif k == "S":
            out.append(f"{d.second:02d}")
        elif k == "j":
            out.append(f"{d.timetuple().tm_yday:03d}")
        elif k == "B":
            out.append(_MONTHS[d.month - 1])
        elif k == "b":
            out.append(_MONTHS[d.month - 1][:3])
        elif k == "A":
            out.append(_DAYS[d.weekday()])
        elif k == "a":
            out.append(_DAYS[d.weekday()][:3])
        elif k == "z":
            off = int(d.utcoffset().total_seconds()) // 60
            sign = "-" if off < 0 else "+"
            out.append(f"{sign}{abs(off) // 60:02d}{abs(off) % 60:02d}")
        elif k == "Z":
            out.append("UTC" if d.utcoffset().total_seconds() == 0 else "")
        elif k == "%":
            out.append("%")
        else:
            raise TemplateError(f"date: unknown directive '%{k}'")
    return "".join(out)


# ---------------------------------------------------------------------------------------
# Statements


cdef class Stmt:
    cdef int run(self, Ctx c, list out) except -1:
        raise NotImplementedError


cdef class Text(Stmt):
    cdef str text

    cdef int run(self, Ctx c, list out) except -1:
        c.grow(len(self.text))
        out.append(self.text)
        return 0


cdef class Output(Stmt):
    cdef Expr expr

    cdef int run(self, Ctx c, list out) except -1:
        cdef object v = self.expr.eval(c)
        cdef str s
        if type(v) is str:
            s = <str>v
            if c.html:
                s = escape(s)
        elif type(v) is Safe:
            s = str.__str__(v)
        elif v is None:
            return 0
        elif type(v) is Undefined:
            c.miss(v)
            return 0
        elif type(v) is int or type(v) is float or type(v) is bool or isinstance(v, (int, float)):
            s = str(v)
        else:
            raise TemplateError(
                f"{c.field}: {self.expr.label} is a {_kind(v)}: only text, numbers, "
                "booleans and none are output (use join or length for a list)")
        c.grow(len(s))
        out.append(s)
        return 0


cdef int _run_body(list body, Ctx c, list out) except -1:
    for s in body:
        (<Stmt>s).run(c, out)
    return 0


cdef class If(Stmt):
    cdef list tests     # Expr per branch
    cdef list bodies    # list of Stmt per branch
    cdef list else_body

    cdef int run(self, Ctx c, list out) except -1:
        cdef Py_ssize_t i
        for i in range(len(self.tests)):
            if (<Expr>self.tests[i]).eval(c):
                return _run_body(<list>self.bodies[i], c, out)
        if self.else_body is not None:
            return _run_body(self.else_body, c, out)
        return 0


cdef class For(Stmt):
    cdef Py_ssize_t slot     # the loop variable; slot + 1 holds ``loop``
    cdef Expr iterable
    cdef list body
    cdef list else_body

    cdef int run(self, Ctx c, list out) except -1:
        cdef list items = _items(c, self.iterable.eval(c))
        cdef Py_ssize_t n = len(items), i
        if n > c.max_items:
            raise TemplateError(
                f"{c.field}: a loop over {n:,} items (the limit is {c.max_items:,})")
        if n == 0:
            if self.else_body is not None:
                _run_body(self.else_body, c, out)
            return 0
        cdef object saved_item = c.slots[self.slot], saved_loop = c.slots[self.slot + 1]
        cdef LoopInfo info = LoopInfo.__new__(LoopInfo)
        info.length = n
        c.slots[self.slot + 1] = info
        try:
            for i in range(n):
                info.index0 = i
                c.slots[self.slot] = items[i]
                _run_body(self.body, c, out)
        finally:
            c.slots[self.slot] = saved_item
            c.slots[self.slot + 1] = saved_loop
        return 0


# ---------------------------------------------------------------------------------------
# Compilation


cdef class _Scope:
    """Names bound by the enclosing loops at one point of the tree, innermost last."""

    cdef list names    # [(name, slot)]
    cdef Py_ssize_t depth
    cdef Py_ssize_t most

    cdef object find(self, str name):
        for bound, slot in reversed(self.names):
            if bound == name:
                return slot
        return None


cdef Expr _expr(tuple node, _Scope scope, set roots):
    cdef str kind = node[0]
    cdef Expr e
    if kind == "const":
        e = Const.__new__(Const)
        (<Const>e).value = node[1]
        e.label = repr(node[1])
    elif kind == "list":
        e = ListExpr.__new__(ListExpr)
        (<ListExpr>e).items = [_expr(x, scope, roots) for x in node[1]]
        e.label = "[...]"
    elif kind == "name":
        slot = scope.find(node[1])
        if slot is not None:
            e = Local.__new__(Local)
            (<Local>e).slot = slot
        else:
            e = Global.__new__(Global)
            (<Global>e).name = node[1]
            roots.add(node[1])
        e.label = node[1]
    elif kind == "item":
        e = Item.__new__(Item)
        (<Item>e).obj = _expr(node[1], scope, roots)
        (<Item>e).key = _expr(node[2], scope, roots)
        (<Item>e).is_const = node[2][0] == "const"
        (<Item>e).const_key = node[2][1] if node[2][0] == "const" else None
        (<Item>e).loop_code = _loop_code((<Item>e).const_key)
        e.label = node[3]
    elif kind == "filter":
        e = Filter.__new__(Filter)
        (<Filter>e).code = _FILTERS[node[1]]
        (<Filter>e).name = node[1]
        (<Filter>e).operand = _expr(node[2], scope, roots)
        (<Filter>e).args = [_expr(x, scope, roots) for x in node[3]]
        e.label = f"{(<Filter>e).operand.label} | {node[1]}"
    elif kind == "test":
        e = Test.__new__(Test)
        (<Test>e).operand = _expr(node[2], scope, roots)
        (<Test>e).kind = template_parse.TESTS.index(node[1])
        (<Test>e).negated = node[3]
        e.label = "(test)"
    elif kind == "not":
        e = Not.__new__(Not)
        (<Not>e).operand = _expr(node[1], scope, roots)
        e.label = "(not)"
    elif kind == "and" or kind == "or":
        e = And.__new__(And) if kind == "and" else Or.__new__(Or)
        left, right = _expr(node[1], scope, roots), _expr(node[2], scope, roots)
        if kind == "and":
            (<And>e).left, (<And>e).right = left, right
        else:
            (<Or>e).left, (<Or>e).right = left, right
        e.label = f"({kind})"
    elif kind == "compare":
        e = Compare.__new__(Compare)
        (<Compare>e).first = _expr(node[1], scope, roots)
        (<Compare>e).ops = [(_OPS[op], _expr(x, scope, roots)) for op, x in node[2]]
        e.label = "(comparison)"
    else:
        raise AssertionError(kind)
    return e


cdef list _stmts(list body, _Scope scope, set roots, str field):
    cdef list out = []
    cdef Stmt s
    for node in body:
        kind = node[0]
        if kind == "text":
            s = Text.__new__(Text)
            (<Text>s).text = node[1]
        elif kind == "output":
            s = Output.__new__(Output)
            (<Output>s).expr = _expr(node[1], scope, roots)
        elif kind == "if":
            s = If.__new__(If)
            (<If>s).tests = [_expr(t, scope, roots) for t, _ in node[1]]
            (<If>s).bodies = [_stmts(b, scope, roots, field) for _, b in node[1]]
            (<If>s).else_body = None if node[2] is None else _stmts(node[2], scope, roots, field)
        elif kind == "for":
            s = For.__new__(For)
            (<For>s).iterable = _expr(node[2], scope, roots)
            (<For>s).else_body = None if node[4] is None else _stmts(node[4], scope, roots, field)
            slot = 2 * scope.depth
            (<For>s).slot = slot
            scope.names.append((node[1], slot))
            scope.names.append(("loop", slot + 1))
            scope.depth += 1
            if scope.depth > scope.most:
                scope.most = scope.depth
            (<For>s).body = _stmts(node[3], scope, roots, field)
            scope.depth -= 1
            del scope.names[-2:]
        else:
            raise AssertionError(kind)
        out.append(s)
    return out


cdef class Program:
    """A compiled template field. ``roots``: the top-level variable names it reads."""

    cdef list body
    cdef Py_ssize_t nslots
    cdef readonly str field
    cdef readonly bint html
    cdef readonly frozenset roots
    cdef public Py_ssize_t max_output
    cdef public Py_ssize_t max_items

    cdef Ctx _ctx(self, dict variables, list missing):
        cdef Ctx c = Ctx.__new__(Ctx)
        c.vars = variables
        c.slots = [None] * self.nslots
        c.missing = missing
        c.field = self.field
        c.html = self.html
        c.max_output = self.max_output
        c.max_items = self.max_items
        return c

    cpdef str render(self, dict variables):
        """The field's text for one recipient. Raises :class:`MissingVariableError` or
        :class:`TemplateError`."""
        cdef list out = []
        _run_body(self.body, self._ctx(variables, None), out)
        return "".join(out)

    cpdef list missing(self, dict variables):
        """The names a render would find missing, in the order met, repeats included; a
        render raises at the first. A missing value then counts as undefined and the
        check goes on. Other template errors (a limit, a wrong type) still raise."""
        cdef list missing = []
        _run_body(self.body, self._ctx(variables, missing), [])
        return missing


def compile_field(str text, str field="template", bint html=False, *,
                  max_items=DEFAULT_MAX_LOOP_ITEMS, max_output=DEFAULT_MAX_OUTPUT):
    """Parse and compile one template field (``html``: autoescaped)."""
    return compile_tree(template_parse.parse(text, field), field, html,
                        max_items=max_items, max_output=max_output)


def compile_tree(list tree, str field, bint html, *, max_items=DEFAULT_MAX_LOOP_ITEMS,
                 max_output=DEFAULT_MAX_OUTPUT):
    """A :class:`Program` from a tree of :func:`salvo.ext.template_parse.parse`."""
    cdef _Scope scope = _Scope.__new__(_Scope)
    scope.names = []
    cdef set roots = set()
    cdef Program p = Program.__new__(Program)
    p.body = _stmts(tree, scope, roots, field)
    p.nslots = 2 * scope.most
    p.field = field
    p.html = html
    p.roots = frozenset(roots)
    p.max_items = max_items
    p.max_output = max_output
    return p
