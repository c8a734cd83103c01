"""salvo: a high-volume outbound email sender.

Subpackages: :mod:`salvo.core` (sans-IO logic), :mod:`salvo.actors` (Trio/ZeroMQ I/O),
:mod:`salvo.ext` (Cython hot path: MIME assembly and DKIM), :mod:`salvo.bench`,
:mod:`salvo.testing` (sinks and sample campaigns for the demo, benchmarks and tests).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
