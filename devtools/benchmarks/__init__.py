"""Benchmarks and measurements (``make bench``, ``make bench-onchange``, ``make bench-scale``; see the README).

They start what they measure with :mod:`devtools.harness`; each prints its figures and leaves nothing running.
"""
