"""The report parser against the labelled corpus: agreement and reports per second.

``python -m salvo.bench.feedback [--corpus DIR] [--rounds N] [--top K]``. Prints, on one
core, the reports parsed per second over the whole corpus (best of N rounds), the three
agreement figures of issue 11 as the corpus README defines them, and the confusion between
reasons (expected -> got, the most frequent pairs):

- *found*: labelled recipients (with an address) the parser reported, compared
  case-insensitively, the label's ``alias`` accepted as another spelling;
- *hard/soft*: over the bounce entries (not ``feedback``, ``vacation``, ``delivered``)
  whose recipient was found (or that name none), the parser's ``hard`` equals the label's;
- *reason*: over the entries whose recipient was found, the same reason (``feedback``
  entries must be kind ``complaint`` with the label's feedback type, ``vacation`` kind
  ``autoreply``, ``delivered`` not a bounce).
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from salvo.core.feedback.parse import parse_report
from salvo.core.feedback.report import Kind, RecipientReport, Report


def find_corpus(start: Path) -> Path:
    """``shared/corpus/bounces`` beside the project folder (``start.parents[2]``), or beside
    an ancestor of it (a git worktree one level deeper); the first place if none has it."""
    here = start.resolve()
    places = [here.parents[2], *here.parents[3:]]
    for base in places:
        corpus = base / "shared" / "corpus" / "bounces"
        if (corpus / "labels.json").exists():
            return corpus
    return places[0] / "shared" / "corpus" / "bounces"


DEFAULT_CORPUS = find_corpus(Path(__file__))

NOT_BOUNCE = ("feedback", "vacation", "delivered")


@dataclass
class Scores:
    """Agreement with the labels."""

    entries: int = 0  # labelled entries with a recipient address
    found: int = 0
    bounce_entries: int = 0
    hard_agree: int = 0
    reason_entries: int = 0
    reason_agree: int = 0
    not_bounce_files: int = 0  # eml-not files labelled [] that came out none
    not_bounce_expected: int = 0
    confusion: collections.Counter = field(default_factory=collections.Counter)
    misses: list = field(default_factory=list)  # (file, expected address)
    wrong: list = field(default_factory=list)  # (file, address, expected, got)

    def pct(self, a: int, b: int) -> float:
        return 100.0 * a / b if b else 100.0

    @property
    def found_pct(self) -> float:
        return self.pct(self.found, self.entries)

    @property
    def hard_pct(self) -> float:
        return self.pct(self.hard_agree, self.bounce_entries)

    @property
    def reason_pct(self) -> float:
        return self.pct(self.reason_agree, self.reason_entries)


def load_corpus(corpus: Path) -> tuple[dict, list[tuple[str, bytes]]]:
    """The labels and every file of the corpus (relative name, bytes)."""
    labels = json.loads((corpus / "labels.json").read_text())
    files = [
        (f"{sub}/{p.name}", p.read_bytes())
        for sub in ("eml", "eml-not")
        for p in sorted((corpus / sub).glob("*.eml"))
    ]
    return labels, files


def _match(report: Report, entry: dict) -> RecipientReport | None:
    names = {entry["recipient"].lower()}
    if entry.get("alias"):
        names.add(entry["alias"].lower())
    for r in report.recipients:
        if r.address.lower() in names or (r.alias and r.alias.lower() in names):
            return r
    return None


def _got_reason(report: Report, r: RecipientReport | None, entry: dict) -> str:
    expected = entry["reason"]
    if expected == "feedback":
        if report.kind is not Kind.COMPLAINT:
            return f"kind:{report.kind.value}"
        want = entry.get("feedbacktype") or ""
        return "feedback" if not want or report.feedback_type == want else "feedback-type"
    if expected == "vacation":
        return "vacation" if report.kind is Kind.AUTOREPLY else f"kind:{report.kind.value}"
    if expected == "delivered":
        if report.kind is Kind.BOUNCE and r is not None:
            return f"bounce:{r.reason}"
        return "delivered"
    if report.kind is not Kind.BOUNCE:
        return f"kind:{report.kind.value}"
    return r.reason if r is not None else "missing"


def score(labels: dict, reports: dict[str, Report]) -> Scores:
    """Compare parsed reports with the labels (the corpus README's rules)."""
    s = Scores()
    for key, expected in labels.items():
        report = reports[key]
        if not expected:
            s.not_bounce_expected += 1
            if report.kind not in (Kind.BOUNCE, Kind.COMPLAINT):
                s.not_bounce_files += 1
            continue
        for entry in expected:
            r = None
            if entry["recipient"]:
                s.entries += 1
                r = _match(report, entry)
                if r is None and entry["reason"] == "delivered" and report.kind is not Kind.BOUNCE:
                    r = RecipientReport(address=entry["recipient"], reason="delivered")
                if r is None:
                    s.misses.append((key, entry["recipient"]))
                    continue
                s.found += 1
            elif report.recipients:
                r = report.recipients[0]
            got = _got_reason(report, r, entry)
            s.reason_entries += 1
            if got == entry["reason"]:
                s.reason_agree += 1
            else:
                s.confusion[(entry["reason"], got)] += 1
                s.wrong.append((key, entry["recipient"], entry["reason"], got))
            if entry["reason"] not in NOT_BOUNCE:
                s.bounce_entries += 1
                hard = bool(r is not None and report.kind is Kind.BOUNCE and r.hard)
                if hard == entry["hardbounce"]:
                    s.hard_agree += 1
    return s


def parse_all(files: list[tuple[str, bytes]]) -> dict[str, Report]:
    return {name: parse_report(raw) for name, raw in files}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m salvo.bench.feedback", description=__doc__)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--rounds", type=int, default=5, help="parse the corpus N times")
    ap.add_argument("--top", type=int, default=15, help="confusion pairs shown")
    ap.add_argument("--misses", action="store_true", help="list every disagreement")
    args = ap.parse_args(argv)
    if not (args.corpus / "labels.json").exists():
        ap.error(f"no corpus at {args.corpus} (labels.json missing)")
    labels, files = load_corpus(args.corpus)
    size = sum(len(raw) for _, raw in files)
    best = 0.0
    reports: dict[str, Report] = {}
    for _ in range(max(1, args.rounds)):
        start = time.process_time()
        reports = parse_all(files)
        elapsed = time.process_time() - start
        best = max(best, len(files) / elapsed if elapsed > 0 else 0.0)
    s = score(labels, reports)
    kinds = collections.Counter(r.kind.value for r in reports.values())
    print(f"corpus        {args.corpus} ({len(files)} files, {size / 1e6:.1f} MB)")
    print(f"speed         {best:,.0f} reports/s on one core (CPU time, best of {args.rounds})")
    print(f"kinds         {dict(sorted(kinds.items()))}")
    print(f"found         {s.found_pct:5.1f} %  ({s.found} / {s.entries} recipients)")
    print(
        f"hard/soft     {s.hard_pct:5.1f} %  ({s.hard_agree} / {s.bounce_entries} bounce entries)"
    )
    print(f"reason        {s.reason_pct:5.1f} %  ({s.reason_agree} / {s.reason_entries} entries)")
    print(f"eml-not none  {s.not_bounce_files} / {s.not_bounce_expected}")
    print("confusion (expected -> got):")
    for (want, got), n in s.confusion.most_common(args.top):
        print(f"  {n:4d}  {want} -> {got}")
    if args.misses:
        for key, address in s.misses:
            print(f"missed  {key}  {address}")
        for key, address, want, got in s.wrong:
            print(f"reason  {key}  {address}  {want} -> {got}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
