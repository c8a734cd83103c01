"""Non-standard bounce formats: recipients and their diagnostics from a report's text.

No rule per MTA: the patterns are the shapes most bounce texts share.

- The text is cut where the returned message begins (a "copy of the message" marker, or
  two header lines in a row at the start of a line).
- A line that *begins* with an address names a recipient (qmail ``<ann@x.org>:``, Postfix
  ``<ann@x.org>: host ... said: 550 ...``, Exim's indented address, Sendmail's
  ``<ann@x.org>... User unknown``, Gmail's and Exchange's address on its own line); the
  diagnostic is the rest of that line and the lines after it, up to the next recipient.
- A transcript's ``RCPT TO:<ann@x.org>`` names one too.
- Failing those, the addresses of the text that are not the sender's, with the text as
  the diagnostic.
"""

from __future__ import annotations

import re

from .fields import ADDRESS, ADDRESS_RE, normalize_address

__all__ = ["cut_returned", "text_recipients"]

_MARKER = re.compile(
    r"^[ \t>]*(?:[-=*_]{2,}[ \t]*)?(?:"
    r"this\s+is\s+a\s+copy\s+of|below\s+(?:this\s+line\s+)?is\s+a\s+copy|"
    r"(?:a\s+)?copy\s+of\s+(?:the\s+|your\s+)?(?:original\s+)?message|"
    r"original\s+message(?:\s+(?:headers?|follows|was|header))?\s*[-:=*]*\s*$|"
    r"the\s+original\s+message\s+(?:headers?\s+)?(?:follows|was\s+attached|is\s+attached)|"
    r"(?:the\s+)?(?:undelivered|returned|original)\s+message\s+(?:follows|headers|was(?!\s+received))|"
    r"message\s+headers\s+follow|headers\s+of\s+(?:the\s+)?(?:original|returned)|"
    r"unsent\s+message\s+below|returned\s+(?:mail|message)\s*:?\s*$|"
    r"(?:start\s+of\s+)?(?:original|returned)\s+message\s*[-=*]*\s*$|"
    r"included\s+is\s+a\s+copy|"
    r"content-type:\s*message/rfc822"
    r")",
    re.M,
)
_HEADER_PAIR = re.compile(
    r"^(?:return-path|received|dkim-signature|message-id|from|date|subject|to|mime-version|"
    r"content-type|x-[a-z0-9-]+|delivered-to|reply-to|authentication-results|arc-[a-z-]+)"
    r":[^\n]*\n(?:[ \t][^\n]*\n)*"
    r"(?:return-path|received|dkim-signature|message-id|from|date|subject|to|mime-version|"
    r"content-type|x-[a-z0-9-]+|delivered-to|reply-to|authentication-results|arc-[a-z-]+):",
    re.M,
)
# The same, for a text that cannot be lower-cased in place (searched as written).
_MARKER_I = re.compile(_MARKER.pattern, re.I | re.M)
_HEADER_PAIR_I = re.compile(_HEADER_PAIR.pattern, re.I | re.M)

# A line that begins with an address (optionally labelled, bracketed, quoted).
_LEADING = re.compile(
    r"^[ \t<>*\-]*(?:[245]\d\d[ \-](?:[245]\.\d{1,3}\.\d{1,3}[ \t]+)?)?"
    r"(?:(?:final-recipient|original-recipient|recipient(?:\s+address)?|x-failed-recipients|"
    r"failed\s+recipient|to|rcpt\s+to|address|e-?mail(?:\s+address)?|destinatario|"
    r"destinataire|empf\S*nger|adresse)\s*[:=]\s*(?:rfc822;\s*)?)?"
    rf"[\"'(\[]?<?(?:mailto:)?({ADDRESS})>?[\"')\]]?"
    r"(.*)$",
    re.I,
)
_CODE_FIRST = re.compile(r"^[ \t<>*\-]*[245]\d\d[ \-]")
_RCPT = re.compile(rf"rcpt\s+to:\s*<?({ADDRESS})>?", re.I)
_MAIL_FROM = re.compile(rf"mail\s+from:\s*<?({ADDRESS})>?", re.I)
_EXPANDED = re.compile(rf"\(expanded\s+from:?\s*<?({ADDRESS})>?\)", re.I)
# A daemon never is the failed recipient (postmaster can be: a bounce's From is excluded).
_NOT_RECIPIENT = re.compile(r"^(?:mailer-daemon|mail-daemon|daemon)@", re.I)
# An address after these is a message id or the sender, not a recipient.
_NOT_BEFORE = re.compile(r"(?:message-id|\bid|\bfrom|\bsender):\s*<?\Z", re.I)
MAX_DIAG_LINES = 12


def cut_returned(text: str) -> str:
    """The text before the returned message (its headers or a "copy follows" marker).

    A header block before any address (a forwarded bounce's quoted headers) is not the
    returned message: the search goes on after it.
    """
    end = len(text)
    low = text.lower()
    marker, header_pair = _MARKER, _HEADER_PAIR  # lower-cased text: no re.I, faster
    if len(low) != end:  # a character whose lower case is longer: positions would move
        low, marker, header_pair = text, _MARKER_I, _HEADER_PAIR_I
    match = marker.search(low)
    if match is not None and match.start() > 0:
        end = match.start()
    pos = 0
    for _ in range(4):
        match = header_pair.search(low, pos, end)
        if match is None:
            break
        if match.start() > 0 and "@" in text[: match.start()]:
            end = match.start()
            break
        pos = match.end()
    return text[:end]


def text_recipients(
    text: str, exclude: set[str], *, loose: bool = True
) -> list[tuple[str, str, str]]:
    """``[(address, alias, diagnostic)]`` named by a bounce's text (already cut).

    ``loose``: failing lines that name a recipient, take any address not excluded.
    """
    lines = text.split("\n")[:2000]
    senders = {a.lower() for a in _MAIL_FROM.findall(text)}
    skip = exclude | senders
    found: list[tuple[int, str, str, str]] = []  # (line, address, alias, rest)
    seen: set[str] = set()
    for i, line in enumerate(lines):
        if "@" not in line:
            continue
        match = _LEADING.match(line)
        address = ""
        rest = ""
        if match is not None:
            address = normalize_address(match[1])
            rest = match[2]
            if _CODE_FIRST.match(line):  # "550 5.1.1 <a@x>: ...": the reply is the diagnostic
                rest = f" {line.strip()}"
        else:
            rcpt = _RCPT.search(line)
            if rcpt is not None:
                address = normalize_address(rcpt[1])
                rest = line[rcpt.end() :]
        if not address or address.lower() in skip or _NOT_RECIPIENT.match(address):
            continue
        if rest[:1] not in ("", " ", "\t", ":", ".", ",", ";", "(", "<", ">", "[", "\r"):
            continue
        key = address.lower()
        alias = ""
        expanded = _EXPANDED.search(rest)
        if expanded is not None:
            alias = normalize_address(expanded[1])
        if key in seen:
            continue
        seen.add(key)
        found.append((i, address, alias, rest))
    if not found:
        return _loose(text, skip) if loose else []
    out = []
    starts = [f[0] for f in found] + [len(lines)]
    for n, (i, address, alias, rest) in enumerate(found):
        stop = min(starts[n + 1], i + 1 + MAX_DIAG_LINES)
        follow = [ln.strip() for ln in lines[i + 1 : stop]]
        diag = " ".join([rest.strip(" :>.-\t"), *[ln for ln in follow if ln]])
        out.append((address, alias, diag))
    return out


def _loose(text: str, skip: set[str]) -> list[tuple[str, str, str]]:
    """Every address of the text that is not the sender's (one diagnostic: the text)."""
    out = []
    seen: set[str] = set()
    for match in ADDRESS_RE.finditer(text):
        address = normalize_address(match[1])
        key = address.lower()
        if not address or key in skip or key in seen or _NOT_RECIPIENT.match(address):
            continue
        before = text[max(0, match.start() - 16) : match.start()]
        if _NOT_BEFORE.search(before):
            continue
        seen.add(key)
        out.append((address, "", text))
        if len(out) >= 20:
            break
    return out
