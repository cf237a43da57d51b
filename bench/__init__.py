"""Ferry's benchmarks: `python -m bench` (or `make bench`) prints the figures and writes
bench/RESULTS.md. Never part of the test suite; nothing here asserts a timing."""
