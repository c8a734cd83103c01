"""DMARC alignment (RFC 7489 3.1) with a simple organizational-domain rule.

The organizational domain is the last two labels of a name, or the last three when the
last two are one of the well-known two-level public suffixes below (``co.uk``,
``com.au``...). This is not the Public Suffix List: a domain under a suffix that is not
listed here (``*.github.io``, ``*.s3.amazonaws.com``) is judged as if the suffix were an
ordinary domain, which only makes relaxed alignment more lenient than a receiver's.
"""

from __future__ import annotations

from .model import normal_name

TWO_LEVEL_SUFFIXES = frozenset(
    {
        *(f"{sld}.uk" for sld in ("co", "org", "ac", "gov", "ltd", "plc", "me", "net", "sch")),
        *(f"{sld}.au" for sld in ("com", "net", "org", "edu", "gov", "asn", "id")),
        *(f"{sld}.nz" for sld in ("co", "org", "net", "ac", "govt", "geek")),
        *(f"{sld}.jp" for sld in ("co", "ne", "or", "ac", "go", "ad", "ed", "gr", "lg")),
        *(f"{sld}.br" for sld in ("com", "net", "org", "gov", "edu")),
        *(f"{sld}.cn" for sld in ("com", "net", "org", "gov", "edu")),
        *(f"{sld}.in" for sld in ("co", "net", "org", "firm", "gen", "ind")),
        *(f"{sld}.za" for sld in ("co", "org", "net", "gov", "web")),
        *(f"{sld}.kr" for sld in ("co", "or", "ne", "go")),
        *(f"{sld}.il" for sld in ("co", "org", "net", "ac")),
        "com.mx", "com.tr", "com.sg", "com.hk", "com.tw", "com.ar", "co.id", "com.my",
        "co.th", "com.ph", "com.ua", "com.pl", "co.at", "com.es", "com.co", "com.pe",
    }
)  # fmt: skip


def organizational_domain(name: str) -> str:
    labels = normal_name(name).split(".")
    keep = 3 if ".".join(labels[-2:]) in TWO_LEVEL_SUFFIXES else 2
    return ".".join(labels[-keep:])


def aligned(a: str, b: str, *, strict: bool = False) -> bool:
    """Whether two domains align: the same name (strict), or the same organizational
    domain (relaxed)."""
    if strict:
        return normal_name(a) == normal_name(b)
    return organizational_domain(a) == organizational_domain(b)
