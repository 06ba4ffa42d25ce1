"""Refresh history on a real server: a success row exactly when the refresh committed, skip and failure rows after
the rollback, a history table that cannot be written never failing the refresh, retention pruned in batches, and
the view beside the table saying when each view was last refreshed."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from airflow_matview.database import history
from airflow_matview.database.identifiers import parse_qualified_name
from airflow_matview.database.locks import advisory_key
from airflow_matview.database.refresh import arefresh_materialized_view, refresh_materialized_view
from airflow_matview.database.refresh_settings import RefreshSettings
from airflow_matview.exceptions import MatviewQueryError, MatviewRefreshError
from airflow_matview.version_compat import AirflowSkipException
from devtools.harness.scenario import FIRST_USERS, NEW_USERS, add_new_users, create_reference_scenario, view_rows

if TYPE_CHECKING:
    from devtools.harness.databases import Database

VIEW = parse_qualified_name("public.polls_user_matt_view")
TABLE = "ops.matview_history"
TARGET = history.HistoryTarget(TABLE, started_by="manual", dag_id="d", run_id="r1", try_number=2)


@pytest.fixture
def scenario(pg: psycopg.Connection) -> psycopg.Connection:
    create_reference_scenario(pg)
    add_new_users(pg)
    pg.execute("CREATE SCHEMA ops")
    for statement in history.create_statements(parse_qualified_name(TABLE)):
        pg.execute(statement)
    return pg


def rows(pg: psycopg.Connection) -> list[dict[str, Any]]:
    cursor = pg.cursor(row_factory=psycopg.rows.dict_row)
    return cursor.execute(f"SELECT * FROM {TABLE} ORDER BY id").fetchall()


def refresh(database: Database, target: history.HistoryTarget | None = TARGET, **settings: Any) -> Any:
    with database.connect() as conn:
        return refresh_materialized_view(conn, VIEW, RefreshSettings(history=target, **settings), "connection 'x'")


def test_a_success_row_in_the_refresh_and_the_latest_view(scenario: psycopg.Connection, database: Database) -> None:
    result = refresh(database)
    (row,) = rows(scenario)
    assert row["view"] == "public.polls_user_matt_view"
    assert (row["outcome"], row["mode"], row["rows"], row["message"]) == ("success", "concurrently", 7, None)
    assert (row["started_by"], row["dag_id"], row["run_id"], row["try_number"]) == ("manual", "d", "r1", 2)
    assert row["seconds"] == result.seconds
    assert row["started"] <= row["finished"]
    assert row["lock_wait"] == 0
    latest = scenario.execute(
        "SELECT view, last_refreshed, behind >= interval '0', last_outcome FROM ops.matview_history_latest"
    ).fetchall()
    assert latest == [("public.polls_user_matt_view", row["finished"], True, "success")]


def test_a_failure_row_after_the_rollback_and_no_success_row(scenario: psycopg.Connection, database: Database) -> None:
    refresh(database)
    scenario.execute("CREATE FUNCTION boom(a integer) RETURNS integer LANGUAGE sql AS 'SELECT 1 / (a - 99)'")
    scenario.execute("CREATE MATERIALIZED VIEW fragile AS SELECT boom(age) AS x FROM polls_user")
    scenario.execute("INSERT INTO polls_user VALUES (99, 'zed', 99)")
    before = scenario.execute("SELECT count(*) FROM fragile").fetchone()
    with database.connect() as conn, pytest.raises(MatviewQueryError):
        refresh_materialized_view(conn, parse_qualified_name("fragile"), RefreshSettings(history=TARGET), "c")
    assert scenario.execute("SELECT count(*) FROM fragile").fetchone() == before
    failed = [row for row in rows(scenario) if row["view"] == "public.fragile"]
    assert [(row["outcome"], row["mode"], row["seconds"]) for row in failed] == [("failed", "blocking", None)]
    assert "division by zero" in failed[0]["message"]
    latest = scenario.execute(
        "SELECT last_refreshed, last_outcome FROM ops.matview_history_latest WHERE view = 'public.fragile'"
    ).fetchone()
    assert latest == (None, "failed")


def test_a_skip_row_when_another_refresh_runs(scenario: psycopg.Connection, database: Database) -> None:
    oid = scenario.execute("SELECT 'polls_user_matt_view'::regclass::oid").fetchone()[0]  # type: ignore[index]
    with psycopg.connect(database.dsn) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_key(oid)])
        with pytest.raises(AirflowSkipException):
            refresh(database, on_overlap="skip")
    ((outcome, message),) = [(row["outcome"], row["message"]) for row in rows(scenario)]
    assert outcome == "skipped"
    assert "already being refreshed" in message
    assert view_rows(scenario) == FIRST_USERS


def test_an_unwritable_history_never_fails_the_refresh(
    scenario: psycopg.Connection, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    missing = history.HistoryTarget("ops.nowhere")
    with caplog.at_level(logging.WARNING, logger=history.__name__):
        refresh(database, target=missing)
    assert view_rows(scenario) == sorted(FIRST_USERS + NEW_USERS)
    (line,) = [record.getMessage() for record in caplog.records]
    assert "could not record the success of public.polls_user_matt_view in ops.nowhere" in line
    assert "\n" not in line


def test_retention_prunes_old_rows_of_the_view_in_batches(scenario: psycopg.Connection, database: Database) -> None:
    old = history.PRUNE_BATCH * 2 + 7
    scenario.execute(
        f"INSERT INTO {TABLE} (view, outcome, started, finished) SELECT v, 'success', now() - interval '3 days', "
        "now() - interval '3 days' FROM (SELECT 'public.polls_user_matt_view' AS v FROM generate_series(1, %s) "
        "UNION ALL SELECT 'public.other' FROM generate_series(1, 5)) AS s",
        [old],
    )
    refresh(database, target=history.HistoryTarget(TABLE, retention_seconds=86400))
    counts = scenario.execute(f"SELECT view, count(*) FROM {TABLE} GROUP BY view ORDER BY view").fetchall()
    assert counts == [("public.other", 5), ("public.polls_user_matt_view", 1)]


def test_the_async_driver_writes_the_same_row(scenario: psycopg.Connection, database: Database) -> None:
    async def refresh_async() -> None:
        async with await psycopg.AsyncConnection.connect(database.dsn, autocommit=True) as conn:
            await arefresh_materialized_view(conn, VIEW, RefreshSettings(history=TARGET), "c")

    asyncio.run(refresh_async())
    (row,) = rows(scenario)
    assert (row["outcome"], row["mode"], row["rows"], row["run_id"]) == ("success", "concurrently", 7, "r1")


def test_a_lock_timeout_leaves_a_failure_row_on_the_operators_connection(
    scenario: psycopg.Connection, database: Database
) -> None:
    """On a connection outside autocommit, closed without a commit as the operator closes it, the failure row after
    the lock holders were described is committed."""
    with psycopg.connect(database.dsn) as holder:
        holder.execute("LOCK TABLE polls_user IN ACCESS EXCLUSIVE MODE")
        conn = psycopg.connect(database.dsn)
        try:
            settings = RefreshSettings(history=TARGET, lock_timeout=0.5)
            with pytest.raises(MatviewRefreshError, match=r"lock_timeout.*blocked by pid \d+"):
                refresh_materialized_view(conn, VIEW, settings, "c")
        finally:
            conn.close()
    assert [(row["outcome"], row["mode"]) for row in rows(scenario)] == [("failed", "concurrently")]


def test_a_locked_history_table_delays_the_refresh_a_second_at_most(
    scenario: psycopg.Connection, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(database.dsn) as holder:
        holder.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger=history.__name__):
            refresh(database, lock_timeout=60)
        took = time.monotonic() - started
    assert took < 5, f"the refresh waited {took:.1f}s for the history table"
    assert view_rows(scenario) == sorted(FIRST_USERS + NEW_USERS)
    assert "could not record the success" in caplog.text and "lock timeout" in caplog.text
    assert rows(scenario) == []
