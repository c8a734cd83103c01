"""Recipients refused as too many for one transaction (452 4.5.3, LIMITS RCPTMAX): which to
send again, in further transactions on the same connection, and their final outcomes.

A round sends every transaction's split recipients again; it goes on while each round
settles at least one recipient, so it ends after at most as many rounds as recipients.
"""

from __future__ import annotations

from collections.abc import Sequence

from .outcome import Outcome

__all__ = ["SplitRounds"]


def _split(positions: Sequence[int], outcomes: Sequence[Outcome]) -> list[int]:
    """The positions still split, if the round made progress (else none: give up)."""
    split = [i for i, o in zip(positions, outcomes, strict=True) if o.split]
    return split if len(split) < len(positions) else []


class SplitRounds:
    """The rounds after a first one whose outcomes were ``first``, for ``transactions``
    (``(mail_from, recipients, message[, smtputf8])`` each)."""

    def __init__(self, transactions: Sequence[Sequence], first: Sequence[Sequence[Outcome]]):
        self._transactions = transactions
        self.finals = [list(outcomes) for outcomes in first]
        self.held = [k for k, outcomes in enumerate(first) if any(o.split for o in outcomes)]
        todo = [(k, _split(range(len(first[k])), first[k])) for k in self.held]
        self._todo = [(k, split) for k, split in todo if split]
        self._rounds = sum(len(item[1]) for item in transactions)

    def next_batch(self) -> list[tuple] | None:
        """The transactions of the next round, or None when there is none."""
        if not self._todo or self._rounds <= 0:
            return None
        self._rounds -= 1
        batch = []
        for k, positions in self._todo:
            item = self._transactions[k]
            smtputf8 = len(item) > 3 and item[3]
            batch.append((item[0], [item[1][i] for i in positions], item[2], smtputf8))
        return batch

    def settle(self, results: Sequence[Sequence[Outcome]]) -> None:
        """The outcomes of the round :meth:`next_batch` gave, in its order."""
        again = []
        for (k, positions), outcomes in zip(self._todo, results, strict=True):
            for i, outcome in zip(positions, outcomes, strict=True):
                self.finals[k][i] = outcome
            split = _split(positions, outcomes)
            if split:
                again.append((k, split))
        self._todo = again
