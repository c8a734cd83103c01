"""Cython hot path: MIME assembly (:mod:`salvo.ext.mime`) and DKIM (:mod:`salvo.ext.dkim`).

Nothing here imports the rest of salvo.
"""
