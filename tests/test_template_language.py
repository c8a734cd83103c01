"""The template language's parser and renderer on their own: what is refused at compile
time (with line and column), the limits, missing values, and MessageTemplate.check.
(Output semantics are compared with jinja2 in tests/test_template_jinja.py.)"""

from __future__ import annotations

import pytest

from salvo.ext.errors import MissingVariableError, TemplateError, TemplateSyntaxError
from salvo.ext.mime import MessageTemplate
from salvo.ext.template_render import compile_field, format_date, format_number

FROM = "Shop <news@shop.example>"


@pytest.mark.parametrize(
    ("source", "line", "column", "words"),
    [
        ("{{ user.name() }}", 1, 13, "calls are not supported"),
        ("a\n{% import 'x' as y %}", 2, 1, "unknown tag 'import'"),
        ("{% macro m() %}{% endmacro %}", 1, 1, "unknown tag 'macro'"),
        ("{% include 'other' %}", 1, 1, "unknown tag 'include'"),
        ("{% set x = 1 %}", 1, 10, "assignment ('=') is not supported"),
        ("{{ a + 1 }}", 1, 6, "arithmetic"),
        ("{{ a ~ b }}", 1, 6, "concatenation"),
        ("x\n\n  {{ a | bold }}", 3, 10, "unknown filter 'bold'"),
        ("{{ a | truncate }}{{ a | replace('x') }}", 1, 26, "takes 2 arguments"),
        ("{% if a %}x", 1, 1, "'if' without 'endif'"),
        ("{% for x in y %}{% endif %}", 1, 17, "'endif' without an open block"),
        ("{% for a, b in c %}{% endfor %}", 1, 9, "unpacking"),
        ("{{ a %}", 1, 6, "closes a tag opened with the other kind"),
        ("{# never closed", 1, 1, "unclosed comment"),
        ("{{ a | default(x=1) }}", 1, 17, "assignment ('=') is not supported"),
        ("{{ a is odd }}", 1, 9, "unknown test"),
    ],
)
def test_syntax_errors_name_line_and_column(source, line, column, words):
    with pytest.raises(TemplateSyntaxError) as info:
        compile_field(source, "html")
    assert words in str(info.value)
    assert (info.value.line, info.value.column) == (line, column), str(info.value)
    assert str(info.value).startswith(f"html: line {line}, column {column}: ")


def test_paths_are_item_lookups_never_attributes():
    p = compile_field("{{ d.items }}|{{ d.keys | default('none') }}|{{ s.upper | default('-') }}")
    assert p.render({"d": {"items": "I"}, "s": "abc"}) == "I|none|-"


def test_loop_variables_shadow_and_come_back():
    p = compile_field("{{ x }}{% for x in xs %}[{{ x }}{{ loop.length }}]{% endfor %}{{ x }}")
    assert p.render({"x": "o", "xs": [1, 2]}) == "o[12][22]o"


def test_missing_values_in_tests_and_default_are_fine_elsewhere_not():
    p = compile_field("{% if vip.code %}{{ vip.code }}{% endif %}{{ name | default('you') }}")
    assert p.render({}) == "you"
    assert p.missing({}) == []
    strict = compile_field("{% for i in order.items %}{{ i.name }}{% endfor %}", "text")
    with pytest.raises(MissingVariableError) as info:
        strict.render({"order": {}})
    assert (info.value.name, info.value.field) == ("order.items", "text")
    assert strict.missing({"order": {"items": [{}, {"name": "x"}, {}]}}) == ["i.name", "i.name"]


def test_loop_and_output_limits():
    p = compile_field("{% for i in xs %}{{ i }}{% endfor %}", "text", max_items=3, max_output=10)
    assert p.render({"xs": [1, 2, 3]}) == "123"
    with pytest.raises(TemplateError, match="a loop over 4 items"):
        p.render({"xs": [1, 2, 3, 4]})
    with pytest.raises(TemplateError, match="output over 10 characters"):
        p.render({"xs": ["abcd", "efgh", "ijkl"]})
    # Nested loops multiply: the output limit stops them early, whatever the items.
    nested = compile_field(
        "{% for a in xs %}{% for b in xs %}{% for c in xs %}{{ c }}{% endfor %}{% endfor %}"
        "{% endfor %}",
        max_items=1000,
        max_output=100_000,
    )
    with pytest.raises(TemplateError, match="output over"):
        nested.render({"xs": ["x" * 10] * 1000})


def test_message_template_check_and_missing():
    tpl = MessageTemplate(
        FROM,
        "Hi {{ first | default('there') }}",
        text="{% for i in items %}{{ i.name }}{% endfor %}{{ code }}",
        html="<p>{{ first }}</p>",
        max_loop_items=2,
    )
    assert tpl.requires == frozenset({"first", "items", "code"})
    assert tpl.check({"first": "A", "items": [{"name": "x"}], "code": 1}) == ((), None)
    assert tpl.missing({"items": [{}]}) == ("i.name", "code", "first")
    names, error = tpl.check({"first": "A", "items": [1, 2, 3], "code": 1})
    assert names == () and "a loop over 3 items (the limit is 2)" in error
    with pytest.raises(TemplateError, match="a loop over 3 items"):
        tpl.render("ann@example.org", {"first": "A", "items": [1, 2, 3], "code": 1})


def test_placeholder_only_fields_check_by_lookups_and_the_output_limit():
    tpl = MessageTemplate(FROM, "s", text="{{ a }}{{ a }}", max_output=2000)
    assert tpl.check({"a": "x"}) == ((), None)
    with pytest.raises(TemplateError, match="output over 2,000 characters"):
        tpl.render("ann@example.org", {"a": "x" * 1001})


def test_salvo_filters():
    assert format_number(1234567) == "1,234,567"
    assert format_number("-1234.5") == "-1,234.5"
    with pytest.raises(TemplateError):
        format_number("12 apples")
    assert format_date(0, "%Y-%m-%d %H:%M %a %b %Z") == "1970-01-01 00:00 Thu Jan UTC"
    assert (
        format_date("2024-02-29T23:59:59-05:30", "%e %B %Y %I%p %z")
        == "29 February 2024 11PM -0530"
    )
    with pytest.raises(TemplateError, match="not an epoch or an RFC 3339 date"):
        format_date("yesterday", "%Y")
    with pytest.raises(TemplateError, match="unknown directive"):
        format_date(0, "%Q")
