"""Declares the Cython extensions of ext/; all metadata lives in pyproject.toml.

``SALVO_EXT=mime python setup.py build_ext --inplace`` rebuilds one extension only.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

EXTENSIONS = [
    Extension("salvo.ext.mime", ["ext/mime.pyx"]),
    Extension("salvo.ext.dkim", ["ext/dkim.pyx"]),
]
only = os.environ.get("SALVO_EXT")
if only:
    EXTENSIONS = [e for e in EXTENSIONS if e.name.rsplit(".", 1)[1] == only]

setup(
    ext_modules=cythonize(
        EXTENSIONS,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    ),
)
