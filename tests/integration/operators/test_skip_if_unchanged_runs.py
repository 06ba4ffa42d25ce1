"""skip_if_unchanged in real DAG runs (``dag.test()``): writes that rolled back skip, a change that only a
row-level security policy's table shows refreshes, and the wait for unpublished counters outlives a server's 5 s
idle_in_transaction_session_timeout."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg import sql

from airflow_matview.factory import build_dags
from devtools.harness.dag_runs import run_dag, task_result
from devtools.harness.scenario import create_reference_scenario

if TYPE_CHECKING:
    from pathlib import Path

    from devtools.harness.databases import Database

pytestmark = pytest.mark.one_server  # the server side runs on every major in tests/integration/database/


def _run(database: Database, *statements: str) -> None:
    """``statements`` on a session of their own that publishes its counters and ends."""
    with database.connect() as conn:
        for statement in statements:
            conn.execute(statement)
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT 1")


class SkippingDag:
    """The DAG the factory builds for ``view`` with ``skip_if_unchanged``, run for real each time."""

    def __init__(self, view: str) -> None:
        config = {"views": [{"name": view, "schedule": None, "skip_if_unchanged": True}]}
        (self.dag,) = build_dags(config).values()

    def run(self) -> tuple[str | None, Any]:
        return task_result(run_dag(self.dag))


@pytest.fixture
def scenario(database: Database, postgres_default: Database, airflow_db: Path) -> Database:
    with database.connect() as conn:
        create_reference_scenario(conn)
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT 1")
    return database


def test_writes_that_rolled_back_are_skipped(scenario: Database) -> None:
    dag = SkippingDag("public.polls_user_matt_view")
    assert dag.run()[0] == "success"
    _run(scenario, "BEGIN", "INSERT INTO polls_user VALUES (8, 'heidi', 70)", "ROLLBACK")
    with pytest.raises(psycopg.errors.UniqueViolation):
        _run(scenario, "INSERT INTO polls_user VALUES (1, 'alice', 25)")
    _run(scenario, "BEGIN", "DELETE FROM polls_user", "ROLLBACK")
    assert dag.run() == ("skipped", None)
    _run(scenario, "UPDATE polls_user SET age = 20 WHERE id = 1")
    assert dag.run()[0] == "success"
    with scenario.connect() as conn:
        assert conn.execute("SELECT count(*) FROM polls_user_matt_view").fetchone() == (4,)


def test_a_policy_lookup_table_change_refreshes(scenario: Database) -> None:
    role = f"owner_{scenario.name}"
    _run(
        scenario,
        f'CREATE ROLE "{role}" NOSUPERUSER',
        "CREATE TABLE allowed_regions (region text)",
        "INSERT INTO allowed_regions VALUES ('eu')",
        "CREATE TABLE orders (id int PRIMARY KEY, region text)",
        "INSERT INTO orders VALUES (1, 'eu'), (2, 'us'), (3, 'us')",
        "ALTER TABLE orders ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY by_region ON orders USING (region IN (SELECT region FROM allowed_regions))",
        f'GRANT SELECT ON orders, allowed_regions TO "{role}"',
        f'GRANT CREATE ON SCHEMA public TO "{role}"',
        "CREATE MATERIALIZED VIEW visible_orders AS SELECT * FROM orders WITH NO DATA",
        f'ALTER MATERIALIZED VIEW visible_orders OWNER TO "{role}"',
    )
    try:
        dag = SkippingDag("public.visible_orders")
        state, result = dag.run()
        assert state == "success" and result["sources"] == ["public.allowed_regions", "public.orders"]
        assert dag.run()[0] == "skipped"
        _run(scenario, "INSERT INTO allowed_regions VALUES ('us')")
        assert dag.run()[0] == "success"
        with scenario.connect() as conn:
            assert conn.execute("SELECT count(*) FROM visible_orders").fetchone() == (3,)
    finally:
        _run(scenario, f'DROP OWNED BY "{role}" CASCADE', f'DROP ROLE "{role}"')


def test_the_wait_outlives_a_5s_idle_in_transaction_session_timeout(scenario: Database) -> None:
    with scenario.connect() as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET idle_in_transaction_session_timeout = '5s'").format(
                sql.Identifier(scenario.name)
            )
        )
    dag = SkippingDag("public.polls_user_matt_view")
    assert dag.run()[0] == "success"
    with scenario.connect(application_name="nightly-etl") as etl:
        etl.execute("SELECT 1")  # went idle just now: the check waits for its counters
        started = time.monotonic()
        assert dag.run() == ("skipped", None)
        assert time.monotonic() - started > 5
