"""Deferrable refreshes: the refresh runs in the trigger, with every guarantee of a refresh on a worker."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

from airflow_matview import RefreshMaterializedViewOperator
from airflow_matview.database.locks import advisory_key
from airflow_matview.database.refresh_settings import RefreshSettings
from airflow_matview.exceptions import MatviewQueryError, MatviewRefreshError, MatviewSetupError
from airflow_matview.operators.materialized_view import DEFER_TIMEOUT_GRACE
from airflow_matview.triggers.deferred_refresh import RefreshTrigger, error_from_event, settings_to_kwargs
from airflow_matview.version_compat import AirflowSkipException, TaskDeferred
from devtools.harness.databases import publish_statistics, write
from devtools.harness.paths import REPO
from devtools.harness.pgcluster import free_port
from devtools.harness.refresh_probes import locks_on, make_slow_view, refresh_backends, wait_for
from devtools.harness.scenario import add_new_users, create_reference_scenario

if TYPE_CHECKING:
    import psycopg

    from devtools.harness.databases import Database


@pytest.fixture
def scenario(pg: psycopg.Connection, postgres_default: Database) -> psycopg.Connection:
    create_reference_scenario(pg)
    add_new_users(pg)
    return pg


def trigger(view: str, conn_id: str = "postgres_default", **settings: Any) -> RefreshTrigger:
    return RefreshTrigger(view, conn_id, settings_to_kwargs(RefreshSettings(**settings)))


async def first_event(refresh: RefreshTrigger) -> dict[str, Any]:
    async for event in refresh.run():
        return dict(event.payload)
    raise AssertionError("the trigger ended without an event")


def test_trigger_survives_serialization(scenario: psycopg.Connection) -> None:
    original = trigger("public.polls_user_matt_view", lock_timeout=timedelta(seconds=5), statement_timeout=90)
    classpath, kwargs = original.serialize()
    assert classpath == "airflow_matview.triggers.deferred_refresh.RefreshTrigger"
    rebuilt = RefreshTrigger(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert RefreshSettings(**kwargs["settings"]).lock_timeout == 5.0


def test_deferred_refresh_returns_what_a_refresh_on_a_worker_returns(scenario: psycopg.Connection) -> None:
    results = {}
    for deferrable in (False, True):
        scenario.execute("INSERT INTO polls_user VALUES (%s, %s, 30)", [20 + deferrable, f"user{deferrable}"])
        operator = RefreshMaterializedViewOperator(
            task_id="refresh",
            view="public.polls_user_matt_view",
            deferrable=str(deferrable).lower(),
            execution_timeout=timedelta(minutes=5),
        )
        if not deferrable:
            results[deferrable] = operator.execute({})  # type: ignore[arg-type]
            continue
        with pytest.raises(TaskDeferred) as deferred:
            operator.execute({})  # type: ignore[arg-type]
        assert deferred.value.method_name == "execute_complete"
        assert deferred.value.timeout == timedelta(minutes=5) + DEFER_TIMEOUT_GRACE
        refresh = deferred.value.trigger
        assert isinstance(refresh, RefreshTrigger)
        event = asyncio.run(first_event(RefreshTrigger(**refresh.serialize()[1])))  # as the triggerer rebuilds it
        results[deferrable] = operator.execute_complete({}, event)  # type: ignore[arg-type]
    assert {**results[True], "seconds": 0, "rows": 0} == {**results[False], "seconds": 0, "rows": 0}
    assert results[True]["mode"] == "concurrently"
    assert scenario.execute("SELECT count(*) FROM polls_user_matt_view").fetchone() == (9,), "the deferred one ran"


@pytest.mark.parametrize(
    ("view", "settings", "error"),
    [
        ("public.missing_view", {}, MatviewSetupError),
        ("public.polls_user_matt_view", {"concurrently": True, "with_data": False}, MatviewSetupError),
        ("quotients", {}, MatviewQueryError),
    ],
)
def test_deferred_errors_are_the_errors_of_a_refresh_on_a_worker(
    scenario: psycopg.Connection, view: str, settings: dict[str, Any], error: type[Exception]
) -> None:
    scenario.execute("CREATE TABLE ratios (id int PRIMARY KEY, numerator int, denominator int)")
    scenario.execute("INSERT INTO ratios VALUES (1, 10, 2)")
    scenario.execute("CREATE MATERIALIZED VIEW quotients AS SELECT id, numerator / denominator AS q FROM ratios")
    scenario.execute("INSERT INTO ratios VALUES (3, 1, 0)")
    with pytest.raises(error) as on_worker:
        RefreshMaterializedViewOperator(task_id="refresh", view=view, **settings).execute({})  # type: ignore[arg-type]

    event = asyncio.run(first_event(trigger(view, **settings)))

    deferred = error_from_event(event)
    assert (type(deferred), str(deferred)) == (error, str(on_worker.value))


@pytest.mark.parametrize(
    ("case", "uri"),
    [
        ("not defined", None),
        ("another type", "mysql://root:pw@127.0.0.1:3306/shop"),
        ("no such database", "postgresql://postgres@127.0.0.1:{port}/no_such_db"),
        ("nothing listening", "postgresql://postgres@127.0.0.1:{free}/postgres"),
    ],
)
def test_deferred_connection_errors_are_the_errors_of_a_refresh_on_a_worker(
    scenario: psycopg.Connection, database: Database, monkeypatch: pytest.MonkeyPatch, case: str, uri: str | None
) -> None:
    if uri is not None:
        monkeypatch.setenv("AIRFLOW_CONN_TARGET", uri.format(port=database.server.port, free=free_port()))
    view = "public.polls_user_matt_view"
    with pytest.raises((MatviewSetupError, MatviewRefreshError)) as on_worker:
        RefreshMaterializedViewOperator(task_id="refresh", view=view, postgres_conn_id="target").execute({})  # type: ignore[arg-type]

    event = asyncio.run(first_event(trigger(view, "target")))

    deferred = error_from_event(event)
    assert (type(deferred), str(deferred)) == (type(on_worker.value), str(on_worker.value))
    assert str(deferred).startswith("Cannot ")


def test_deferred_refreshes_wait_in_the_event_loop_without_a_thread_each(scenario: psycopg.Connection) -> None:
    """Many refreshes at once in one event loop, as in the triggerer: all run on the server, no thread is added."""
    count = 8
    make_slow_view(scenario, 0)
    for number in range(count):
        scenario.execute(
            f"CREATE MATERIALIZED VIEW slow_{number} AS SELECT id, name FROM polls_user "
            "WHERE (SELECT pg_sleep(seconds)::text FROM refresh_delay) = ''"
        )
        scenario.execute(f"CREATE UNIQUE INDEX ON slow_{number} (id)")
    scenario.execute("UPDATE refresh_delay SET seconds = 2")

    async def refresh_all() -> tuple[int, int, list[dict[str, Any]]]:
        # One refresh first: what Airflow starts once per process to look connections up is there from now on.
        await first_event(trigger("public.polls_user_matt_view"))
        before = threading.active_count()
        refreshes = [
            asyncio.create_task(first_event(trigger(f"public.slow_{number}", application_name=f"deferred {number}")))
            for number in range(count)
        ]
        deadline = time.monotonic() + 60
        while len(refresh_backends(scenario)) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(refresh_backends(scenario)) == count, "the refreshes did not all run at once"
        during = threading.active_count()
        return before, during, await asyncio.gather(*refreshes)

    before, during, events = asyncio.run(refresh_all())
    print(f"{count} deferred refreshes running at once: {before} threads before, {during} while they ran")
    assert during == before
    assert [event["status"] for event in events] == ["success"] * count
    assert {event["result"]["mode"] for event in events} == {"concurrently"}


def test_skip_if_unchanged_decides_the_same_when_deferred(
    scenario: psycopg.Connection, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The skip and its message, after the wait for a session that just went idle to publish its statistics."""
    from airflow_matview.connections import connect
    from airflow_matview.database.identifiers import parse_qualified_name
    from airflow_matview.database.refresh import refresh_materialized_view

    view, label = "public.polls_user_matt_view", "connection 'postgres_default'"
    publish_statistics(scenario)
    scenario.close()  # a session that ended has published its counters: the refreshes below decide at once
    with connect("postgres_default", "test") as conn:
        first = refresh_materialized_view(conn, parse_qualified_name(view), RefreshSettings(), label)
        baseline = refresh_materialized_view(
            conn, parse_qualified_name(view), RefreshSettings(skip_if_unchanged=True), label
        ).fingerprint
        settings = {"skip_if_unchanged": True, "previous_fingerprint": baseline}
        with pytest.raises(AirflowSkipException) as on_worker:
            refresh_materialized_view(conn, parse_qualified_name(view), RefreshSettings(**settings), label)
    assert first.fingerprint is None and baseline is not None

    with database.connect() as idle, caplog.at_level(logging.INFO, logger="airflow_matview.database.refresh"):
        idle.execute("SELECT 1")  # a session of the database goes idle now: the refresh waits before it decides
        event = asyncio.run(first_event(trigger(view, **settings)))

    deferred = error_from_event(event)
    assert (type(deferred), str(deferred)) == (AirflowSkipException, str(on_worker.value))
    assert "skip_if_unchanged: waiting" in caplog.text
    write(database, "INSERT INTO polls_user VALUES (40, 'ivan', 41)")
    event = asyncio.run(first_event(trigger(view, **settings)))
    assert event["status"] == "success", event
    assert event["result"]["fingerprint"] != baseline


def test_overlap_skip_is_a_skip_when_deferred(scenario: psycopg.Connection, database: Database) -> None:
    with database.connect() as holder, holder.transaction():
        oid = holder.execute("SELECT 'public.polls_user_matt_view'::regclass::oid").fetchone()[0]  # type: ignore[index]
        holder.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_key(oid)])
        event = asyncio.run(first_event(trigger("public.polls_user_matt_view", on_overlap="skip")))
    assert isinstance(error_from_event(event), AirflowSkipException)
    assert "is already being refreshed by pid" in event["message"]


def test_cancelled_trigger_cancels_the_refresh_on_the_server(scenario: psycopg.Connection) -> None:
    make_slow_view(scenario, 30)
    scenario.execute("INSERT INTO polls_user VALUES (8, 'heidi', 70)")

    async def cancel_after_start() -> float:
        task = asyncio.create_task(first_event(trigger("public.slow_view", application_name="deferred slow")))
        while not refresh_backends(scenario):
            await asyncio.sleep(0.05)
        assert [name for _, name in refresh_backends(scenario)] == ["deferred slow"]
        cancelled = time.monotonic()
        task.cancel()  # what the triggerer does when the task is marked failed, cleared or times out
        with pytest.raises(asyncio.CancelledError):
            await task
        # Checked before the event loop ends (which would cancel whatever the trigger left running).
        assert not refresh_backends(scenario), "the trigger ended before the REFRESH did"
        assert locks_on(scenario, "slow_view") == 0, "the trigger ended before the REFRESH rolled back"
        return cancelled

    cancelled = asyncio.run(cancel_after_start())
    wait_for(lambda: not refresh_backends(scenario) and locks_on(scenario, "slow_view") == 0, 5, "REFRESH still on")
    print(f"cancelled deferred refresh gone from the server {time.monotonic() - cancelled:.2f}s later")
    assert scenario.execute("SELECT count(*) FROM slow_view").fetchone() == (7,), "previous contents kept"


def test_statement_timeout_ends_a_deferred_refresh_with_the_workers_message(scenario: psycopg.Connection) -> None:
    make_slow_view(scenario, 30)
    event = asyncio.run(first_event(trigger("public.slow_view", statement_timeout=timedelta(seconds=1))))
    error = error_from_event(event)
    assert isinstance(error, MatviewRefreshError)
    assert "exceeded its execution_timeout (1s, enforced by the server as statement_timeout)" in str(error)
    assert not refresh_backends(scenario)


def test_killed_triggerer_leaves_no_refresh_and_no_lock(scenario: psycopg.Connection, database: Database) -> None:
    """A process running the trigger (as the triggerer does) SIGKILLed mid-refresh."""
    make_slow_view(scenario, 60)
    script = textwrap.dedent(
        """
        import asyncio
        from airflow_matview.database.refresh_settings import RefreshSettings
        from airflow_matview.triggers.deferred_refresh import RefreshTrigger, settings_to_kwargs

        async def main():
            trigger = RefreshTrigger("public.slow_view", "postgres_default", settings_to_kwargs(RefreshSettings()))
            async for event in trigger.run():
                print(event)

        asyncio.run(main())
        """
    )
    env = {**os.environ, "AIRFLOW_CONN_POSTGRES_DEFAULT": database.uri}
    process = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO, start_new_session=True)
    try:
        # pg_stat_activity shows the statement a moment before it holds its lock on the view
        wait_for(
            lambda: refresh_backends(scenario) and locks_on(scenario, "slow_view") > 0, 60, "the refresh never locked"
        )
        killed = time.monotonic()
        os.killpg(process.pid, signal.SIGKILL)
        seconds = wait_for(
            lambda: not refresh_backends(scenario) and locks_on(scenario, "slow_view") == 0, 5, "REFRESH outlived it"
        )
        print(f"triggerer SIGKILLed: REFRESH gone and locks released {time.monotonic() - killed:.2f}s later")
        assert seconds < 5
        advisory = scenario.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
        assert advisory == (0,)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
