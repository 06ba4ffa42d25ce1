"""The shared harness: what the tests (``tests/``), the demo and the benchmarks start and use.

Servers and stacks: :mod:`.pgcluster` (throwaway PostgreSQL clusters), :mod:`.airflow_stack` (a real Airflow on
loopback), :mod:`.deployment` (both at once, for a real-Airflow test module), :mod:`.shutdown` (signals while they
run), :mod:`.smtp_sink` (a real SMTP server on loopback). Data: :mod:`.scenario` (the reference scenario),
:mod:`.fleet_seed` (a generated fleet in Airflow's metadata database). For tests: :mod:`.dag_runs` (real DAG runs
in the test process), :mod:`.recording_notifier` and :mod:`.exiting_notifier` (notifiers a test config names by
dotted path), :mod:`.xdist_scheduling` (how ``make test`` spreads the suite over two workers).

Test modules share code through here, never by importing one another. Nothing in this package is a test.
"""
