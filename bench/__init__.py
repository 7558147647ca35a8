"""Benchmarks: scripts that print a results table, run as ``python -m bench.<name>``.

Not tests: nothing here asserts on a timing.
"""
