"""Declares the Cython extensions of ext/ and finds the packages; all metadata lives in
pyproject.toml.

The import package ``salvo`` is spread over top-level folders, mapped to import names by
``[tool.setuptools.package-dir]`` in pyproject.toml. Setuptools' own discovery cannot
follow such a mapping, so every package below each mapped folder (a folder with an
``__init__.py``, nested ones included) is found here, and the mapping stays the one list.

``SALVO_EXT=mime python setup.py build_ext --inplace`` rebuilds one extension only.
"""

import os
import tomllib

from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def packages() -> list[str]:
    """Every package of every folder in pyproject.toml's package-dir mapping."""
    with open(os.path.join(HERE, "pyproject.toml"), "rb") as f:
        mapping = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    found = []
    for name, folder in mapping.items():
        found.append(name)
        found += [f"{name}.{sub}" for sub in find_packages(os.path.join(HERE, folder))]
    return sorted(set(found))


EXTENSIONS = [
    Extension("salvo.ext.mime", ["ext/mime.pyx"]),
    Extension("salvo.ext.dkim", ["ext/dkim.pyx"]),
    Extension("salvo.ext.template_render", ["ext/template_render.pyx"]),
]
only = os.environ.get("SALVO_EXT")
if only:
    EXTENSIONS = [e for e in EXTENSIONS if e.name.rsplit(".", 1)[1] == only]

setup(
    packages=packages(),
    ext_modules=cythonize(
        EXTENSIONS,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    ),
)
