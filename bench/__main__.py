"""``python -m salvo.bench``: run every benchmark of bench/ in turn, with its defaults."""

import importlib

BENCHMARKS = ("hotpath", "node", "smtp")

for name in BENCHMARKS:
    print(f"== salvo.bench.{name}", flush=True)
    code = importlib.import_module(f"salvo.bench.{name}").main([])
    if code:
        raise SystemExit(code)
