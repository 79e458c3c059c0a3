"""Performance harness: `nox -s bench` (or `python -m benchmarks [NAME...]`)."""
