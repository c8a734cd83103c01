"""I/O and concurrency: Trio actors linked over ZeroMQ."""
