"""skip_if_unchanged under the session timeouts servers commonly set: it waits for unpublished counters outside any
transaction, and a session the server ends for a timeout is retried with a message that says so."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import sql

from airflow_matview.database.identifiers import QualifiedName
from airflow_matview.database.refresh import arefresh_materialized_view, refresh_materialized_view, refresh_steps
from airflow_matview.database.refresh_settings import RefreshSettings
from airflow_matview.database.steps import Query, Sleep, Steps, Transaction, run
from airflow_matview.exceptions import MatviewRefreshError
from airflow_matview.version_compat import AirflowSkipException
from devtools.harness.scenario import create_reference_scenario

if TYPE_CHECKING:
    from devtools.harness.databases import Database

VIEW = QualifiedName("public", "polls_user_matt_view")
IDLE_IN_TRANSACTION = {"idle_in_transaction_session_timeout": "5s"}
# Either timeout alone would end the waiting session as surely as the two together: one test of both (it waits 10 s
# on each server).
BOTH_TIMEOUTS = {**IDLE_IN_TRANSACTION, "idle_session_timeout": "5s"}


@pytest.fixture
def scenario(database: Database) -> Database:
    with database.connect() as conn:
        create_reference_scenario(conn)
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT 1")
    return database


def _set_for_database(database: Database, settings: dict[str, str]) -> None:
    """The settings for every new session of the database (``ALTER DATABASE ... SET``)."""
    with database.connect() as conn:
        for name, value in settings.items():
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    sql.Identifier(database.name), sql.Identifier(name), sql.Literal(value)
                )
            )


def _count(database: Database) -> int:
    with database.connect() as conn:
        return int(conn.execute("SELECT count(*) FROM polls_user_matt_view").fetchone()[0])  # type: ignore[index]


def test_the_wait_for_unpublished_counters_outlives_the_session_timeouts(
    scenario: Database, caplog: pytest.LogCaptureFixture
) -> None:
    _set_for_database(scenario, BOTH_TIMEOUTS)
    with psycopg.connect(scenario.dsn) as conn:
        recorded = refresh_materialized_view(conn, VIEW, RefreshSettings(skip_if_unchanged=True)).fingerprint
    skipping = RefreshSettings(skip_if_unchanged=True, previous_fingerprint=recorded)
    with scenario.connect(application_name="nightly-etl") as etl:
        etl.execute("SET idle_session_timeout = 0")  # the test's own session waits as long as the check
        etl.execute("SELECT 1")  # it went idle just now: its counters may be unpublished, and the check waits
        started = time.monotonic()
        with (
            psycopg.connect(scenario.dsn) as conn,
            caplog.at_level(logging.INFO, "airflow_matview.database.refresh"),
            pytest.raises(AirflowSkipException),
        ):
            refresh_materialized_view(conn, VIEW, skipping)
        assert 4 < time.monotonic() - started < 15
        assert "('nightly-etl') went idle in the last 10s and may not have published" in caplog.text

        etl.execute("INSERT INTO polls_user VALUES (8, 'heidi', 70)")  # committed, its counters held back
        with psycopg.connect(scenario.dsn) as conn:
            result = refresh_materialized_view(conn, VIEW, skipping)
    assert result.fingerprint is not None and result.fingerprint != recorded
    assert _count(scenario) == 6


def _stalled(steps: Steps[object], after: str, seconds: float) -> Steps[object]:
    """``steps`` with a pause after each query whose text holds ``after``, as if the worker stalled there."""
    result: object = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.throw(error) if error is not None else steps.send(result)
        except StopIteration as stop:
            return stop.value
        error = None
        if isinstance(step, Transaction):
            step = Transaction(_stalled(step.steps, after, seconds), step.rollback)
        try:
            result = yield step
        except BaseException as exc:
            error = exc
            continue
        if isinstance(step, Query) and after in str(step.statement):
            yield Sleep(seconds)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "idle_in_transaction_session_timeout",
            "PostgreSQL ended the session: it was idle in its transaction longer than "
            "idle_in_transaction_session_timeout",
        ),
        (
            "transaction_timeout",
            "PostgreSQL ended the session: its transaction lasted longer than transaction_timeout",
        ),
    ],
)
def test_a_session_ended_for_a_timeout_is_retried_with_a_true_message(
    scenario: Database, setting: str, message: str
) -> None:
    with scenario.connect() as conn:
        if setting == "transaction_timeout" and conn.info.server_version < 170000:
            pytest.skip("transaction_timeout is new in PostgreSQL 17")
    _set_for_database(scenario, {setting: "1s"})
    with psycopg.connect(scenario.dsn) as conn, pytest.raises(MatviewRefreshError) as error:
        run(conn, _stalled(refresh_steps(VIEW), "pg_try_advisory_xact_lock", 2.0))
    text = str(error.value)
    assert text.startswith(f"REFRESH MATERIALIZED VIEW {VIEW} failed (the connection): {message}"), text
    assert "the view keeps its previous contents; Airflow will retry" in text, text
    assert "Fix the view's query" not in text
    assert _count(scenario) == 5


def test_the_deferred_refresh_waits_outside_its_transaction_too(scenario: Database) -> None:
    """The triggerer's refresh (the same steps on an asynchronous connection) under the same timeout."""
    _set_for_database(scenario, IDLE_IN_TRANSACTION)

    async def refresh(previous: dict[str, object] | None) -> dict[str, object] | None:
        async with await psycopg.AsyncConnection.connect(scenario.dsn) as conn:
            settings = RefreshSettings(skip_if_unchanged=True, previous_fingerprint=previous)
            return (await arefresh_materialized_view(conn, VIEW, settings)).fingerprint

    recorded = asyncio.run(refresh(None))
    with scenario.connect(application_name="nightly-etl") as etl:
        etl.execute("SELECT 1")
        started = time.monotonic()
        with pytest.raises(AirflowSkipException):
            asyncio.run(refresh(recorded))
        assert time.monotonic() - started > 4
