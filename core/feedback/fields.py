"""Small helpers shared by the parser's modules: addresses, codes, one-line diagnostics."""

from __future__ import annotations

import re

__all__ = [
    "MAX_DIAGNOSTIC",
    "field_blocks",
    "find_code",
    "find_status",
    "normalize_address",
    "one_line",
]

#: Characters of diagnostic text kept per recipient.
MAX_DIAGNOSTIC = 500

# An address as reports write it: a local part without spaces or brackets, a domain with a
# dot. Encoded words (=?utf-8?B?...?=) are allowed in the local part.
ADDRESS = (
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]{1,128}@"
    r"[A-Za-z0-9](?:[A-Za-z0-9.\-]{0,250}[A-Za-z0-9])?\.[A-Za-z]{2,63}"
)
ADDRESS_RE = re.compile(rf"(?<![A-Za-z0-9!#$%&'*+/=?^_`{{|}}~.\-])({ADDRESS})")
_PLAIN = re.compile(rf"\A{ADDRESS}\Z")
# An address with a quoted local part (RFC 5321), alone or in angle brackets.
_QUOTED = re.compile(
    r'\A<?"([!#-?A-\[\]-~]{1,64})"@([A-Za-z0-9](?:[A-Za-z0-9.\-]{0,250}[A-Za-z0-9])?'
    r"\.[A-Za-z]{2,63})>?\Z"
)
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
_CODE = re.compile(r"(?<![\w.\-/:#=])([245][0-5]\d)(?:[ \-]|\Z)")
_FAILED_STATUS = re.compile(r"(?<![\d.])([45])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
_FAILED_CODE = re.compile(r"(?<![\w.\-/:#=])([45][0-5]\d)(?:[ \-]|\Z)")
_SPACE = re.compile(r"\s+")
_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9\-]{0,60})[ \t]*:[ \t]*(.*)$")


def normalize_address(text: str) -> str:
    """A plausible address from a field value ("rfc822; <Ann@X.ORG>"), "" if none."""
    text = text.strip()
    if ";" in text[:20]:
        text = text.split(";", 1)[1]
    quoted = _QUOTED.match(text.strip())
    if quoted is not None:  # a quoted local part: "ann..x"@x.org, kept as written
        return f'"{quoted[1]}"@{quoted[2].lower()}'
    text = text.strip().strip("<>\"' \t").strip()
    if text.lower().startswith("mailto:"):
        text = text[7:]
    if "@" in text and text.startswith("@") and ":" in text:  # a source route: @a,@b:ann@c
        text = text.rsplit(":", 1)[1]
    if not _PLAIN.match(text):
        match = ADDRESS_RE.search(text)
        if match is None:
            return ""
        text = match[1]
    local, _, domain = text.rpartition("@")
    local = local.strip(".")
    if not local:
        return ""
    return f"{local}@{domain.lower()}"


def find_status(text: str) -> str:
    """The first enhanced status code in a text (``5.1.1``), "" if none."""
    match = _STATUS.search(text)
    if match is not None and match[1] == "2":  # a transcript's "250 2.1.5 Ok" before the failure
        match = _FAILED_STATUS.search(text, match.end()) or match
    return f"{match[1]}.{int(match[2])}.{int(match[3])}" if match else ""


def find_code(text: str) -> int:
    """The first SMTP reply code in a text (550), 0 if none."""
    match = _CODE.search(text)
    if match is not None and match[1][0] == "2":
        match = _FAILED_CODE.search(text, match.end()) or match
    return int(match[1]) if match else 0


def one_line(text: str, limit: int = MAX_DIAGNOSTIC) -> str:
    """Whitespace (CR and LF included) collapsed to single spaces, bounded."""
    text = _SPACE.sub(" ", text[: limit * 4]).strip()
    if not text.isprintable():
        text = "".join(ch for ch in text if ch.isprintable())
    return text[:limit]


def field_blocks(text: str) -> list[list[tuple[str, str]]]:
    """Header-like blocks separated by blank lines: [[(name lower, value), ...], ...].

    Folded lines (beginning with white space) continue the previous field's value.
    """
    blocks: list[list[tuple[str, str]]] = []
    block: list[tuple[str, str]] = []
    for line in text.split("\n"):
        if not line.strip():
            if block:
                blocks.append(block)
                block = []
            continue
        if line[0] in " \t" and block:
            name, value = block[-1]
            block[-1] = (name, f"{value} {line.strip()}")
            continue
        match = _FIELD.match(line)
        if match:
            block.append((match[1].lower(), match[2].strip()))
    if block:
        blocks.append(block)
    return blocks
