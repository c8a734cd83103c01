"""``python -m salvo.bench [FLAGS]``: another name for ``salvo bench [FLAGS]``.

It runs the ``salvo`` command line with ``bench`` as the command, so the flags, the
output and the recorded command line are those of ``salvo bench`` (``docs/bench.md``).
The single-purpose benchmarks of this package run as their own modules
(``python -m salvo.bench.hotpath``, ``.smtp``, ``.spool``, ``.spool_crash``).
"""

import sys

from salvo.cli import main

sys.argv[:1] = ["salvo", "bench"]
raise SystemExit(main())
