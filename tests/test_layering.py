"""The dependency direction actors -> core -> ext, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _module_level_imports(path: Path) -> set[str]:
    """Top-level modules imported at module level (not inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).glob("*.py")) + sorted((ROOT / folder).glob("*.pyx"))


@pytest.mark.parametrize("path", _sources("core"), ids=lambda p: p.name)
def test_core_does_no_io_at_import(path):
    for name in _module_level_imports(path):
        assert name.split(".")[0] not in {"trio", "zmq"}, f"{path.name} imports {name}"
        assert not name.startswith("salvo.actors"), f"{path.name} imports {name}"


@pytest.mark.parametrize("path", _sources("ext"), ids=lambda p: p.name)
def test_ext_imports_nothing_of_salvo_but_ext(path):
    tree = ast.parse(path.read_text(encoding="utf-8")) if path.suffix == ".py" else None
    text = path.read_text(encoding="utf-8")
    if tree is None:  # .pyx: check the import lines textually
        lines = [
            ln.strip() for ln in text.splitlines() if ln.strip().startswith(("import ", "from "))
        ]
        bad = [ln for ln in lines if "salvo" in ln and "salvo.ext" not in ln]
    else:
        bad = [
            n.module
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom)
            and n.module
            and n.module.startswith("salvo")
            and not n.module.startswith("salvo.ext")
        ]
    assert not bad, f"{path.name} imports {bad}"
