"""``salvo doctor``'s checks: SPF, DKIM, DMARC, MX, reverse DNS, MTA-STS and TLS-RPT.

Pure: every DNS answer comes through an injected :data:`Lookup`; the command line
(``salvo.cli.doctor``) gives one backed by dnspython and the ``[dns] nameservers``.
"""

from .model import Answer, Lookup, Outcome, Result, Status
from .report import exit_status, run, summary, table
from .setup import DkimSetup, PoolSetup, Setup, setup_from_config

__all__ = [
    "Answer",
    "DkimSetup",
    "Lookup",
    "Outcome",
    "PoolSetup",
    "Result",
    "Setup",
    "Status",
    "exit_status",
    "run",
    "setup_from_config",
    "summary",
    "table",
]
