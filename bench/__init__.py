"""gitlab-dr's benchmarks (``make bench``): see ``python -m bench --help``."""
