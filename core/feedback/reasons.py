"""One vocabulary of reasons (sisimai's names) and the classifier every part shares.

``classify(code, status, text)`` maps an SMTP reply code, an enhanced status code and the
remote server's text to ``(reason, hard)``. The parser calls it for every recipient of a
non-delivery report and the delivery engine for synchronous replies, so a ``550 5.1.1`` at
RCPT and a later DSN for the same address land in the same reason.

The order follows sisimai's: an enhanced status code that names a specific reason decides
(``5.2.2`` mailboxfull, ``5.3.4`` mesgtoobig, ...); a code that is vague or often misused
(``5.1.1`` is also sent for disabled mailboxes, ``5.7.1`` for everything) is checked
against the text first, and decides only when no text pattern matches. Hard bounces are
the reasons that say the address itself is bad: ``userunknown``, ``hostunknown``,
``hasmoved``, and a permanent ``notaccept`` (null MX).
"""

from __future__ import annotations

import re

try:  # private modules of re, read only to derive the prefilters below
    import re._constants as _sre
    import re._parser as _parser
except ImportError:  # a Python without them: no prefilter, the same results, slower
    _sre = _parser = None

__all__ = [
    "BOUNCE_REASONS",
    "HARD_REASONS",
    "REASONS",
    "classify",
    "is_hard",
    "reason_from_status",
    "reason_from_text",
    "smtp_command",
    "with_command",
]

#: Every reason name, sisimai's vocabulary.
REASONS = frozenset(
    {
        "authfailure",
        "badreputation",
        "blocked",
        "contenterror",
        "delivered",
        "exceedlimit",
        "expired",
        "feedback",
        "filtered",
        "hasmoved",
        "hostunknown",
        "mailboxfull",
        "mailererror",
        "mesgtoobig",
        "networkerror",
        "norelaying",
        "notaccept",
        "notcompliantrfc",
        "onhold",
        "policyviolation",
        "ratelimited",
        "rejected",
        "requireptr",
        "securityerror",
        "spamdetected",
        "speeding",
        "suspend",
        "syntaxerror",
        "systemerror",
        "systemfull",
        "toomanyconn",
        "undefined",
        "userunknown",
        "vacation",
        "virusdetected",
    }
)

#: Reasons that are not about a delivery failure.
NOT_BOUNCE = frozenset({"feedback", "vacation", "delivered"})
BOUNCE_REASONS = REASONS - NOT_BOUNCE

#: The address itself is bad (notaccept only when permanent: see is_hard).
HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved"})

# Reasons a status code names only vaguely: the text is checked first (sisimai's "retry").
_VAGUE = frozenset(
    {
        "undefined",
        "onhold",
        "systemerror",
        "securityerror",
        "expired",
        "suspend",
        "networkerror",
        "hostunknown",
        "userunknown",
    }
)

# Enhanced status code (class stripped: "1.1" for 5.1.1 and 4.1.1) -> reason.
_STATUS = {
    "0.0": "",
    "1.0": "",
    "1.1": "userunknown",
    "1.2": "hostunknown",
    "1.3": "userunknown",
    "1.4": "userunknown",
    "1.5": "",
    "1.6": "hasmoved",
    "1.7": "rejected",
    "1.8": "rejected",
    "1.9": "systemerror",
    "1.10": "",
    "2.0": "",
    "2.1": "suspend",
    "2.2": "mailboxfull",
    "2.3": "exceedlimit",
    "2.4": "systemerror",
    "3.0": "systemerror",
    "3.1": "systemfull",
    "3.2": "notaccept",
    "3.3": "systemerror",
    "3.4": "mesgtoobig",
    "3.5": "systemerror",
    "4.0": "networkerror",
    "4.1": "expired",  # no answer from host: what a sender sees when it gives up
    "4.2": "expired",
    "4.3": "systemerror",
    "4.4": "hostunknown",
    "4.5": "networkerror",
    "4.6": "networkerror",
    "4.7": "expired",
    "5.0": "",
    "5.1": "syntaxerror",
    "5.2": "syntaxerror",
    "5.3": "exceedlimit",
    "5.4": "syntaxerror",
    "5.5": "syntaxerror",
    "5.6": "syntaxerror",
    "6.0": "contenterror",
    "6.1": "contenterror",
    "6.2": "contenterror",
    "6.3": "contenterror",
    "6.4": "contenterror",
    "6.5": "contenterror",
    "6.6": "contenterror",
    "6.7": "contenterror",
    "6.8": "contenterror",
    "6.9": "contenterror",
    "6.10": "contenterror",
    "7.0": "",
    "7.1": "",
    "7.2": "",
    "7.3": "",
    "7.4": "securityerror",
    "7.5": "securityerror",
    "7.6": "securityerror",
    "7.7": "securityerror",
    "7.8": "securityerror",
    "7.9": "securityerror",
    "7.10": "securityerror",
    "7.11": "securityerror",
    "7.12": "securityerror",
    "7.13": "suspend",
    "7.14": "securityerror",
    "7.15": "securityerror",
    "7.16": "mesgtoobig",
    "7.17": "suspend",
    "7.18": "suspend",
    "7.19": "suspend",
    "7.20": "authfailure",
    "7.21": "authfailure",
    "7.22": "authfailure",
    "7.23": "authfailure",
    "7.24": "authfailure",
    "7.25": "requireptr",
    "7.26": "authfailure",
    "7.27": "notaccept",
    "7.28": "spamdetected",
    "7.29": "authfailure",
    "7.30": "authfailure",
}

# Text patterns per reason, in the order they are tried (the most specific first). Each is
# searched in the lower-cased text.
_TEXT: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        # A mailing list refusing the sender (Google Groups' notice, in every language,
        # links its help centre): the sender is refused, not the address.
        "rejected",
        (
            r"groups\.google\.com/support",
            r"(?:not\s+have|without)\s+permission\s+to\s+post",
            # qmail: the sender refused at MAIL, whatever the remote text says after it.
            r"but\s+sender\s+was\s+rejected",
            r"address\s+that\s+has\s+been\s+blacklisted",
        ),
    ),
    (
        # Phrases that name the reason outright, before the weaker words of other
        # reasons (an "access denied" or a "spam" further on) are tried.
        "blocked",
        (
            r"but\s+my\s+name\s+was\s+rejected",  # qmail: HELO refused
            r"client\s+host\s+(?:\S+\s+)?blocked",
            r"banned\s+sending\s+ip",
            r"messages\s+from\s+\S+\s+weren'?t\s+sent",  # Outlook.com's IP block
            r"invalid\s+ip\s+for\s+sending",
        ),
    ),
    (
        # "550 : User unknown" (the address left out): a receiving filter's refusal
        # (au/KDDI's domain filter), not the mailbox's absence.
        "filtered",
        (r"\b[45]\d\d:?\s+:\s+user\s+unknown",),
    ),
    (
        "policyviolation",
        (
            r"rejected\s+for\s+policy\s+reasons",
            r"content\s+presents\s+a\s+potential",  # Gmail: "... security issue"
        ),
    ),
    (
        "notaccept",
        (
            r"(?:null|nul)\s+mx",
            r"doesn'?t\s+receive\s+e-?mail",
            r"no\s+mx\s+(?:record\s+)?found",
            r"couldn'?t\s+find\s+a\s+mail\s+exchanger",
            r"indicated\s+no\s+smtp\s+service",
        ),
    ),
    (
        # "553 example.com does not exist": a domain, not a mailbox (no "@" before it).
        "hostunknown",
        (r"(?<![@\w.\-])[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.[a-z]{2,}\s+does\s+not\s+exist",),
    ),
    (
        "requireptr",
        (
            r"ip\s+name\s+lookup\s+failed",
            r"fix\s+reverse\s+dns",
            r"mismatches\s+client\s+ip",
            r"dns\s+ptr",
        ),
    ),
    (
        "networkerror",
        (
            r"host\s+not\s+found,\s+try\s+again",  # Postfix: a resolver failure, retried
            # The cause, before a queue's "gave up" wording after it (qmail, Sendmail, O365):
            r"wasn'?t\s+able\s+to\s+establish\s+an\s+smtp\s+connection",
            r"host\s+name\s+lookup\s+failure",
            r"dns\s+query\s+failed",
        ),
    ),
    (
        "expired",
        (
            r"all\s+hosts\s+have\s+been\s+failing\s+for\s+a\s+long\s+time",
            r"will\s+be\s+retried\s+for",
            r"did\s+not\s+accept\s+our\s+requests\s+to\s+connect",
            r"envelope\s+expired",
            r"message\s+expired,\s+connection",
            r"could\s+not\s+find\s+a\s+gateway",
            r"host\s+not\s+reachable",
            r"failed\s+\d+\s+attempts",
        ),
    ),
    (
        "mailboxfull",
        (
            r"mail(?:box|\s?folder)\s*(?:is\s+|was\s+)?(?:full|over\s*quota|exceed)",
            r"over\s*(?:the\s+)?(?:disk\s+|mailbox\s+|storage\s+)?(?:quota|limit)",
            r"quota\s*(?:exceeded|violation|full|limit)",
            r"exceeded?\s+(?:the\s+|his/her\s+|their\s+|storage\s+|mailbox\s+)*(?:quota|storage|storage\s+allocation)",
            r"(?:disk|storage|mailbox)\s+quota",
            r"(?:user|recipient|account)(?:'s)?\s+(?:mailbox|storage|account)?\s*(?:is\s+)?(?:full|over\s*quota)",
            r"insufficient\s+(?:disk\s+)?space",
            r"not\s+enough\s+(?:disk\s+)?(?:space|storage)",
            r"too\s+much\s+mail\s+data",
            r"mailbox\s+size\s+limit",
            r"exceeds?\s+(?:the\s+)?(?:maximum\s+)?(?:mailbox|storage)\s+(?:size|quota)",
            r"full\s+mailbox",
            r"does\s+not\s+have\s+enough\s+space",
            r"inbox\s+is\s+full",
            r"mailbox\s+full",
            r"maildir\s+over\s+quota",
            r"account\s+is\s+full",
            r"exceeds\s+size\s+limit",
            r"the\s+user\s+you\s+are\s+trying\s+to\s+reach\s+is\s+over\s+quota",
        ),
    ),
    (
        "mesgtoobig",
        (
            r"message\s+(?:is\s+|was\s+)?too\s+(?:big|large|long)",
            r"message\s+(?:size|length)\s+(?:exceeds|is\s+over|too\s+large|limit)",
            r"exceeds?\s+(?:the\s+)?(?:maximum\s+|fixed\s+)?(?:allowed\s+)?message\s+size",
            r"size\s+(?:of\s+the\s+message\s+)?exceeds",
            r"message\s+exceeds\s+(?:the\s+)?(?:maximum|max)",
            r"mail\s+size\s+limit",
            r"size\s+limit\s+exceeded",
            r"exceeded\s+(?:the\s+)?max(?:imum)?\s+(?:message\s+)?size",
            r"too\s+big\s+for\s+the\s+system",
            r"message\s+too\s+big",
            r"line\s+limit\s+exceeded",
        ),
    ),
    (
        "exceedlimit",
        (
            r"message\s+header\s+size\s+exceeds",
            r"exceeded?\s+(?:the\s+)?(?:maximum\s+)?(?:line\s+length|recipient\s+limit|message\s+limit)",
            r"too\s+many\s+mime\s+parts",
        ),
    ),
    (
        "suspend",
        (
            r"(?:mailbox|account|user|recipient|address)\s+(?:has\s+been\s+|is\s+|was\s+)?(?:temporarily\s+)?(?:disabled|suspended|deactivated|inactive|frozen|blocked\s+by\s+the\s+administrator|locked)",
            r"(?:disabled|suspended|inactive|deactivated|expired)\s+(?:mail\s*box|account|recipient|user)",
            r"account\s+(?:has\s+been\s+)?(?:closed|terminated)",
            r"mailbox\s+(?:is\s+)?(?:currently\s+)?unavailable\s+or\s+disabled",
            r"this\s+account\s+has\s+been\s+temporarily\s+suspended",
            r"recipient\s+(?:is\s+)?(?:currently\s+)?(?:suspended|inactive)",
            r"boite\s+du\s+destinataire\s+archivee",
            r"email\s+account\s+that\s+you\s+tried\s+to\s+reach\s+is\s+disabled",
            r"user\s+suspended",
            r"not\s+an\s+active\s+(?:address|account|mailbox)",
            r"mailbox\s+unavailable\s+\(inactive\)",
            r"recipient(?:'s)?\s+account\s+is\s+blocked",
            r"temporar(?:y|ily)\s+locked",
        ),
    ),
    (
        "hasmoved",
        (
            r"address\s+(?:has\s+)?(?:been\s+)?(?:changed|moved)",
            r"has\s+moved\s+to",
            r"\b551\b.*\btry\b",
        ),
    ),
    (
        "norelaying",
        (
            r"relay(?:ing)?\s+(?:access\s+)?(?:denied|not\s+(?:permitted|allowed|authorized|allowed))",
            r"(?:not|no)\s+(?:permitted|allowed)\s+to\s+relay",
            r"we\s+do\s+not\s+relay",
            r"unable\s+to\s+relay",
            r"relaying\s+(?:mail\s+)?(?:to\s+\S+\s+)?(?:is\s+)?(?:denied|prohibited|not\s+allowed)",
            r"that\s+domain\s+isn'?t\s+in\s+my\s+list\s+of\s+allowed\s+rcpthosts",
            r"no\s+relaying",
            r"relay\s+not\s+permitted",
            r"sorry,\s+that\s+domain\s+isn'?t\s+in",
            r"insecure\s+mail\s+relay",
            r"not\s+configured\s+to\s+relay",
            r"email\s+address\s+is\s+not\s+verified",  # Amazon SES: an unverified sender
        ),
    ),
    (
        "authfailure",
        (
            r"\bspf\b.*\b(?:fail|failure|check\s+failed|violation)",
            r"\b(?:fail(?:ed)?|failure)\b[^.]*\bspf\b",
            r"\bdmarc\b",
            r"\bdkim\b.*\b(?:fail|invalid|required|missing)",
            r"sender\s+policy\s+framework",
            r"authentication\s+(?:failed|failure)\s+for\s+(?:the\s+)?(?:sender|domain)",
            r"is\s+not\s+(?:allowed|authorized|permitted)\s+to\s+send\s+(?:mail\s+)?(?:on\s+behalf|from)",
            r"not\s+designated\s+as\s+a\s+permitted\s+sender",
            r"unauthenticated\s+email\s+(?:from\s+\S+\s+)?is\s+not\s+accepted",
            r"email\s+(?:is\s+)?not\s+(?:properly\s+)?authenticated",
            r"\bbad\s+spf\b",
            r"does\s+not\s+have\s+authentication\s+information",
        ),
    ),
    (
        "userunknown",
        (
            r"(?:user|recipient|mailbox|account|address|addressee|local\s+part|alias|destination\s+address|e-?mail\s+address)\s*(?:is\s+|was\s+)?(?:unknown|not\s+(?:found|known|exist|exists|existent|listed|available|valid)|does\s*n[o']t\s+exist|doesn'?t\s+exist|unavailable\s+\(?nonexistent|invalid|non-?existent|rejected:\s+user\s+unknown)",
            r"unknown\s+(?:user|recipient|mailbox|local[\s-]?part|address|alias|account|e-?mail\s+address)",
            r"no\s+(?:such|valid)\s+(?:user|recipient|mailbox|account|address|person|local\s+user|e-?mail)",
            r"(?:invalid|bad|non-?existent|nonexisting)\s+(?:e-?mail\s+)?(?:recipient|user|mailbox|address|destination\s+address|account)",
            r"(?:recipient|user|mailbox|address|account)\s+(?:\S+\s+)?(?:does\s*n[o']t|does\s+not|did\s+not)\s+exist",
            r"does\s+not\s+(?:have\s+an\s+account|exist\s+here)",
            r"not\s+(?:a\s+)?(?:known|valid)\s+(?:user|recipient|mailbox)",
            r"(?:user|recipient|mailbox)\s+(?:name\s+)?(?:is\s+)?not\s+(?:recognized|local|in\s+the\s+directory)",
            r"address\s+(?:rejected(?!:)|not\s+(?:found|valid|recognized))",
            r"recipient\s+(?:address\s+)?rejected:\s+(?:user\s+unknown|undeliverable|access\s+denied|invalid)",
            r"mailbox\s+(?:unavailable|not\s+available)",
            r"said:\s+550[- ]5\.1\.1",
            r"unknown\s+or\s+illegal\s+alias",
            r"user\s+(?:doesn'?t|does\s+not)\s+have\s+a\s+\S+\s+account",
            r"no\s+mailbox\s+(?:here\s+)?by\s+that\s+name",
            r"this\s+user\s+doesn'?t\s+have\s+a",
            r"(?:email\s+)?account\s+(?:that\s+)?you\s+tried\s+to\s+reach\s+does\s+not\s+exist",
            r"the\s+email\s+address\s+you\s+entered\s+couldn'?t\s+be\s+found",
            r"sorry,\s+no\s+mailbox\s+here",
            r"user\s+unknown",
            r"unknown\s+address",
            r"no\s+such\s+(?:user|mailbox|address)",
            r"\buser\s+not\s+found",
            r"recipient\s+not\s+found",
            r"undeliverable\s+address",
            r"mailbox\s+does\s+not\s+exist",
            r"is\s+not\s+a\s+valid\s+mailbox",
            r"said:\s+550\s+no\s+such",
            r"destination\s+(?:address|mailbox)\s+(?:unknown|not\s+found)",
            r"no\s+account\s+by\s+that\s+name",
            r"\bunknown\s+user\b",
            r"\bmailbox\s+not\s+found\b",
            r"not\s+listed\s+in\s+(?:domino\s+)?directory",
            # "... not found in the Domino Directory", Domino's Japanese
            r"domino\s+\u30c7\u30a3\u30ec\u30af\u30c8\u30ea"
            r"\u306b\u306f\u898b\u3064\u304b\u308a\u307e\u305b\u3093",
            r"recipient\s+no\s+longer\s+(?:on\s+server|available)",
            r"is\s+not\s+a\s+known\s+user",
            r"requested\s+action\s+not\s+taken:\s+mailbox\s+unavailable",
            r"not\s+our\s+customer",
            r"unknown\s+local\s+part",
            r"invalid\s+(?:\S+\s+){0,3}userid",
            r"and\s+other\s+recipients\s+in\s+the\s+same\s+domain\)",  # InterScan MSS
            r"\b[45]\d\d\s+<?[^\s@<>]+@[^\s@<>]+>?\s+rejected\s*$",
            r"please\s+check\s+if\s+(?:the\s+)?address\s+is\s+correct",
        ),
    ),
    (
        "filtered",
        (
            r"due\s+to\s+extended\s+inactivity\s+new\s+mail\s+is\s+not\s+currently\s+being\s+accepted",
            r"rejected\s+by\s+(?:the\s+)?(?:recipient|user)(?:'s)?\s+(?:filter|rule)",
            r"(?:user|recipient)\s+(?:has\s+)?(?:refused|rejected|declined|blocked)",
            r"header\s+(?:error|check|rejected)",
            r"delivery\s+not\s+authorized,\s+message\s+refused",
            r"does\s+not\s+accept\s+mail\s+from\s+(?:you|this\s+sender)",
            r"refused\s+to\s+accept",
            r"message\s+(?:was\s+)?filtered",
            r"\bfiltered\b",
            r"user\s+reject",
            r"mail\s+from\s+\S+\s+(?:is\s+)?(?:rejected|refused)\s+by\s+(?:the\s+)?recipient",
            r"the\s+recipient\s+has\s+chosen\s+not\s+to\s+receive",
            r"has\s+restricted\s+sms\s+e-?mail",
            r"permission\s+denied",
            r"the\s+message\s+was\s+rejected\s+by\s+(?:the\s+)?(?:organization|recipient)",
            r"blocked\s+by\s+(?:the\s+)?(?:recipient|user)",
            r"you\s+are\s+not\s+allowed\s+to\s+post",
            r"message\s+rejected\s+due\s+to\s+(?:user|recipient)\s+rules",
            r"refused\s+due\s+to\s+recipient\s+preferences",
        ),
    ),
    (
        "requireptr",
        (
            r"(?:no|missing|invalid|bad|mismatch\w*|lookup\s+failed\s+for)\s+(?:a\s+)?(?:valid\s+)?(?:ptr|rdns|reverse\s+dns|reverse\s+lookup)",
            r"(?:ptr|rdns|reverse\s+dns|reverse\s+lookup|reverse\s+(?:dns\s+)?hostname)\s+(?:record\s+)?(?:is\s+)?(?:required|missing|not\s+found|failed|does\s+not\s+match|lookup\s+fail)",
            r"cannot\s+find\s+your\s+(?:reverse\s+)?hostname",
            r"client\s+host\s+rejected:\s+cannot\s+find\s+your\s+(?:reverse\s+)?hostname",
            r"(?:ip|host)\s+(?:name\s+)?(?:address\s+)?(?:has\s+)?no\s+(?:ptr|reverse|dns\s+name)",
            r"reverse\s+dns\s+(?:resolution|lookup)",
            r"ptr\s+record",
            r"no\s+reverse\s+dns",
            r"unresolvable\s+(?:relay\s+)?host\s+name",
            r"hostname\s+(?:does\s+not\s+match|doesn'?t\s+match)\s+(?:your\s+)?ip",
            r"ip\s+name\s+lookup\s+failed",
            r"not\s+a\s+valid\s+hostname",
        ),
    ),
    (
        "notcompliantrfc",
        (
            r"rfc\s*(?:2)?822\s+specification",
            r"not\s+(?:rfc|rfc-?5322|rfc-?2822)\s*-?\s*compliant",
            r"multiple\s+(?:addresses\s+in\s+)?(?:from|to|subject|date|message-id)\s*:?\s+header",
            r"duplicate\s+(?:from|to|subject|date|message-id)\s+header",
            r"this\s+message\s+is\s+not\s+rfc\s*5322\s+compliant",
            r"message\s+contains\s+(?:invalid|bare)\s+",
            r"there\s+are\s+multiple\s+",
            r"messages\s+with\s+multiple\s+(?:\S+\s+){0,3}?addresses",
            r"rfc\s*5322",
        ),
    ),
    (
        "badreputation",
        (
            r"\b(?:ip|domain|sender)\s+(?:has\s+)?(?:a\s+)?(?:poor|low|bad)\s+reputation",
            r"(?:poor|low|bad)\s+(?:ip\s+|sender\s+|domain\s+)?reputation",
            r"has\s+been\s+temporarily\s+rate\s+limited\s+due\s+to\s+ip\s+reputation",
            r"unusual\s+rate\s+of\s+unsolicited\s+mail",
            # Yahoo's TSS04: deferred for the volume or the complaints an IP draws
            r"deferred\s+due\s+to\s+unexpected\s+volume\s+or\s+user\s+complaints",
            r"reputation",
        ),
    ),
    (
        "contenterror",
        (
            r"improper\s+use\s+of\s+8-bit\s+data",
            r"duplicate\s+header",
            r"message\s+header\s+(?:is\s+)?(?:invalid|malformed)",
            r"(?:invalid|illegal|malformed|bad)\s+(?:mime|header|message\s+content|content)",
            r"mime\s+(?:error|conversion)",
            r"attachment\s+(?:type\s+)?not\s+allowed",
            r"(?:we\s+do\s+not|does\s+not)\s+accept\s+(?:this\s+type\s+of\s+)?attachment",
            r"message\s+contains\s+(?:a\s+)?(?:forbidden|prohibited|unacceptable)",
            r"message\s+(?:had|has)\s+(?:an\s+)?(?:invalid|illegal|unacceptable)\s+",
            r"line\s+too\s+long",
        ),
    ),
    (
        "rejected",
        (
            r"(?:sender|mail\s+from|envelope\s+sender|from\s+address|return\s+path)\s+(?:address\s+)?(?:is\s+)?(?:rejected|denied|refused|not\s+allowed|blocked|blacklisted|invalid|unknown)",
            r"(?:sender|from)\s+(?:address\s+)?(?:verification|verify)\s+(?:failed|failure)",
            r"sender\s+(?:address\s+)?rejected",
            r"(?:domain|address)\s+of\s+sender\s+(?:address\s+)?(?:\S+\s+)?does\s+not\s+exist",
            r"sender\s+domain\s+(?:must\s+exist|not\s+found|does\s+not\s+exist|is\s+(?:empty|invalid|not\s+resolvable))",
            r"(?:invalid|bad|unknown|illegal|unresolvable)\s+(?:sender|mail\s+from|envelope\s+from)",
            r"(?:email|mail)\s+(?:address\s+)?(?:is\s+)?(?:blacklisted|not\s+accepted\s+from\s+this\s+sender)",
            r"your\s+(?:domain|email\s+address|sender\s+address)\s+(?:has\s+been\s+|is\s+)?(?:blacklisted|blocked|banned|not\s+allowed)",
            r"we\s+do\s+not\s+accept\s+mail\s+from",
            r"domain\s+(?:of\s+sender\s+)?(?:\S+\s+)?(?:has\s+been\s+)?(?:blacklisted|banned)",
            r"mail\s+from\s+.+\s+(?:rejected|refused)",
            r"sender\s+is\s+(?:on\s+)?(?:a\s+)?(?:black|block)\s*list",
            r"null\s+sender\s+is\s+not\s+allowed",
            r"empty\s+envelope\s+senders?\s+not\s+allowed",
            r"bad\s+sender'?s?\s+(?:mailbox|system)",
            r"sender\s+(?:has\s+been\s+)?blocked",
            r"reject(?:ed)?\s+(?:for\s+)?(?:the\s+)?sender",
            r"not\s+accepting\s+mail\s+from\s+this\s+(?:sender|address)",
            r"sender\s+address\s+rejected",
            r"\bsender\s+denied\b",
            r"purported\s+responsible\s+address",
            r"from:\s+domain\s+is\s+invalid",
        ),
    ),
    (
        "hostunknown",
        (
            r"(?:host|domain|hostname)\s+(?:name\s+)?(?:is\s+)?(?:unknown|not\s+found|lookup\s+failed|does\s+not\s+exist|not\s+known|name\s+not\s+found)",
            r"(?:unknown|unrouteable|unroutable|invalid|non-?existent|no\s+such)\s+(?:host|domain|mail\s+domain)",
            r"name\s+or\s+service\s+not\s+known",
            r"no\s+(?:mx|mail\s+exchanger)\s+(?:or\s+a\s+)?(?:record|host)s?",
            r"mail\s+domain\s+\S+\s+(?:has\s+)?no\s+mx",
            r"domain\s+(?:is\s+)?(?:not\s+(?:exist|resolv|registered|reachable|available)|does\s+not\s+resolve)",
            r"recipient\s+(?:address\s+)?(?:domain|host)\s+(?:rejected|not\s+found|unknown)",
            r"domain\s+not\s+found",
            r"host\s+not\s+found",
            r"unrouteable\s+(?:mail\s+)?domain",
            r"all\s+relevant\s+mx\s+records\s+point\s+to\s+non-existent\s+hosts",
            r"could\s+not\s+be\s+resolved",
            r"nxdomain",
            r"unknown\s+mail\s+transport\s+error",
            r"host\s+or\s+domain\s+name\s+not\s+found",
            r"(?:unknown|invalid)\s+domain",
            r"domain\s+(?:\S+\s+)?(?:is\s+)?not\s+(?:hosted|served|handled|local)",
            r"not\s+our\s+domain",
            r"illegal\s+host/domain\s+name\s+found",
            r"unrout(?:e)?able\s+address",  # Exim: no route to the domain
            r"host\s+\S+\s+not\s+found",
        ),
    ),
    (
        "spamdetected",
        (
            r"\bspam\b",
            r"unsolicited\s+(?:bulk\s+|commercial\s+)?(?:e-?mail|message)",
            r"junk\s+mail",
            r"(?:message|content)\s+(?:was\s+)?(?:identified|detected|classified|considered|marked|scored)\s+as\s+(?:junk|bulk|spam)",
            r"bulk\s+mail",
            r"high\s+probability\s+of\s+(?:spam|being)",
            r"suspicious\s+(?:url|content|message)",
            r"(?:url|content|message)\s+(?:is\s+)?(?:blacklisted|listed\s+in\s+surbl)",
            r"scored\s+too\s+high",
            r"surbl|uribl",
            r"\bofr_?506\b",  # Orange's code for a message refused as spam ("Mail rejete")
            r"message\s+content\s+rejected",
            r"\bube\b",
            r"content\s+filter",
            r"dynamic\s+content\s+rejected",
            r"rejected\s+as\s+(?:it\s+)?(?:looks|appears)\s+like",
            r"message\s+looks\s+suspicious",
        ),
    ),
    (
        "virusdetected",
        (
            r"\bvirus",
            r"malware",
            r"infected\s+with",
            r"contains?\s+(?:a\s+)?(?:virus|malicious|trojan|worm)",
            r"dangerous\s+(?:attachment|content)",
        ),
    ),
    (
        "speeding",
        (
            r"(?<!connection\s)rate\s+limit",
            r"(?:too\s+many|too\s+much)\s+(?:mail|messages|emails)\s+(?:from|in|per)",
            r"sending\s+(?:too\s+fast|rate)",
            r"please\s+slow\s+down",
            r"sent\s+to\s+too\s+many\s+recipients",
            r"receiving\s+mail\s+at\s+a\s+rate",
            r"throttl",
            r"exceeded\s+(?:the\s+)?(?:sending|message)\s+(?:rate|quota)",
        ),
    ),
    (
        "toomanyconn",
        (
            r"too\s+many\s+(?:connections|concurrent|simultaneous|sessions|recipients|smtp\s+sessions|errors)",
            r"(?:connection|session)\s+(?:limit|count)\s+(?:exceeded|reached)",
            r"exceeded\s+(?:the\s+)?(?:maximum\s+)?(?:number\s+of\s+)?(?:connections|recipients)",
            r"no\s+more\s+(?:connections|recipients)",
            r"max\s+(?:connections|recipients)",
            r"frequency\s+limited",
            r"connection\s+rate\s+limit",
        ),
    ),
    (
        "policyviolation",
        (
            r"policy\s+(?:violation|reasons|rejection)",
            r"violat\w+\s+(?:our|the|local|a)\s+(?:\w+\s+)?(?:policy|policies|terms)",
            r"(?:local|site|security|content|email|mail)\s+policy",
            r"prohibited\s+(?:attachment|file|content)",
            r"(?:by|due\s+to|per)\s+(?:our|the|local|administrative)\s+(?:\w+\s+)?polic(?:y|ies)",
            r"not\s+(?:accepted|allowed)\s+(?:by|due\s+to)\s+policy",
            r"policy\s+(?:restriction|rules)",
            r"email\s+not\s+accepted\s+for\s+policy\s+reasons",
            r"protocol\s+violation",
            r"policy",
        ),
    ),
    (
        "blocked",
        (
            r"(?:your|sending|client|remote|connecting)\s+(?:ip|host|server|mta|address|network)(?:\s+address)?\s+(?:\(?\S+\)?\s+)?(?:has\s+been\s+|is\s+|was\s+)?(?:blocked|blacklisted|banned|denied|rejected|listed|not\s+allowed|refused|on\s+(?:our|a)\s+block)",
            r"(?:blocked|blacklisted|listed)\s+(?:by|on|in|at)\s+(?:\S+\s+)?(?:rbl|dnsbl|blacklist|blocklist|block\s+list|black\s+list|spamhaus|spamcop|sbl|xbl|pbl|\S+\.(?:org|net|com))",
            r"\b(?:rbl|dnsbl|dnsrbl|blacklist(?:ed)?|blocklist(?:ed)?|spamhaus|spamcop|barracudacentral|mail-abuse)\b",
            r"client\s+host\s+(?:\S+\s+)?(?:rejected|blocked)",
            r"connection\s+(?:refused|rejected|denied|not\s+accepted|dropped)",
            r"access\s+denied.*\b(?:ip|host|network)\b",
            r"(?:ip|host|domain|address)\s+(?:is\s+)?(?:in|on)\s+(?:a\s+|our\s+)?(?:black|block)\s*list",
            r"(?:smtp|mail)\s+server\s+of\s+your\s+isp",
            r"dynamic\s+(?:ip|address|pool)",
            r"dial-?up|residential",
            r"not\s+(?:allowed|authorized)\s+to\s+(?:connect|send)",
            r"(?:is|are|has\s+been)\s+(?:temporarily\s+)?(?:blocked|blacklisted)",
            r"\bblocked\b",
            r"(?:refused|rejected)\s+(?:your\s+)?(?:connection|ip|host)",
            r"not\s+accept\s+(?:mail|connections)\s+from\s+(?:your\s+)?(?:ip|host|server)",
            r"service\s+(?:not\s+available|unavailable),\s+closing",
            r"on\s+our\s+block\s*list",
        ),
    ),
    (
        "expired",
        (
            r"(?:delivery|message)\s+(?:time\s+)?(?:expired|timed\s*out|time-?out)",
            r"retry\s+(?:timeout|time)\s+(?:exceeded|not\s+reached)",
            r"(?:could\s+not|couldn'?t|was\s+not|has\s+not\s+been)\s+(?:be\s+)?delivered\s+(?:within|for|in)\s+\d+",
            r"(?:giving\s+up|gave\s+up)",
            r"queue\s+(?:time|lifetime)\s+(?:expired|exceeded)",
            r"(?:message|mail)\s+(?:has\s+been\s+)?(?:in\s+the\s+queue|queued)\s+too\s+long",
            r"undeliverable\s+for\s+\d+",
            r"unable\s+to\s+deliver.*\b(?:days?|hours?)\b",
            r"has\s+not\s+been\s+delivered\s+for",
            r"message\s+expired",
            r"(?:warning|delay)[^.]*\bnot\s+(?:yet\s+)?been\s+delivered",
            r"delivery\s+(?:is\s+)?delayed",
            r"maximum\s+time\s+in\s+queue",
            r"have\s+been\s+delayed",
            r"connection\s+timed\s+out",  # what a sender's queue says when it gives up
        ),
    ),
    (
        "networkerror",
        (
            r"(?:connection|connect)\s+(?:timed\s+out|timeout|reset|closed|lost|failed)",
            r"(?:mail|routing)\s+loop",
            r"too\s+many\s+hops",
            r"loops?\s+back\s+to\s+(?:myself|me)",
            r"network\s+(?:is\s+)?(?:unreachable|error|down)",
            r"no\s+route\s+to\s+host",
            r"temporary\s+(?:dns|lookup)\s+failure",
            r"(?:dns|name\s+server)\s+(?:error|failure|timeout|problem)",
            r"host\s+(?:is\s+)?unreachable",
            r"unable\s+to\s+connect",
            r"could\s+not\s+connect",
            r"lost\s+connection",
            r"connection\s+(?:to\s+\S+\s+)?(?:refused|failed)",
            r"malformed\s+or\s+unexpected\s+name\s+server\s+reply",
            r"hop\s+count\s+exceeded",
            r"mail\s+for\s+\S+\s+loops\s+back",
        ),
    ),
    (
        "systemfull",
        (
            r"(?:disk|file\s*system|storage|mail\s+system|spool)\s+(?:is\s+)?full",
            r"(?:out\s+of|no\s+space\s+left|insufficient\s+system)\s+(?:disk\s+)?(?:space|storage)",
        ),
    ),
    (
        "securityerror",
        (
            r"authentication\s+(?:is\s+)?(?:required|failed|failure)",
            r"(?:must|need\s+to)\s+(?:use\s+)?(?:authenticate|starttls|tls)",
            r"(?:tls|ssl|starttls)\s+(?:is\s+)?(?:required|failed|failure|handshake)",
            r"encryption\s+required",
            r"certificate",
            r"authentication\s+required",
            r"\bauth\b.*\brequired\b",
            r"requires?\s+(?:smtp\s+)?auth",
            r"user\s+not\s+authenticated",
            r"submission\s+has\s+been\s+rejected",
            r"unauthenticated\s+senders?",
            r"smtp\s+authentication",
        ),
    ),
    (
        "systemerror",
        (
            r"(?:system|server|internal|local|configuration|software)\s+(?:\S+\s+)?(?:error|failure|problem)",
            r"(?:temporary|temporarily)\s+(?:local\s+)?(?:problem|failure|error|unavailable)",
            r"i/o\s+error",
            r"server\s+(?:is\s+)?(?:busy|unavailable|misconfigured)",
            r"service\s+(?:temporarily\s+|currently\s+)?(?:unavailable|not\s+available)",
            r"transaction\s+failed",
            r"too\s+many\s+(?:recursion|nested)",
            r"unable\s+to\s+(?:process|handle)",
            r"mail\s+system\s+(?:error|problem)",
            r"(?:cannot|can'?t)\s+(?:open|create)\s+(?:the\s+)?(?:mailbox|file)",
            r"internal\s+server\s+error",
            r"\btemporary\s+error",
            r"local\s+error\s+in\s+processing",
        ),
    ),
    (
        "mailererror",
        (
            r"(?:mailer|pipe|program|command)\s+(?:\S+\s+)?(?:error|failed|died|exited|returned\s+non-?zero)",
            r"x-unix;\s*\d+",
            r"exit\s+(?:code|status)\s+\d+",
            r"procmail|maildrop|deliver(?:y)?\s+command",
            r"(?:unknown|bad)\s+mailer",
            r"generated\s+by\s+\S+\s+(?:command|program)",
            r"child\s+process",
            r"pipe\s+to\s+\|",
        ),
    ),
    (
        "syntaxerror",
        (
            r"syntax\s+error",
            r"command\s+(?:not\s+)?(?:recognized|unrecognized|not\s+implemented)",
            r"unrecognized\s+command",
            r"(?:bad|improper)\s+sequence\s+of\s+commands",
            r"command\s+parameter\s+not\s+implemented",
            r"(?:line|command)\s+too\s+long",
        ),
    ),
    (
        "notaccept",
        (
            r"does\s+not\s+accept\s+(?:any\s+)?(?:e-?)?mail",
            r"(?:null|nul)\s+mx",
            r"no\s+mail\s+(?:is\s+)?accepted",
            r"not\s+accepting\s+(?:any\s+)?(?:e-?)?mail",
            r"accepts\s+no\s+mail",
        ),
    ),
)


# Weaker words, tried after every reason above.
_TEXT += (("rejected", (r"access\s+denied",)),)


def _required(items: list) -> frozenset[str] | None:
    """Literal strings one of which every match of a parsed pattern contains (None: unknown).

    A cheap prefilter: ``str in`` scans are much faster than trying a pattern of many
    alternatives at every position, and most texts contain none of a reason's words.
    """
    best: frozenset[str] | None = None
    run = ""

    def better(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
        if a is None:
            return b
        if b is None:
            return a
        return a if min(map(len, a)) * 8 - len(a) >= min(map(len, b)) * 8 - len(b) else b

    for op, arg in [*items, (None, None)]:
        if op is _sre.LITERAL:
            run += chr(arg)
            continue
        if len(run) >= 3:
            best = better(best, frozenset({run}))
        run = ""
        found: frozenset[str] | None = None
        if op is _sre.SUBPATTERN:
            found = _required(list(arg[-1]))
        elif op is _sre.BRANCH:
            union: set[str] = set()
            for branch in arg[1]:
                sub = _required(list(branch))
                if sub is None:
                    union = set()
                    break
                union |= sub
            found = frozenset(union) if union else None
        elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT) and arg[0] >= 1:
            found = _required(list(arg[2]))
        best = better(best, found)
    return best


def _prefilter(patterns: tuple[str, ...]) -> frozenset[str] | None:
    if _parser is None:
        return None
    words: set[str] = set()
    for p in patterns:
        found = _required(list(_parser.parse(p)))
        if not found:
            return None
        words |= found
    return frozenset(words)


_COMPILED: tuple[tuple[str, re.Pattern[str], frozenset[str] | None], ...] = tuple(
    (
        reason,
        re.compile(r"\b(?:" + "|".join(f"(?:{p})" for p in patterns) + ")"),
        _prefilter(patterns),
    )
    for reason, patterns in _TEXT
)

_STATUS_RE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def reason_from_status(status: str) -> str:
    """The reason an enhanced status code names, "" when it names none."""
    match = _STATUS_RE.search(status) if status else None
    if match is None:
        return ""
    if match[1] == "2":
        return "delivered"
    return _STATUS.get(f"{int(match[2])}.{int(match[3])}", "")


# Codes whose reason the text names better when it names one: X.6.0 (other media error:
# a spam filter's too), X.3.2 (not accepting messages: also a connection rate limit).
_VAGUE_CODES = frozenset({"6.0", "3.2"})


def _vague_code(status: str) -> bool:
    return status[2:] in _VAGUE_CODES


def reason_from_text(text: str) -> str:
    """The first reason whose patterns match the text (lower-cased here), "" if none."""
    if not text:
        return ""
    low = text.lower()
    for reason, pattern, words in _COMPILED:
        if words is not None and not any(w in low for w in words):
            continue
        if pattern.search(low):
            return reason
    return ""


_COMMAND = re.compile(
    r"(?:after|in\s+reply\s+to|while\s+sending|during|did\s+not\s+like\s+our)\s+(?:the\s+)?"
    r"(?:final\s+|initial\s+)?(rcpt|mail|data|end\s+of\s+data|helo|ehlo|connect(?:ion)?|greeting|message)\b"
    r"|(?:>>>|smtp\s+command:?)\s*(rcpt|mail|data|helo|ehlo)\b|\[(rcpt_to|mail_from|data)\]"
    r"|does\s+not\s+like\s+(recipient)|most\s+progress\s+was\s+(rcpt|mail|data)\b"
    r"|\bsmtp:(rcpt|mail|data)\b|(?:failed|rejected)\s+after\s+i\s+sent\s+the\s+(message)"
)
# One of these is in every text _COMMAND matches (a cheap test first).
_COMMAND_WORDS = (
    "after",
    "reply",
    "sending",
    "during",
    "like",
    ">>>",
    "command",
    "_to]",
    "_from]",
    "[data]",
    "sent the",
    "smtp:",
)
_COMMANDS = {
    "rcpt": "RCPT",
    "rcpt_to": "RCPT",
    "recipient": "RCPT",
    "mail": "MAIL",
    "mail_from": "MAIL",
    "data": "DATA",
    "message": "DATA",
    "helo": "HELO",
    "ehlo": "HELO",
    "connect": "CONN",
    "connection": "CONN",
    "greeting": "CONN",
}


def smtp_command(text: str) -> str:
    """The SMTP command a report says was refused (RCPT, MAIL, DATA, HELO, CONN), or ""."""
    if not text:
        return ""
    low = text[:8192].lower()
    if not any(word in low for word in _COMMAND_WORDS):
        return ""
    match = _COMMAND.search(low)  # lower-cased text: no re.I, twice as fast
    if match is None:
        return ""
    word = next(g for g in match.groups() if g).lower()
    return "DATA" if word.startswith("end") else _COMMANDS.get(word, "")


# Reasons that say nothing, or say it of an address (at MAIL: the sender's).
_ABOUT_ADDRESS = frozenset({"onhold", "undefined", "userunknown", "hostunknown", "filtered"})


def with_command(
    reason: str,
    status: str,
    command: str,
    code: int = 0,
    *,
    structured: bool = False,
    near: bool = True,
) -> str:
    """A reason adjusted for the command that was refused (reports only).

    ``near``: the recipient's own diagnostic names the command (not only the report's text).
    A remote server's "user unknown" counts as such in reply to RCPT or with an X.1.x
    status; said after DATA it is a filter speaking (sisimai's rule). When nobody says
    when: in a DSN's per-recipient fields (``structured``) it is taken as said at RCPT,
    where servers refuse unknown users; in a free-text bounce quoting a remote reply, as a
    filter's. A reporting MTA's own verdict (no reply code, no status) stands.
    """
    if command == "MAIL" and (
        reason in ("onhold", "undefined") or (near and reason in _ABOUT_ADDRESS)
    ):
        return "rejected"  # refused at MAIL: the address in question is the sender's
    if reason in ("onhold", "undefined", "filtered", "rejected") and command in ("HELO", "CONN"):
        return "blocked"  # refused before any envelope: the client itself was
    if reason != "userunknown" or command == "RCPT" or status[1:4] == ".1." or status[1:] == ".5.0":
        return reason
    if not code and not status:
        return reason
    if structured and not command and status[2:] in ("", "0.0"):
        return reason
    if reason == "userunknown":
        return "filtered"
    return reason


def is_hard(reason: str, code: int = 0, status: str = "") -> bool:
    """Whether a reason means the address itself is bad."""
    if reason in HARD_REASONS:
        return True
    if reason == "notaccept":
        # null MX, no MX: permanent unless a 4xx says otherwise
        return status.startswith("5") or (not status and not 400 <= code < 500)
    return False


def classify(code: int, status: str, text: str) -> tuple[str, bool]:
    """``(reason, hard)`` for an SMTP reply code, an enhanced status code and the text.

    ``code`` is the three-digit reply code (0 when none), ``status`` the enhanced status
    code (``"5.1.1"``, or ``""``), ``text`` the server's diagnostic text. A specific
    status code decides; a vague one (or none) lets the text decide first.
    """
    if not status and text:
        match = _STATUS_RE.search(text)
        if match is not None:
            status = match[0]
    if (status.startswith("2") or 200 <= code < 300) and not status.startswith(("4", "5")):
        return "delivered", False
    by_status = reason_from_status(status)
    if by_status and by_status not in _VAGUE and not _vague_code(status):
        return by_status, is_hard(by_status, code, status)
    reason = reason_from_text(text) or by_status
    if reason == "hostunknown" and status.startswith("4"):
        reason = "networkerror"  # a temporary name-service failure, not a missing domain
    if not reason and status[1:3] == ".7":
        reason = "securityerror"  # X.7.x "security or policy status", nothing more said
    if not reason:
        if 400 <= code < 500 or status.startswith("4"):
            reason = "undefined"
        else:
            reason = "onhold" if (500 <= code < 600 or status.startswith("5")) else "undefined"
    return reason, is_hard(reason, code, status)
