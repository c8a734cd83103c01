"""The template language's parser: Jinja-style source text into a small syntax tree.

A hand-written lexer and recursive-descent parser for the subset of Jinja2 that
docs/templates.md lists. It runs once per job (compile time), so it is plain Python; the
tree it returns is turned into typed nodes and rendered per recipient by
:mod:`salvo.ext.template_render`.

The tree is made of tuples. Statements (a body is a list of them)::

    ("text", str)
    ("output", expr)
    ("if", [(test, body), ...], else_body | None)
    ("for", name, iterable, body, else_body | None)

Expressions::

    ("const", value)                  str, int, float, bool, None
    ("list", [expr, ...])
    ("name", name)
    ("item", expr, key_expr, label)   a["k"], a[0], a.b, a.0 (label: the path as written)
    ("filter", name, expr, [arg, ...])
    ("test", name, expr, negated)     x is defined / undefined / none
    ("not", expr)
    ("and", a, b) / ("or", a, b)
    ("compare", first, [(op, expr), ...])   op: == != < <= > >= in notin

Errors are :class:`TemplateSyntaxError` naming the field, line and column.
"""

from __future__ import annotations

import re

from salvo.ext.errors import TemplateSyntaxError

__all__ = ["FILTERS", "TESTS", "parse"]

# Filter name -> (fewest, most) positional arguments.
FILTERS = {
    "default": (0, 2),
    "d": (0, 2),
    "upper": (0, 0),
    "lower": (0, 0),
    "title": (0, 0),
    "capitalize": (0, 0),
    "trim": (0, 0),
    "truncate": (0, 1),
    "replace": (2, 2),
    "urlencode": (0, 0),
    "escape": (0, 0),
    "e": (0, 0),
    "raw": (0, 0),
    "safe": (0, 0),
    "join": (0, 1),
    "length": (0, 0),
    "count": (0, 0),
    "int": (0, 0),
    "round": (0, 1),
    "format_number": (0, 0),
    "date": (1, 1),
}
TESTS = ("defined", "undefined", "none")

_KEYWORDS = {"true": True, "false": False, "none": None, "True": True, "False": False, "None": None}
_RESERVED = {"and", "or", "not", "in", "is", "if", "else", "elif", "for", "endif", "endfor"}

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<float>\d+(?:_\d+)*\.\d+(?:_\d+)*(?:[eE][+\-]?\d+(?:_\d+)*)?
              |\d+(?:_\d+)*[eE][+\-]?\d+(?:_\d+)*)
  | (?P<int>\d+(?:_\d+)*)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,|\.|\||-)
    """,
    re.VERBOSE | re.DOTALL,
)
_INT_ONLY = re.compile(r"\d+(?:_\d+)*")
_UNSUPPORTED_OPS = {
    "+": "arithmetic",
    "*": "arithmetic",
    "/": "arithmetic",
    "%": "arithmetic",
    "~": "'~' concatenation",
    "=": "assignment",
    "{": "dict literals",
    ":": "slices",
}
_END = {"var": "}}", "block": "%}"}


class _Source:
    """The template text and a way to turn an offset into a line and column."""

    def __init__(self, text: str, field: str) -> None:
        self.text = text
        self.field = field

    def error(self, pos: int, message: str) -> TemplateSyntaxError:
        line = self.text.count("\n", 0, pos) + 1
        column = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        exc = TemplateSyntaxError(f"{self.field}: line {line}, column {column}: {message}")
        exc.line, exc.column = line, column
        return exc


def _unescape(body: str) -> str:
    # Jinja2's own rule for string literals, so both read escapes alike.
    return body.encode("ascii", "backslashreplace").decode("unicode-escape")


def _lex(src: _Source) -> list:
    """Split the text into ("text", str), ("var"|"block", tokens, pos) items.

    Tokens are (kind, value, pos). Whitespace control (``{%-``, ``-%}``, ``{{-``, ``-}}``,
    ``{#-``, ``-#}``) strips all whitespace on that side, line breaks included, as Jinja2.
    ``{{{{`` is a literal ``{{`` (salvo's escape from before this language).
    """
    text = src.text
    n = len(text)
    items: list = []
    lit: list[str] = []
    strip_next = False
    i = 0
    while True:
        j = text.find("{", i)
        while j >= 0 and j + 1 < n and text[j + 1] not in "{%#":
            j = text.find("{", j + 1)
        if j < 0 or j + 1 >= n:
            chunk = text[i:]
            lit.append(chunk.lstrip() if strip_next else chunk)
            break
        chunk = text[i:j]
        if strip_next:
            chunk = chunk.lstrip()
            strip_next = False
        lit.append(chunk)
        if text.startswith("{{{{", j):
            lit.append("{{")
            i = j + 4
            continue
        kind = {"{": "var", "%": "block", "#": "comment"}[text[j + 1]]
        k = j + 2
        if k < n and text[k] == "-":
            lit[:] = ["".join(lit).rstrip()]
            k += 1
        elif k < n and text[k] == "+":
            k += 1
        if lit:
            joined = "".join(lit)
            if joined:
                items.append(("text", joined))
            lit = []
        if kind == "comment":
            end = text.find("#}", k)
            if end < 0:
                raise src.error(j, "unclosed comment '{#'")
            strip_next = end > k and text[end - 1] == "-"
            i = end + 2
            continue
        tokens, i, strip_next = _tokens(src, k, _END[kind], j)
        items.append((kind, tokens, j))
    joined = "".join(lit)
    if joined:
        items.append(("text", joined))
    return items


def _tokens(src: _Source, i: int, end: str, start: int) -> tuple[list, int, bool]:
    """The tokens of one tag from ``i`` up to its end marker; returns (tokens, next, strip)."""
    text = src.text
    n = len(text)
    out: list = []
    while True:
        if i >= n:
            opener = "{{" if end == "}}" else "{%"
            raise src.error(start, f"unclosed {opener!r}: no {end!r}")
        if text.startswith("-" + end, i):
            return out, i + 3, True
        if text.startswith(end, i):
            return out, i + 2, False
        if text[i] in "}%" and end[0] != text[i]:
            other = "}}" if text[i] == "}" else "%}"
            if text.startswith(other, i):
                raise src.error(i, f"{other!r} closes a tag opened with the other kind")
        m = _TOKEN.match(text, i)
        if m is None:
            c = text[i]
            what = _UNSUPPORTED_OPS.get(c)
            if what:
                raise src.error(i, f"{what} ({c!r}) is not supported")
            raise src.error(i, f"unexpected character {c!r}")
        kind = m.lastgroup
        value = m.group()
        if kind == "float" and i > 0 and text[i - 1] == ".":
            # After a dot (items.0.1) a number is an index, as in Jinja2.
            m = _INT_ONLY.match(text, i)
            kind, value = "int", m.group()
        if kind == "string":
            out.append(("string", _unescape(value[1:-1]), i))
        elif kind == "int":
            out.append(("const", int(value.replace("_", "")), i))
        elif kind == "float":
            out.append(("const", float(value.replace("_", "")), i))
        elif kind != "ws":
            out.append((kind, value, i))
        i += len(value)


class _Parser:
    """Recursive descent over one tag's tokens."""

    def __init__(self, src: _Source, tokens: list, pos: int) -> None:
        self.src = src
        self.tokens = tokens
        self.i = 0
        self.end_pos = pos

    def peek(self, offset: int = 0):
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else ("end", None, self._end_pos())

    def _end_pos(self) -> int:
        if self.tokens:
            kind, value, pos = self.tokens[-1]
            return pos + (len(str(value)) if kind != "string" else len(value) + 2)
        return self.end_pos

    def next(self):
        tok = self.peek()
        self.i += 1
        return tok

    def error(self, message: str, tok=None):
        tok = tok or self.peek()
        return self.src.error(tok[2], message)

    def at(self, kind: str, value=None) -> bool:
        tok = self.peek()
        return tok[0] == kind and (value is None or tok[1] == value)

    def expect(self, kind: str, value=None):
        if not self.at(kind, value):
            want = repr(value) if value is not None else kind
            raise self.error(f"expected {want}, found {_show(self.peek())}")
        return self.next()

    def done(self) -> None:
        if self.i < len(self.tokens):
            raise self.error(f"unexpected {_show(self.peek())}")

    # Expressions, loosest first (Jinja2's precedence).

    def expr(self):
        left = self.and_()
        while self.at("name", "or"):
            self.next()
            left = ("or", left, self.and_())
        return left

    def and_(self):
        left = self.not_()
        while self.at("name", "and"):
            self.next()
            left = ("and", left, self.not_())
        return left

    def not_(self):
        if self.at("name", "not"):
            self.next()
            return ("not", self.not_())
        return self.compare()

    def compare(self):
        first = self.unary()
        ops = []
        while True:
            tok = self.peek()
            if tok[0] == "op" and tok[1] in ("==", "!=", "<", "<=", ">", ">="):
                self.next()
                ops.append((tok[1], self.unary()))
            elif tok[0] == "name" and tok[1] == "in":
                self.next()
                ops.append(("in", self.unary()))
            elif tok[0] == "name" and tok[1] == "not" and self.peek(1)[:2] == ("name", "in"):
                self.next()
                self.next()
                ops.append(("notin", self.unary()))
            else:
                break
        return ("compare", first, ops) if ops else first

    def unary(self):
        if self.at("op", "-"):
            tok = self.next()
            operand = self.peek()
            if operand[0] != "const" or isinstance(operand[1], bool) or operand[1] is None:
                raise self.error("'-' is supported before a number only", tok)
            self.next()
            node = ("const", -operand[1])
        else:
            node = self.postfix(self.primary())
        return self.filters(node)

    def primary(self):
        tok = self.next()
        kind, value, _ = tok
        if kind == "name":
            if value in _KEYWORDS:
                return ("const", _KEYWORDS[value])
            if value in _RESERVED:
                raise self.error(f"unexpected {value!r}", tok)
            return ("name", value)
        if kind == "string":
            while self.at("string"):  # adjacent literals concatenate, as in Jinja2
                value += self.next()[1]
            return ("const", value)
        if kind == "const":
            return ("const", value)
        if kind == "op" and value == "(":
            node = self.expr()
            if self.at("op", ","):
                raise self.error("tuples are not supported")
            self.expect("op", ")")
            return node
        if kind == "op" and value == "[":
            items = []
            while not self.at("op", "]"):
                if items:
                    self.expect("op", ",")
                    if self.at("op", "]"):
                        break
                items.append(self.expr())
            self.expect("op", "]")
            return ("list", items)
        raise self.error(f"expected a value, found {_show(tok)}", tok)

    def postfix(self, node):
        while True:
            if self.at("op", "."):
                self.next()
                tok = self.next()
                if tok[0] == "name" or (tok[0] == "const" and type(tok[1]) is int):
                    node = ("item", node, ("const", tok[1]), f"{_label(node)}.{tok[1]}")
                else:
                    raise self.error(f"expected a name after '.', found {_show(tok)}", tok)
            elif self.at("op", "["):
                self.next()
                key = self.expr()
                if self.at("op", ","):
                    raise self.error("tuples are not supported")
                self.expect("op", "]")
                node = ("item", node, key, f"{_label(node)}[{_key_label(key)}]")
            elif self.at("op", "("):
                raise self.error("calls are not supported: no methods or functions")
            else:
                return node

    def filters(self, node):
        while True:
            if self.at("op", "|"):
                self.next()
                tok = self.expect("name")
                name = tok[1]
                if name not in FILTERS:
                    raise self.error(
                        f"unknown filter {name!r} (known: {', '.join(sorted(FILTERS))})", tok
                    )
                args = []
                if self.at("op", "("):
                    self.next()
                    while not self.at("op", ")"):
                        if args:
                            self.expect("op", ",")
                        if self.at("name") and self.peek(1)[:2] == ("op", "="):
                            raise self.error("keyword arguments are not supported")
                        args.append(self.expr())
                    self.expect("op", ")")
                low, high = FILTERS[name]
                if not low <= len(args) <= high:
                    raise self.error(f"filter {name!r} takes {_arity(low, high)}", tok)
                node = ("filter", name, node, args)
            elif self.at("name", "is"):
                self.next()
                negated = False
                if self.at("name", "not"):
                    self.next()
                    negated = True
                tok = self.next()
                if tok[0] == "const" and tok[1] is None:
                    tok = ("name", "none", tok[2])
                if tok[0] != "name" or tok[1] not in TESTS:
                    raise self.error(f"unknown test {_show(tok)} (known: {', '.join(TESTS)})", tok)
                node = ("test", tok[1], node, negated)
            else:
                return node


def _arity(low: int, high: int) -> str:
    if low == high:
        return f"{low} argument{'s' if low != 1 else ''}"
    return f"{low} to {high} arguments"


def _show(tok) -> str:
    kind, value, _ = tok
    if kind == "end":
        return "the end of the tag"
    if kind == "string":
        return f"string {value!r}"
    return repr(value)


def _label(node) -> str:
    if node[0] == "name":
        return node[1]
    if node[0] == "item":
        return node[3]
    return "(...)"


def _key_label(key) -> str:
    if key[0] == "const":
        return repr(key[1])
    return _label(key)


def parse(text: str, field: str = "template") -> list:
    """The syntax tree (a list of statements) of template ``text``; ``field`` names it in
    errors. Raises :class:`TemplateSyntaxError` with the line and column."""
    src = _Source(text, field)
    items = _lex(src)
    body, _, tag = _body(src, items, 0, ())
    if tag is not None:
        raise src.error(tag[2], f"unexpected '{tag[1]}'")
    return body


def _block_name(src: _Source, item) -> tuple[str, _Parser]:
    _, tokens, pos = item
    p = _Parser(src, tokens, pos + 2)
    tok = p.peek()
    if tok[0] != "name":
        raise src.error(pos, "a '{%' tag needs a name: if, elif, else, endif, for, endfor")
    p.next()
    return tok[1], p


def _body(src: _Source, items: list, i: int, ends: tuple[str, ...]):
    """Statements from ``items[i]`` up to a block tag named in ``ends``; returns the body,
    the index after that tag and (parser, name, pos) of it (None at the end of text)."""
    body: list = []
    while i < len(items):
        item = items[i]
        kind = item[0]
        if kind == "text":
            body.append(item)
            i += 1
        elif kind == "var":
            p = _Parser(src, item[1], item[2] + 2)
            if not item[1]:
                raise src.error(item[2], "empty '{{ }}'")
            node = p.expr()
            p.done()
            body.append(("output", node))
            i += 1
        else:
            name, p = _block_name(src, item)
            if name in ends:
                return body, i + 1, (p, name, item[2])
            if name == "if":
                stmt, i = _if(src, items, i + 1, p, item[2])
            elif name == "for":
                stmt, i = _for(src, items, i + 1, p, item[2])
            elif name in ("elif", "else", "endif", "endfor"):
                raise src.error(item[2], f"'{name}' without an open block it belongs to")
            else:
                raise src.error(
                    item[2],
                    f"unknown tag {name!r} (supported: if, elif, else, endif, for, endfor)",
                )
            body.append(stmt)
    return body, i, None


def _if(src: _Source, items: list, i: int, p: _Parser, pos: int):
    test = p.expr()
    p.done()
    branches = []
    else_body = None
    while True:
        body, i, tag = _body(src, items, i, ("elif", "else", "endif"))
        if tag is None:
            raise src.error(pos, "'if' without 'endif'")
        branches.append((test, body))
        tp, name, _ = tag
        if name == "elif":
            test = tp.expr()
            tp.done()
            continue
        tp.done()
        if name == "else":
            else_body, i, tag = _body(src, items, i, ("endif", "elif", "else"))
            if tag is None:
                raise src.error(pos, "'if' without 'endif'")
            if tag[1] != "endif":
                raise src.error(tag[2], f"'{tag[1]}' after 'else'")
            tag[0].done()
        return ("if", branches, else_body), i


def _for(src: _Source, items: list, i: int, p: _Parser, pos: int):
    tok = p.expect("name")
    name = tok[1]
    if name in _RESERVED or name in _KEYWORDS:
        raise p.error(f"{name!r} cannot be a loop variable", tok)
    if p.at("op", ","):
        raise p.error("unpacking several loop variables is not supported")
    p.expect("name", "in")
    iterable = p.expr()
    if p.at("name", "if"):
        raise p.error("'for ... if' filtering is not supported")
    p.done()
    body, i, tag = _body(src, items, i, ("else", "endfor"))
    if tag is None:
        raise src.error(pos, "'for' without 'endfor'")
    tag[0].done()
    else_body = None
    if tag[1] == "else":
        else_body, i, tag = _body(src, items, i, ("endfor", "else"))
        if tag is None:
            raise src.error(pos, "'for' without 'endfor'")
        if tag[1] != "endfor":
            raise src.error(tag[2], "'else' twice in one 'for'")
        tag[0].done()
    return ("for", name, iterable, body, else_body), i
