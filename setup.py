"""Declares the Cython extensions of ext/; all metadata lives in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

EXTENSIONS = [
    Extension("salvo.ext.mime", ["ext/mime.pyx"]),
    Extension("salvo.ext.dkim", ["ext/dkim.pyx"]),
]

setup(
    ext_modules=cythonize(
        EXTENSIONS,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    ),
)
