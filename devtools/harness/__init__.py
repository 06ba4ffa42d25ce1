"""The shared harness: what the tests (``tests/``), the demo and the benchmarks start and use.

Servers and stacks: :mod:`.pgcluster` (throwaway PostgreSQL clusters), :mod:`.airflow_stack` (a real Airflow on
loopback), :mod:`.deployment` (both at once, for a real-Airflow test module), :mod:`.shutdown` (signals while they
run), :mod:`.smtp_sink` (a real SMTP server on loopback). Data: :mod:`.scenario` (the reference scenario),
:mod:`.fleet_seed` (a generated fleet in Airflow's metadata database).

What test modules share, instead of importing one another: :mod:`.paths` (the repository, the ``airflow`` and
``airflow-matview`` commands), :mod:`.databases` (a test's own database, sessions that write and read it),
:mod:`.refresh_probes` (a slow view, who is refreshing, which locks are held), :mod:`.dag_runs` (real DAG runs in
the test process), :mod:`.dag_files` (a DAGs folder with the shipped DAG file, a parse probe),
:mod:`.console_script` (the ``airflow-matview`` command as a user runs it), :mod:`.configs` (configs and notifier
paths), :mod:`.recording_notifier` and :mod:`.exiting_notifier` (notifiers a test config names by dotted path),
:mod:`.xdist_scheduling` (how ``make test`` spreads the suite over two workers).

Nothing in this package is a test.
"""
