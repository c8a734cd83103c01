"""Differential test: salvo's template language against the jinja2 library, byte for byte.

Hypothesis writes templates from the subset's grammar (text, outputs, filters, if/elif/
else, for/else with ``loop``, comments, whitespace control) and variables (nested maps,
lists, text with HTML specials, numbers, booleans, none, absent names), and each is
rendered by salvo (:mod:`salvo.ext.template_render`) and by jinja2, for text and for
autoescaped html. Either both render the same text, or both fail.

jinja2 is configured as salvo's documented choices (docs/templates.md):
``keep_trailing_newline``; none renders as empty text and a list or map as output is an
error (``finalize``); an undefined value is false, equal to another undefined, taken by
``default`` and chainable (``a.b`` of a missing ``a`` is undefined), and an error when it
would become text, a number or a sequence (:class:`_SalvoUndefined`); ``raw``,
``format_number`` and ``date`` are salvo's own filters, added to jinja2 as they are.
Generated names avoid Python attribute names (jinja2's ``a.b`` tries ``getattr`` first,
salvo looks up items only), as docs/templates.md says.
"""

from __future__ import annotations

import os

import jinja2
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.runtime import LoopContext
from markupsafe import Markup

from salvo.ext.errors import MissingVariableError, TemplateError
from salvo.ext.template_render import compile_field, format_date, format_number

# Generated (template, variables) cases per run, each rendered as text and as html.
CASES = int(os.environ.get("SALVO_JINJA_CASES", "10000"))
VARIABLE_SETS = 2


class _SalvoUndefined(jinja2.ChainableUndefined):
    __slots__ = ()
    _fail = jinja2.Undefined._fail_with_undefined_error
    __str__ = __iter__ = __len__ = __contains__ = __round__ = __index__ = _fail


def _finalize(value):
    if value is None:
        return ""
    if isinstance(value, (list, dict, tuple, LoopContext)):
        raise TypeError(f"{type(value).__name__} is not output")
    return value


def _plain(value):
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    return value


class _RuntimeOutput(CodeGenerator):
    """Outputs of constants rendered at run time, as any other: jinja2 otherwise folds
    them at compile time, escaping before ``finalize`` (``{{ none }}`` gives "None" in
    html only)."""

    def _output_child_to_const(self, node, frame, finalize):
        raise nodes.Impossible()


class _Environment(jinja2.Environment):
    code_generator_class = _RuntimeOutput


def _env(autoescape: bool) -> jinja2.Environment:
    env = _Environment(
        autoescape=autoescape,
        keep_trailing_newline=True,
        undefined=_SalvoUndefined,
        finalize=_finalize,
        cache_size=0,
    )
    env.filters["raw"] = lambda v: Markup(_plain(v))
    env.filters["format_number"] = lambda v: format_number(_plain(v))
    env.filters["date"] = lambda v, f: format_date(_plain(v), _plain(f))
    return env


ENVS = {False: _env(False), True: _env(True)}

# --- generation ------------------------------------------------------------------------
# Hypothesis draws bytes; a tape reads them as choices, and a choice of 0 (what shrinking
# tends to) is always the simplest. One draw per case keeps 10,000 cases cheap to make.


class _Tape:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.i = 0

    def int(self, n: int) -> int:
        """A choice in range(n); 0 once the bytes run out."""
        if self.i >= len(self.data):
            return 0
        self.i += 1
        return self.data[self.i - 1] % n

    def pick(self, options):
        return options[self.int(len(options))]


KEYS = ("a", "b", "c")
TOP = ("a", "b", "c", "n", "s", "lst", "u")  # "u" is never defined
TEXTS = ("x", "", "Ann", "a b", " pad ", "<b>&", "'q'", '"dq"', "é", "10", "2.5", "aa bb cc dd ee")
NUMBERS = (1, 0, -3, 7, 1234567, 2.5, 0.1, -1.25, 1e20)
SCALAR_KINDS = ("text", "number", "true", "false", "none")


def _scalar(t: _Tape):
    kind = t.pick(SCALAR_KINDS)
    if kind == "text":
        return t.pick(TEXTS)
    if kind == "number":
        return t.pick(NUMBERS)
    return {"true": True, "false": False, "none": None}[kind]


def _value(t: _Tape, depth: int = 0):
    kind = t.int(4) if depth < 2 else 0
    if kind <= 1:
        return _scalar(t)
    if kind == 2:
        return [_value(t, depth + 1) for _ in range(t.int(5))]
    return {t.pick(KEYS): _value(t, depth + 1) for _ in range(t.int(4))}


def _variables(t: _Tape) -> dict:
    out = {}
    for name in ("a", "b", "c"):
        if t.int(5):  # mostly defined
            out[name] = _value(t)
    if t.int(4):
        out["n"] = t.pick((3, 0, 12.5, -2, 1000000, "7"))
    if t.int(4):
        out["s"] = t.pick(TEXTS)
    if t.int(4):
        out["lst"] = [_value(t, 1) for _ in range(t.int(6))]
    return out


TEXT = ("x", "", " ", "Hi ", "\n", " \n  ", "<p>", "&", "}", "%}", "#", "é", "a-b", "\t")
LOOP_ATTRS = ("index", "index0", "first", "last", "length", "revindex", "revindex0")
STRINGS = ("x", "", "a b", "<i>", "&", "-", "a")
FILTERS = (
    "upper", "lower", "title", "capitalize", "trim", "escape", "e", "safe", "raw", "length",
    "count", "int", "round", "urlencode", "join", "format_number", "default", "d",
    "truncate", "replace", "join_sep", "default_arg", "round_n", "date",
)  # fmt: skip


def _list(t: _Tape) -> str:
    return "[" + ", ".join(t.pick(("1", "'x'", "a", "none", "'<'")) for _ in range(t.int(4))) + "]"


def _literal(t: _Tape) -> str:
    kind = t.int(4)
    if kind == 0:
        return repr(t.pick(STRINGS))
    if kind == 1:
        return str(t.pick((1, 0, 2, 3, -1, 10, 2.5)))
    if kind == 2:
        return t.pick(("true", "false", "none"))
    return _list(t)


def _path(t: _Tape, loops: tuple[str, ...]) -> str:
    if loops and t.int(4) == 1:
        return "loop." + t.pick(LOOP_ATTRS)
    out = t.pick(TOP + loops)
    for _ in range(t.int(3)):
        key = t.pick(KEYS)
        out += t.pick((f".{key}", f"[{key!r}]", f".{t.int(3)}", f"[{t.int(4) - 1}]"))
    return out


def _filtered(t: _Tape, loops: tuple[str, ...]) -> str:
    kind = t.int(6)
    if kind == 4:
        base = _literal(t)
    elif kind == 5:
        base = _list(t) + "|" + t.pick(("length", "join", "join('&')", "urlencode"))
    else:
        base = _path(t, loops)
    for _ in range(t.int(3)):
        name = t.pick(FILTERS)
        if name == "truncate":
            base += f"|truncate({t.pick((3, 4, 6))})"
        elif name == "replace":
            base += f"|replace({t.pick(STRINGS)!r}, {t.pick(STRINGS)!r})"
        elif name == "join_sep":
            base += f"|join({t.pick((', ', '<', '&'))!r})"
        elif name == "default_arg":
            arg = _literal(t) if t.int(2) else _path(t, loops)
            base += f"|default({arg}{', true' if t.int(2) else ''})"
        elif name == "round_n":
            base += f"|round({t.int(3)})"
        elif name == "date":
            base += "|date('%Y-%m-%d %a %B')"
        else:
            base += "|" + name
    return base


def _expr(t: _Tape, loops: tuple[str, ...], depth: int = 0) -> str:
    kind = t.int(10 if depth < 2 else 5)
    if kind <= 4:
        return _filtered(t, loops)
    if kind == 5:
        op = t.pick(("==", "!=", "<", "<=", ">", ">=", "in", "not in"))
        return f"{_filtered(t, loops)} {op} {_filtered(t, loops)}"
    if kind == 6:
        return f"not {_expr(t, loops, depth + 1)}"
    if kind == 7:
        op = t.pick(("and", "or"))
        return f"({_expr(t, loops, depth + 1)} {op} {_expr(t, loops, depth + 1)})"
    if kind == 8:
        return f"{_path(t, loops)} is {t.pick(('defined', 'undefined', 'none', 'not defined'))}"
    right = _list(t) if t.int(3) == 2 else _path(t, loops)
    return f"{_filtered(t, loops)} in {right}"


def _tag(t: _Tape, body: str) -> str:
    left = "{%-" if t.int(4) == 3 else "{%"
    right = "-%}" if t.int(4) == 3 else "%}"
    return f"{left} {body} {right}"


def _block(t: _Tape, loops: tuple[str, ...] = (), depth: int = 0) -> str:
    out = []
    for _ in range(t.int(6 if depth == 0 else 3)):
        kind = t.int(10 if depth < 2 else 6)
        if kind <= 2:
            out.append(t.pick(TEXT))
        elif kind <= 5:
            left = "{{-" if t.int(5) == 4 else "{{"
            right = "-}}" if t.int(5) == 4 else "}}"
            out.append(f"{left} {_expr(t, loops)} {right}")
        elif kind == 6:
            out.append(t.pick(("{# note #}", "{#- note -#}", "{#- x #}")))
        elif kind <= 8:
            parts = [_tag(t, f"if {_expr(t, loops)}"), _block(t, loops, depth + 1)]
            for _ in range(t.int(2)):
                parts += [_tag(t, f"elif {_expr(t, loops)}"), _block(t, loops, depth + 1)]
            if t.int(2):
                parts += [_tag(t, "else"), _block(t, loops, depth + 1)]
            parts.append(_tag(t, "endif"))
            out.append("".join(parts))
        else:
            var = t.pick(("x", "y", "a"))
            iterable = _literal(t) if t.int(4) == 3 else _path(t, loops)
            parts = [_tag(t, f"for {var} in {iterable}"), _block(t, (*loops, var), depth + 1)]
            if t.int(2):
                parts += [_tag(t, "else"), _block(t, loops, depth + 1)]
            parts.append(_tag(t, "endfor"))
            out.append("".join(parts))
    return "".join(out)


def _salvo(source: str, html: bool, data: dict):
    try:
        program = compile_field(source, "t", html)
    except TemplateError as exc:
        return ("syntax", str(exc))
    try:
        return ("ok", program.render(data))
    except MissingVariableError as exc:
        return ("missing", str(exc))
    except TemplateError as exc:
        return ("error", str(exc))


def _jinja(source: str, html: bool, data: dict):
    env = ENVS[html]
    try:
        template = env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        return ("syntax", str(exc))
    try:
        return ("ok", template.render(data))
    except jinja2.UndefinedError as exc:
        return ("missing", str(exc))
    except Exception as exc:
        return ("error", f"{type(exc).__name__}: {exc}")


def _same(source: str, html: bool, data: dict) -> str:
    ours, theirs = _salvo(source, html, data), _jinja(source, html, data)
    ok_ours, ok_theirs = ours[0] == "ok", theirs[0] == "ok"
    assert ok_ours == ok_theirs, (source, data, ours, theirs)
    if ok_ours:
        assert ours[1].encode() == theirs[1].encode(), (source, data, ours, theirs)
    return f"salvo {ours[0]}, jinja2 {theirs[0]}"


@settings(
    max_examples=CASES // VARIABLE_SETS,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.binary(min_size=8, max_size=300))
def test_same_output_as_jinja2(tape: bytes) -> None:
    """Each example: one template, VARIABLE_SETS variable sets, text and html."""
    t = _Tape(tape)
    source = _block(t)
    for _ in range(VARIABLE_SETS):
        data = _variables(t)
        for html in (False, True):
            event(_same(source, html, data))


@pytest.mark.parametrize(
    "source",
    [
        "{{ a|upper }} {{ a|safe|upper }} {{ a|title }} {{ a|safe|title }}",
        "{{ a|replace('&', '+') }}|{{ a|safe|replace('&', '<') }}|{{ a|replace('<', 'x'|safe) }}",
        "{{ lst|join(', ') }}|{{ lst|join('<') }}|{{ [a|safe, 'x']|join('&') }}",
        "{{ a|truncate(4) }}|{{ 'aa bb cc dd'|truncate(5) }}|{{ 'aa bb cc dd'|safe|truncate(5) }}",
        "{{ a|urlencode }}|{{ lst|urlencode }}|{{ [['k', a]]|urlencode }}",
        "{% for x in lst %}{{ loop.index }}{{ x }}{% if not loop.last %},{% endif %}{% endfor %}",
        "{% for x in lst %}{% for y in lst %}{{ loop.index }}{{ y }}{% endfor %}"
        "{{ loop.index }}{% else %}none{% endfor %}",
        "{{ u|default(a) }}{{ u.b.c|default('z') }}{% if u.b %}no{% elif a %}yes{% endif %}",
        "{{ n|round }} {{ n|int }} {{ '12.7'|int }} {{ n|format_number }} {{ 2.5|round }}",
        "  {%- if a -%}  A  {%- else -%}  B  {%- endif -%}  \n{#- c -#}\n x {{- a -}} y",
        "{{ a == u }} {{ u == u.b }} {{ u in [1, u] }} {{ 'x' in lst }} {{ a not in 'xyz' }}",
        "{{ 0 < n < 100 }} {{ a or 'dflt' }} {{ u and a }}",
    ],
)
@pytest.mark.parametrize("html", [False, True], ids=["text", "html"])
def test_chosen_cases(source: str, html: bool) -> None:
    for data in (
        {"a": "<b>&'\"", "lst": ["x", "<", 1, None, True], "n": 1234.5},
        {"a": "aa bb cc dd ee", "lst": [], "n": 7},
        {"lst": ["a"], "n": -3},
    ):
        _same(source, html, data)
