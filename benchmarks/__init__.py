"""Benchmarks: speed and accuracy targets as ratios against a reference measured in the same run.

Each module is runnable on its own (``python -m benchmarks.<name>``) and
prints a Markdown section; results are recorded in ``benchmarks/RESULTS.md``.
Benchmarks never run in the test suite.
"""
