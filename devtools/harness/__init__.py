"""The shared harness: what the tests (``tests/``), the demo and the benchmarks start and use.

:mod:`.pgcluster` (throwaway PostgreSQL clusters), :mod:`.airflow_stack` (a real Airflow on loopback),
:mod:`.shutdown` (signals while they run), :mod:`.scenario` (the reference scenario), :mod:`.fleet_seed` (a
generated fleet in Airflow's metadata database). Nothing in this package is a test.
"""
