"""How long an SMTP client waits for each step: data, used by the session that drives
:class:`~salvo.core.smtp.SMTPClient`."""

from __future__ import annotations

from dataclasses import dataclass

from .client import Phase

__all__ = ["SMTPTimeouts"]


@dataclass(frozen=True, slots=True)
class SMTPTimeouts:
    """Seconds allowed per step, each over a whole reply (RFC 5321 4.5.3.2 defaults).

    ``connect`` is Postfix's ``smtp_connect_timeout`` (the RFC names none): a host that
    does not answer a SYN in 30 s will not do better later. ``data_block`` bounds every
    write of up to 64 KiB; ``starttls`` covers the 220 and the handshake.
    """

    connect: float = 30.0
    greeting: float = 300.0
    ehlo: float = 300.0
    starttls: float = 300.0
    auth: float = 300.0
    mail: float = 300.0
    rcpt: float = 300.0
    rset: float = 300.0
    data_init: float = 120.0
    data_block: float = 180.0
    data_end: float = 600.0
    quit: float = 300.0
    transaction: float = 900.0

    # ``transaction`` bounds one whole transaction, from the first byte of ``[RSET] MAIL``
    # to the last reply, on top of the per-reply deadlines: with pipelining each reply
    # gets its own deadline, so a batch of N commands could otherwise take N x ``rcpt``.

    def for_phase(self, phase: Phase) -> float:
        """The deadline of the reply awaited in ``phase``."""
        return {
            Phase.GREETING: self.greeting,
            Phase.EHLO: self.ehlo,
            Phase.HELO: self.ehlo,
            Phase.STARTTLS: self.starttls,
            Phase.AUTH: self.auth,
            Phase.RSET: self.rset,
            Phase.MAIL: self.mail,
            Phase.RCPT: self.rcpt,
            Phase.DATA: self.data_init,
            Phase.DATA_END: self.data_end,
            Phase.QUIT: self.quit,
        }[phase]
