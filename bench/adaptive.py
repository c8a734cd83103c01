"""Adaptive shaping against a provider that throttles above a rate the node does not know.

    python -m salvo.bench.adaptive [--rate 150] [--seconds 90] [--out bench-out/adaptive]

Two realistic rows (``salvo bench``'s smart sinks: 2 ms per reply, 1% 451, 2% 550, 100
messages per connection), each a fresh node sending the same mail to two providers, p0
and p1, with default limits (no message rate configured):

- ``both healthy``: the baseline of p0's rate;
- ``p1 hidden rate``: p1 takes ``--rate`` msg/s over all connections (a token bucket
  with one second's burst) and answers ``421 4.7.0`` at MAIL above it, closing the
  connection.

p1 gets ``--rate`` x ``--seconds`` messages, so it stays backlogged that long. Reported:
the seconds from the first message until p1's accepted rate (5 s moving average, from
p1's own count) stays within 20% of the hidden rate, the same for the rate the node
allows (``salvo_shaping_rate``, polled from ``/metrics`` every 0.5 s), the 421s (in all,
in the first minute, per minute after convergence), and p0's rate (up to its 95th
percentile delivery) against the baseline. Writes ``adaptive.json`` and ``adaptive.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

from salvo.bench import harness, suite
from salvo.testing.procs import free_port

BAND = 0.2  # within 20% of the hidden rate
AVERAGE = 5  # seconds of the moving average


def _moving(values: list[float], n: int) -> list[float | None]:
    return [None if i + 1 < n else sum(values[i + 1 - n : i + 1]) / n for i in range(len(values))]


def _settled(times: list[float], values: list[float | None], target: float) -> float | None:
    """The first time from which every value is within BAND of ``target`` (None: never)."""
    found = None
    for t, v in zip(times, values, strict=True):
        if v is None:
            continue
        if abs(v - target) <= BAND * target:
            if found is None:
                found = t
        else:
            found = None
    return found


class MetricsPoller:
    """``salvo_shaping_rate`` and ``_connections`` of p1's lane, every 0.5 s; True (the
    row ends) once every sink has finished ``share`` recipients (``statuses``: their
    status files)."""

    def __init__(self, url: str, host: str, statuses: list[Path], share: int) -> None:
        self.url, self.host = url, host
        self.statuses, self.share = statuses, share
        self.samples: list[tuple[float, float, float]] = []  # (unix time, rate, connections)
        self._next = 0.0

    def _finished(self) -> bool:
        for path in self.statuses:
            try:
                st = json.loads(path.read_text())
            except (OSError, ValueError):
                return False
            if st.get("messages", 0) + st.get("bounced", 0) < self.share:
                return False
        return True

    def __call__(self) -> bool:
        now = time.time()
        if now < self._next:
            return False
        self._next = now + 0.5
        if self._finished():
            return True
        try:
            with urllib.request.urlopen(self.url, timeout=0.3) as reply:
                text = reply.read().decode()
        except OSError:
            return False
        rate = conns = None
        for line in text.splitlines():
            if self.host not in line or line.startswith("#"):
                continue
            if line.startswith("salvo_shaping_rate{"):
                rate = float(line.rsplit(" ", 1)[1])
            elif line.startswith("salvo_shaping_connections{"):
                conns = float(line.rsplit(" ", 1)[1])
        if rate is not None and conns is not None:
            self.samples.append((now, rate, conns))
        return False


def analyse(row: dict, hidden: float, poller: MetricsPoller | None) -> dict:
    """The convergence figures of a throttled row (see the module docstring)."""
    p0, p1 = row["sinks"][0], row["sinks"][1]
    per_s = {int(k): v for k, v in p1.get("per_second", {}).items()}
    firsts = [int(k) for s in (p0, p1) for k in s.get("per_second", {})]
    start = min(firsts)
    busy = [t for t, (taken, _) in per_s.items() if taken >= 0.5 * hidden]
    end = max(busy) if busy else start  # p1 backlogged until then; after it, the tail
    seconds = list(range(start, end + 1))
    taken = [float(per_s.get(t, [0, 0])[0]) for t in seconds]
    refused = [per_s.get(t, [0, 0])[1] for t in seconds]
    rel = [t - start for t in seconds]
    moving = _moving(taken, AVERAGE)
    converged = _settled(rel, moving, hidden)
    out: dict = {
        "hidden_rate": hidden,
        "start_unix": start,
        "backlogged_s": end - start,
        "accepted_converged_s": converged,
        "rate_limited_421": p1.get("rate_limited", 0),
        "rate_limited_421_first_minute": sum(
            n for t, n in zip(rel, refused, strict=True) if t < 60
        ),
        "rate_limited_421_last_minute": sum(refused[-60:]),
        "p1_accepted_per_s": taken,
        "p1_421_per_s": refused,
    }
    if converged is not None:
        after = [n for t, n in zip(rel, refused, strict=True) if t >= converged]
        span = max(1.0, rel[-1] - converged + 1)
        out["rate_limited_421_per_minute_after"] = sum(after) * 60.0 / span
        kept = [v for t, v in zip(rel, taken, strict=True) if t >= converged]
        out["p1_mean_per_s_after"] = sum(kept) / len(kept)
    if poller is not None and poller.samples:
        times = [t - start for t, _, _ in poller.samples]
        rates = [r if r > 0 else None for _, r, _ in poller.samples]  # 0: no limit yet
        inside = [(t, r) for t, r in zip(times, rates, strict=True) if t <= end - start]
        out["allowed_converged_s"] = _settled(
            [t for t, _ in inside], [r if r is not None else 1e12 for _, r in inside], hidden
        )
        out["allowed"] = [
            [round(t, 2), r, c] for t, (_, r, c) in zip(times, poller.samples, strict=True)
        ]
    return out


def chart(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = result["analysis"]
    hidden = a["hidden_rate"]
    fig, ax = plt.subplots(figsize=(11, 5))
    taken = a["p1_accepted_per_s"]
    xs = list(range(len(taken)))
    ax.plot(xs, taken, lw=0.8, color="tab:blue", label="p1 accepted msg/s (its own count)")
    ax.plot(
        xs,
        [v if v is not None else float("nan") for v in _moving(taken, AVERAGE)],
        color="tab:blue",
        lw=2,
        label=f"p1 accepted, {AVERAGE} s average",
    )
    allowed = [(t, r) for t, r, _ in a.get("allowed", []) if r > 0 and t <= len(taken)]
    if allowed:
        ax.plot(
            *zip(*allowed, strict=True),
            color="tab:green",
            lw=1.5,
            label="allowed (salvo_shaping_rate)",
        )
    ax.axhline(hidden, color="k", ls="--", lw=1, label=f"hidden rate {hidden:g}/s")
    ax.axhspan(hidden * (1 - BAND), hidden * (1 + BAND), color="k", alpha=0.07, label="+-20%")
    ax.bar(xs, a["p1_421_per_s"], color="tab:red", alpha=0.6, label="421s per second")
    if a.get("accepted_converged_s") is not None:
        ax.axvline(a["accepted_converged_s"], color="tab:blue", ls=":", lw=1)
    ax.set_ylim(0, hidden * 2.5)
    ax.set_xlabel("seconds since the first message")
    ax.set_ylabel("messages/s")
    ax.set_title(f"adaptive shaping: p1 throttles above {hidden:g} msg/s ({result['date']})")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m salvo.bench.adaptive")
    parser.add_argument("--rate", type=float, default=150.0, help="p1's hidden msg/s")
    parser.add_argument("--seconds", type=float, default=90.0, help="how long p1 stays busy")
    parser.add_argument("--out", type=Path, default=Path("bench-out/adaptive"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    suite.LOG_DIR = args.out / "logs"
    per_provider = int(args.rate * args.seconds)
    messages = 2 * per_provider
    healthy = suite.REALISTIC
    throttling = suite.REALISTIC | {"rate_limit": args.rate}
    rows: dict[str, dict] = {}
    analysis: dict = {}
    with harness.workdir() as tmp:
        for name, policies in (
            ("both healthy", [healthy, healthy]),
            ("p1 hidden rate", [healthy, throttling]),
        ):
            port = free_port()
            host = suite.PROVIDER_HOSTS[1]
            folder = name.replace(" ", "-")
            # Each sink's share, less a few deferrals still waiting for their retry.
            statuses = [tmp / folder / f"smartsink-{h}.json" for h in suite.PROVIDER_HOSTS[:2]]
            poller = MetricsPoller(
                f"http://127.0.0.1:{port}/metrics", host, statuses, int(per_provider * 0.97)
            )
            rows[name] = suite.salvo_run(
                tmp,
                folder,
                messages=messages,
                per_job=100,
                providers=2,
                policies=policies,
                extra=f'[http]\nlisten = "127.0.0.1:{port}"\n',
                grace=args.seconds * 2,
                watch=poller,
            )
            harness.PROGRESS.done(f"{name}: {rows[name]['seconds']:.1f} s")
            if name == "p1 hidden rate":
                analysis = analyse(rows[name], args.rate, poller)
    base = rows["both healthy"]["per_provider"]["p0.example"]["per_s_95"]
    hit = rows["p1 hidden rate"]["per_provider"]["p0.example"]["per_s_95"]
    analysis["p0_per_s_95"] = {"both healthy": base, "p1 hidden rate": hit, "ratio": hit / base}
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(["python -m salvo.bench.adaptive", *(argv or sys.argv[1:])]),
        "analysis": analysis,
        "rows": {k: {kk: vv for kk, vv in v.items() if kk != "timeline"} for k, v in rows.items()},
    }
    (args.out / "adaptive.json").write_text(json.dumps(result, indent=2))
    chart(result, args.out / "adaptive.png")
    a = analysis
    fmt = lambda v, spec=".1f": "never" if v is None else format(v, spec)  # noqa: E731
    print(f"\nadaptive shaping, {result['date']}: p1's hidden rate {args.rate:g} msg/s")
    print(f"  p1 accepted rate within 20% from   {fmt(a.get('accepted_converged_s'))} s")
    print(f"  allowed rate within 20% from       {fmt(a.get('allowed_converged_s'))} s")
    print(f"  p1 mean accepted after that        {fmt(a.get('p1_mean_per_s_after'))} msg/s")
    first = a["rate_limited_421_first_minute"]
    print(f"  421s in all / first minute         {a['rate_limited_421']} / {first}")
    print(f"  421s per minute after convergence  {fmt(a.get('rate_limited_421_per_minute_after'))}")
    print(f"  421s in p1's last busy minute      {a['rate_limited_421_last_minute']}")
    print(f"  p1 backlogged for                  {a['backlogged_s']} s")
    print(
        f"  p0 msg/s (to its 95th percentile)  {hit:,.0f} vs {base:,.0f} both healthy "
        f"({hit / base:.2f}x)"
    )
    print(f"written: {args.out / 'adaptive.json'}, {args.out / 'adaptive.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
