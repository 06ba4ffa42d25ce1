"""Development tools; not part of the installed package.

- :mod:`devtools.harness`: what the tests, the demo and the benchmarks start and share (throwaway PostgreSQL
  clusters, a real Airflow stack, the reference scenario, test notifiers, helpers for real DAG runs).
- :mod:`devtools.benchmarks`: the benchmarks ``make bench``, ``make bench-onchange`` and ``make bench-scale`` run,
  and the one-off measurements the README quotes.
- ``demo.py``, ``local_airflow.py``, ``matrix.py``, ``constraints.py``: what ``make demo``, ``make airflow``,
  ``make test-matrix`` and ``make constraints`` run.
"""
