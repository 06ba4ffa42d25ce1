"""RefreshMaterializedViewOperator against a real PostgreSQL server."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from airflow.sdk import DAG

from airflow_matview import RefreshMaterializedViewOperator
from airflow_matview.exceptions import MatviewQueryError, MatviewSetupError
from devtools.harness.dag_runs import run_dag, task_result
from devtools.harness.scenario import FIRST_USERS, NEW_USERS, add_new_users, create_reference_scenario, view_rows

if TYPE_CHECKING:
    from pathlib import Path

    from devtools.harness.databases import Database


def refresh(view: str = "polls_user_matt_view", **kwargs: Any) -> dict[str, Any]:
    return RefreshMaterializedViewOperator(task_id="refresh", view=view, **kwargs).execute({})  # type: ignore[arg-type]


@pytest.fixture
def scenario(pg: psycopg.Connection, postgres_default: Database) -> psycopg.Connection:
    create_reference_scenario(pg)
    add_new_users(pg)
    return pg


def is_populated(pg: psycopg.Connection, relname: str) -> bool:
    row = pg.execute("SELECT relispopulated FROM pg_class WHERE relname = %s", [relname]).fetchone()
    assert row is not None
    return bool(row[0])


def test_auto_uses_concurrently_when_a_unique_index_exists(scenario: psycopg.Connection) -> None:
    result = refresh()
    assert result["mode"] == "concurrently"
    assert "polls_user_matt_view_id" in result["reason"]
    assert view_rows(scenario) == FIRST_USERS + NEW_USERS


def test_auto_falls_back_to_plain_without_a_unique_index(scenario: psycopg.Connection) -> None:
    scenario.execute("DROP INDEX polls_user_matt_view_id")
    scenario.execute("CREATE UNIQUE INDEX partial_id ON polls_user_matt_view (id) WHERE age > 30")
    scenario.execute("CREATE UNIQUE INDEX expr_id ON polls_user_matt_view ((id + 0))")
    result = refresh()
    assert result["mode"] == "blocking"
    assert "no unique index on plain columns" in result["reason"]
    assert view_rows(scenario) == FIRST_USERS + NEW_USERS


def test_auto_uses_plain_refresh_for_a_view_created_with_no_data(scenario: psycopg.Connection) -> None:
    scenario.execute("CREATE MATERIALIZED VIEW empty_view AS SELECT * FROM polls_user WITH NO DATA")
    scenario.execute("CREATE UNIQUE INDEX ON empty_view (id)")
    assert not is_populated(scenario, "empty_view")

    result = refresh("empty_view")

    assert result["mode"] == "blocking"
    assert "not populated" in result["reason"]
    assert is_populated(scenario, "empty_view")
    assert scenario.execute("SELECT count(*) FROM empty_view").fetchone() == (7,)


def test_concurrently_true_without_unique_index_fails_and_says_how_to_fix(scenario: psycopg.Connection) -> None:
    scenario.execute("DROP INDEX polls_user_matt_view_id")
    with pytest.raises(MatviewSetupError) as error:
        refresh(concurrently=True)
    message = str(error.value)
    assert "Cannot refresh public.polls_user_matt_view (connection 'postgres_default') CONCURRENTLY" in message
    assert "CREATE UNIQUE INDEX ON public.polls_user_matt_view (<key columns>)" in message
    assert view_rows(scenario) == FIRST_USERS


def test_concurrently_true_on_an_unpopulated_view_says_to_populate_it(scenario: psycopg.Connection) -> None:
    scenario.execute("REFRESH MATERIALIZED VIEW polls_user_matt_view WITH NO DATA")
    with pytest.raises(MatviewSetupError, match=r"not populated.*Run one plain refresh first"):
        refresh(concurrently=True)


def test_concurrently_false_and_with_no_data_modes(scenario: psycopg.Connection) -> None:
    assert refresh(concurrently=False)["mode"] == "blocking"
    assert view_rows(scenario) == FIRST_USERS + NEW_USERS

    result = refresh(with_data=False)
    assert (result["mode"], result["rows"]) == ("no_data", 0)
    assert not is_populated(scenario, "polls_user_matt_view")
    with pytest.raises(MatviewSetupError, match="PostgreSQL does not allow the two together"):
        refresh(with_data=False, concurrently=True)


def test_rows_come_from_the_catalog_and_analyze_makes_them_exact(scenario: psycopg.Connection) -> None:
    assert refresh(concurrently=False)["rows"] == 7  # the index rebuild counts the rows
    scenario.execute("INSERT INTO polls_user VALUES (8, 'heidi', 70)")
    result = refresh(analyze=True)
    assert result["rows"] == 8
    analyzed = scenario.execute(
        "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'polls_user_matt_view'"
    ).fetchone()
    assert analyzed == (True,)


def make_slow_view(pg: psycopg.Connection, seconds: float, unique_index: bool) -> None:
    """``slow_view`` takes ``seconds`` to refresh: its query sleeps once (an InitPlan) before returning rows."""
    pg.execute("CREATE TABLE refresh_delay (seconds float8)")
    pg.execute("INSERT INTO refresh_delay VALUES (0)")
    pg.execute(
        "CREATE MATERIALIZED VIEW slow_view AS SELECT id, name FROM polls_user "
        "WHERE (SELECT pg_sleep(seconds)::text FROM refresh_delay) = ''"
    )
    if unique_index:
        pg.execute("CREATE UNIQUE INDEX ON slow_view (id)")
    pg.execute("UPDATE refresh_delay SET seconds = %s", [seconds])


def wait_for_refresh_to_start(pg: psycopg.Connection, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = pg.execute(
            "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'REFRESH MATERIALIZED VIEW%%'"
        ).fetchone()
        if row:
            return int(row[0])
        time.sleep(0.05)
    raise AssertionError("the refresh never showed up in pg_stat_activity")


@pytest.mark.parametrize(("concurrently", "readers_blocked"), [(True, False), (False, True)])
def test_readers_are_blocked_only_by_a_plain_refresh(
    scenario: psycopg.Connection, database: Database, concurrently: bool, readers_blocked: bool
) -> None:
    make_slow_view(scenario, seconds=3, unique_index=True)
    scenario.execute("INSERT INTO polls_user VALUES (8, 'heidi', 70)")
    worker = threading.Thread(target=refresh, args=("slow_view",), kwargs={"concurrently": concurrently})
    worker.start()
    try:
        wait_for_refresh_to_start(scenario)
        with database.connect() as reader:
            reader.execute("SET lock_timeout = '1s'")
            started = time.monotonic()
            if readers_blocked:
                with pytest.raises(psycopg.errors.LockNotAvailable):
                    reader.execute("SELECT count(*) FROM slow_view")
            else:
                assert reader.execute("SELECT count(*) FROM slow_view").fetchone() == (7,)
                assert time.monotonic() - started < 1
    finally:
        worker.join()
    assert scenario.execute("SELECT count(*) FROM slow_view").fetchone() == (8,)


@pytest.mark.parametrize("concurrently", [True, False])
def test_failed_refresh_keeps_the_previous_rows(
    pg: psycopg.Connection, postgres_default: Database, concurrently: bool
) -> None:
    pg.execute("CREATE TABLE ratios (id int PRIMARY KEY, numerator int, denominator int)")
    pg.execute("INSERT INTO ratios VALUES (1, 10, 2), (2, 9, 3)")
    pg.execute("CREATE MATERIALIZED VIEW quotients AS SELECT id, numerator / denominator AS q FROM ratios")
    pg.execute("CREATE UNIQUE INDEX ON quotients (id)")
    pg.execute("INSERT INTO ratios VALUES (3, 1, 0)")

    with pytest.raises(MatviewQueryError) as error:
        refresh("quotients", concurrently=concurrently)

    assert str(error.value) == (
        "REFRESH MATERIALIZED VIEW quotients failed (connection 'postgres_default'): division by zero. "
        "The view keeps its previous contents. Not retried: the same query on the same data fails the same way. "
        "Fix the view's query or its source data, then clear the task."
    )
    assert pg.execute("SELECT id, q FROM quotients ORDER BY id").fetchall() == [(1, 5), (2, 3)]


def test_a_failed_refresh_fails_the_airflow_task(
    pg: psycopg.Connection, postgres_default: Database, airflow_db: Path
) -> None:
    with DAG("matview_failure", schedule=None, start_date=datetime(2024, 1, 1)) as dag:
        RefreshMaterializedViewOperator(task_id="refresh", view="public.missing_view")
    state, result = task_result(run_dag(dag))
    assert (state, result) == ("failed", None)


@pytest.mark.parametrize(
    ("view", "message"),
    [
        (
            "public.missing_view",
            "Materialized view public.missing_view does not exist in the database of connection "
            "'postgres_default' (looked in schema 'public').",
        ),
        ("missing_view", "(looked in search_path schemas public)"),
        ("polls_user", "public.polls_user (connection 'postgres_default') is a table, not a materialized view"),
        ("plain_view", "public.plain_view (connection 'postgres_default') is a plain view, not a materialized view"),
        ("1bad", "'1bad' is not a valid view name"),
    ],
)
def test_bad_targets_fail_before_any_refresh(scenario: psycopg.Connection, view: str, message: str) -> None:
    scenario.execute("CREATE VIEW plain_view AS SELECT 1 AS one")
    with pytest.raises(MatviewSetupError) as error:
        refresh(view)
    assert message in str(error.value)
    assert "connection 'postgres_default'" in str(error.value)
    assert view_rows(scenario) == FIRST_USERS


def test_unknown_connection_is_named_with_how_to_create_it(scenario: psycopg.Connection) -> None:
    with pytest.raises(MatviewSetupError) as error:
        refresh(postgres_conn_id="warehouse")
    assert str(error.value).startswith(
        "Cannot refresh polls_user_matt_view: Airflow connection 'warehouse' is not defined."
    )
    assert "AIRFLOW_CONN_WAREHOUSE" in str(error.value)


def test_capitals_spaces_and_quotes_in_schema_and_view(pg: psycopg.Connection, postgres_default: Database) -> None:
    pg.execute('CREATE SCHEMA "Sales Report"')
    pg.execute('CREATE TABLE "Sales Report".orders (id int PRIMARY KEY, amount int)')
    pg.execute('INSERT INTO "Sales Report".orders VALUES (1, 10)')
    pg.execute(
        'CREATE MATERIALIZED VIEW "Sales Report"."Q1 ""Totals""" AS SELECT sum(amount) AS total FROM '
        '"Sales Report".orders'
    )
    pg.execute('INSERT INTO "Sales Report".orders VALUES (2, 32)')

    result = refresh('"Sales Report"."Q1 ""Totals"""')

    assert result["view"] == '"Sales Report"."Q1 ""Totals"""'
    assert pg.execute('SELECT total FROM "Sales Report"."Q1 ""Totals"""').fetchone() == (42,)


@pytest.mark.parametrize(
    "view", ["x; DROP TABLE polls_user", '"x; DROP TABLE polls_user"', 'x"; DROP TABLE polls_user; --']
)
def test_injection_attempts_neither_execute_nor_hide_the_error(scenario: psycopg.Connection, view: str) -> None:
    with pytest.raises(MatviewSetupError, match=r"not a valid view name|does not exist"):
        refresh(view)
    assert scenario.execute("SELECT count(*) FROM polls_user").fetchone() == (7,)


def test_rows_after_a_concurrent_refresh_add_its_net_change(scenario: psycopg.Connection) -> None:
    assert refresh(concurrently=True)["rows"] == 7
    scenario.execute("ANALYZE polls_user_matt_view")
    scenario.execute("DELETE FROM polls_user WHERE id IN (1, 2, 3)")
    scenario.execute("INSERT INTO polls_user VALUES (8, 'heidi', 70)")
    assert refresh(concurrently=True)["rows"] == 5
