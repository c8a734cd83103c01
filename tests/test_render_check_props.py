"""Differential test of the render check: ``MessageTemplate.missing`` against ``render``.

Random templates over a small path alphabet (``a``, ``b.c``, ``a.b.c``... in subject,
text, html with and without ``| raw``, a header and the From display name) and random
variable trees (nested dicts, strings, numbers, None, booleans, lists): the check finds
nothing missing exactly when render raises no :class:`MissingVariableError`, and when
render raises one, the check's first name is the one render names.

Render stops at the first error: a value of the wrong type (a dict or a list where text
goes) raises :class:`TemplateError` before a later placeholder is looked up. Such a
placeholder resolved (it has a value), so it is dropped from the template and the
comparison is made on what remains; the check of the full template must say the same.
"""

from __future__ import annotations

import re

from hypothesis import event, given, settings
from hypothesis import strategies as st

from salvo.ext.errors import MissingVariableError, TemplateError
from salvo.ext.mime import MessageTemplate

SEGMENTS = ("a", "b", "c")
TO = "Ann <ann@example.org>"
_WRONG_TYPE = re.compile(r"^variable '([^']+)' in ")

paths = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3).map(".".join)
literals = st.sampled_from(["", "x", " ", "Hi ", "{{{{", "}}", "é"])


@st.composite
def pieces(draw, raw_ok: bool) -> list:
    """A field as literal strings and ``(path, raw, spacing)`` placeholders."""
    out = []
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            out.append(draw(literals))
        else:
            out.append((draw(paths), raw_ok and draw(st.booleans()), draw(st.booleans())))
    return out


def _text(parts: list, drop: frozenset[str]) -> str:
    out = []
    for p in parts:
        if isinstance(p, str):
            out.append(p)
        elif p[0] not in drop:
            path, raw, spaced = p
            body = f"{path} | raw" if raw else path
            out.append(f"{{{{ {body} }}}}" if spaced else f"{{{{{body}}}}}")
    return "".join(out)


def _compile(fields: dict[str, list], drop: frozenset[str] = frozenset()) -> MessageTemplate:
    return MessageTemplate(
        _text(fields["from"], drop) + " <news@acme.example>",
        _text(fields["subject"], drop),
        text=_text(fields["text"], drop),
        html=_text(fields["html"], drop),
        headers={"X-T": _text(fields["header"], drop) or "-"},
    )


scalars = st.one_of(
    st.text(alphabet="xyzAB", max_size=4),
    st.integers(-5, 99),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False, width=16),
    st.lists(st.integers(0, 3), max_size=2),
)
trees = st.recursive(
    scalars,
    lambda inner: st.dictionaries(st.sampled_from(SEGMENTS), inner, max_size=3),
    max_leaves=8,
)
variables = st.dictionaries(st.sampled_from(SEGMENTS), trees, max_size=3)
templates = st.fixed_dictionaries(
    {
        "from": pieces(False),
        "subject": pieces(False),
        "header": pieces(False),
        "text": pieces(False),
        "html": pieces(True),
    }
)


def _resolves(vars_: dict, path: str) -> bool:
    """The rule as docs/templates.md states it: every segment exists, through mappings."""
    value: object = vars_
    for seg in path.split("."):
        if not isinstance(value, dict) or seg not in value:
            return False
        value = value[seg]
    return True


def _render_verdict(fields: dict, vars_: dict) -> tuple[str | None, frozenset[str]]:
    """The name render raises MissingVariableError for (None: it raises none), after
    dropping the placeholders that hold a value of the wrong type (they resolved)."""
    drop: frozenset[str] = frozenset()
    while True:
        try:
            _compile(fields, drop).render(TO, vars_)
        except MissingVariableError as exc:
            return exc.name, drop
        except TemplateError as exc:
            found = _WRONG_TYPE.match(str(exc))
            assert found, exc  # no other error is possible with these values
            assert found.group(1) not in drop
            drop |= {found.group(1)}
        else:
            return None, drop


@st.composite
def near_variables(draw, fields: dict) -> dict:
    """Variables built from the template's own paths, each given, left out, or cut short
    by a non-mapping on the way (``a.b`` with ``a`` a string): mostly renderable."""
    used = sorted({p[0] for parts in fields.values() for p in parts if not isinstance(p, str)})
    tree: dict = {}
    for path in draw(st.permutations(used)):
        segs = path.split(".")
        how = draw(st.sampled_from(["give", "give", "give", "omit", "cut"]))
        if how == "omit":
            continue
        stop = draw(st.integers(1, len(segs))) if how == "cut" else len(segs)
        node = tree
        for seg in segs[: stop - 1]:
            node = node.setdefault(seg, {})
            if not isinstance(node, dict):
                break
        else:
            leaf = draw(st.sampled_from(["v", 7, None, True])) if how == "give" else "s"
            node[segs[stop - 1]] = leaf
    return tree


@settings(max_examples=600, deadline=None)
@given(templates, st.data())
def test_missing_agrees_with_render(fields: dict, data: st.DataObject) -> None:
    vars_ = data.draw(st.one_of(variables, near_variables(fields)))
    template = _compile(fields)
    used = {p[0] for parts in fields.values() for p in parts if not isinstance(p, str)}
    assert template.requires == used
    missing = template.missing(vars_)
    assert len(set(missing)) == len(missing)
    assert set(missing) == {p for p in used if not _resolves(vars_, p)}

    raised, dropped = _render_verdict(fields, vars_)
    assert not dropped & set(missing)  # a value of the wrong type is there: not missing
    if dropped:
        assert _compile(fields, dropped).missing(vars_) == missing
    event("render: wrong type first" if dropped else "render: no wrong type")
    event("render: ok" if raised is None else "render: MissingVariableError")
    if raised is None:
        assert missing == ()
    else:
        assert missing[0] == raised


@given(templates)
def test_with_every_path_given_nothing_is_missing_and_render_succeeds(fields: dict) -> None:
    """Fill every placeholder by building the tree from its paths (a path that is a prefix
    of another cannot hold text: those templates are skipped by giving them a dict)."""
    template = _compile(fields)
    tree: dict = {}
    for path in sorted(template.requires, key=len, reverse=True):
        node = tree
        *heads, last = path.split(".")
        for seg in heads:
            node = node.setdefault(seg, {})
            if not isinstance(node, dict):
                break
        else:
            node.setdefault(last, "v")
    assert template.missing(tree) == ()
    prefixes = {p for p in template.requires for q in template.requires if q.startswith(p + ".")}
    if not prefixes:
        template.render(TO, tree)
