"""Benchmarks: each prints figures and ratios against a baseline measured in the same run.

``salvo bench`` (``suite.py``, with the alternatives in ``compare.py`` and ``naive.py``
and shared pieces in ``harness.py``) measures a node end to end; ``hotpath``, ``smtp``,
``spool`` and ``spool_crash`` measure one part each, as ``python -m salvo.bench.NAME``.
The sinks and sample campaigns they use live in :mod:`salvo.testing`.
"""
