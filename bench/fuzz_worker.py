"""One atheris (libFuzzer) process for one fuzz target: ``python -m salvo.bench.fuzz_worker
NAME [libFuzzer flags] [corpus dirs]``; :mod:`salvo.bench.fuzz` starts it.

salvo's modules and the Python libraries that parse for them (h11, idna, dnspython, the
``email`` package) are imported under atheris' instrumentation, so libFuzzer sees their
branches. The Cython extensions run natively: a memory error there kills the process with
a signal, which libFuzzer reports as a crash and saves the input of.
"""

from __future__ import annotations

import sys

INSTRUMENTED = ["salvo", "h11", "idna", "dns", "email", "json", "urllib", "tomllib", "csv"]


def main() -> None:
    import atheris  # the optional extra: imported here so the module imports without it

    name = sys.argv[1]
    with atheris.instrument_imports(include=INSTRUMENTED):
        from salvo.bench import fuzz_targets

    target = fuzz_targets.TARGETS[name]

    def one(data: bytes) -> None:
        fuzz_targets.run_one(target, data)

    atheris.Setup([sys.argv[0], *sys.argv[2:]], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
