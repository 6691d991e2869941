"""The benchmark suite (issue #6): `python -m bench.run [--quick]`; not part of the test run."""
