"""Stand-ins for the world around a node, shared by ``salvo demo``, ``salvo bench`` and
the tests: SMTP sinks that play the providers, sample campaigns, and the process and port
helpers that start and stop them.

- :mod:`salvo.testing.sink`: an SMTP sink in Trio that answers like a provider (delays,
  421/451/550 by policy) and counts what it receives; in a task or in a thread.
- :mod:`salvo.testing.smartsink`: that sink as its own process, and the handle that
  starts it and reads its counters.
- :mod:`salvo.testing.postfix`: Postfix's ``smtp-sink`` as a process.
- :mod:`salvo.testing.redis`: a throwaway ``redis-server`` for the cluster (no persistence).
- :mod:`salvo.testing.samples`: personalized newsletter templates, recipients and jobs.
- :mod:`salvo.testing.procs`: free ports, waiting for a listener, stopping a process
  group, CPU and memory of a process from ``/proc``.

Nothing here imports :mod:`salvo.bench` or the CLI.
"""
