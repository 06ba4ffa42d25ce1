"""A refresh never overlaps itself, bounds its lock and statement waits, and survives faults (real server). That it
never outlives its task process: ``tests/system/operators/test_materialized_view.py``."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from airflow_matview import RefreshMaterializedViewOperator
from airflow_matview.database.locks import advisory_key
from airflow_matview.exceptions import MatviewOverlapError, MatviewRefreshError
from airflow_matview.version_compat import AirflowSkipException
from devtools.harness.pgcluster import PostgresCluster
from devtools.harness.refresh_probes import make_slow_view, refresh_backends, wait_for
from devtools.harness.scenario import FIRST_USERS, NEW_USERS, add_new_users, create_reference_scenario, view_rows

if TYPE_CHECKING:
    from collections.abc import Iterator

    from devtools.harness.databases import Database


def refresh(view: str = "polls_user_matt_view", **kwargs: Any) -> dict[str, Any]:
    return RefreshMaterializedViewOperator(task_id="refresh", view=view, **kwargs).execute({})  # type: ignore[arg-type]


@pytest.fixture
def scenario(pg: psycopg.Connection, postgres_default: Database) -> psycopg.Connection:
    create_reference_scenario(pg)
    add_new_users(pg)
    return pg


# --- no orphaned refreshes -------------------------------------------------------------------------------


def test_statement_timeout_from_execution_timeout_stops_the_server_side(scenario: psycopg.Connection) -> None:
    from datetime import timedelta

    make_slow_view(scenario, 30)
    started = time.monotonic()
    operator = RefreshMaterializedViewOperator(
        task_id="refresh", view="slow_view", execution_timeout=timedelta(seconds=2)
    )
    with pytest.raises(MatviewRefreshError, match=r"exceeded its execution_timeout \(2s, enforced by the server as"):
        operator.execute({})  # type: ignore[arg-type]
    assert time.monotonic() - started < 6
    assert not refresh_backends(scenario)


# --- bounded lock waits ----------------------------------------------------------------------------------


def test_lock_timeout_names_the_blocking_session_and_the_retry_succeeds(
    scenario: psycopg.Connection, database: Database
) -> None:
    with database.connect() as blocker:
        blocker.execute("SET application_name = 'quarterly-report'")
        blocker.execute("BEGIN")
        blocker.execute("SELECT count(*) FROM polls_user_matt_view")  # ACCESS SHARE, held until commit
        blocker_pid = blocker.info.backend_pid

        assert refresh(concurrently=True)["mode"] == "concurrently"  # readers do not block CONCURRENTLY

        started = time.monotonic()
        with pytest.raises(MatviewRefreshError) as error:
            refresh(concurrently=False, lock_timeout=2)
        waited = time.monotonic() - started
        message = str(error.value)
        assert 1.9 <= waited < 5, waited
        assert message.startswith(
            "Timed out after 2s (lock_timeout) waiting for a lock on public.polls_user_matt_view "
            f"(connection 'postgres_default') or a table it reads; blocked by pid {blocker_pid} "
            "(application_name 'quarterly-report', "
        )
        assert "state idle in transaction" in message
        assert "holding AccessShareLock on polls_user_matt_view" in message
        blocker.execute("COMMIT")

    assert refresh(concurrently=False, lock_timeout=2)["mode"] == "blocking"
    assert view_rows(scenario) == FIRST_USERS + NEW_USERS


def test_lock_timeout_on_a_source_table_names_the_session_that_holds_it(
    scenario: psycopg.Connection, database: Database
) -> None:
    with database.connect() as blocker:
        blocker.execute("SET application_name = 'schema-migration'")
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE polls_user IN ACCESS EXCLUSIVE MODE")  # as ALTER TABLE or TRUNCATE would
        with pytest.raises(MatviewRefreshError) as error:
            refresh(concurrently=True, lock_timeout=1)
        message = str(error.value)
        assert f"blocked by pid {blocker.info.backend_pid} (application_name 'schema-migration', " in message
        assert "holding AccessExclusiveLock on polls_user" in message
        blocker.execute("ROLLBACK")


# --- no overlap ------------------------------------------------------------------------------------------


def run_two_refreshes(on_overlap: str, lock_timeout: float = 30) -> list[Any]:
    """Start two refreshes of ``slow_view`` together; return each one's result or exception."""
    results: list[Any] = [None, None]
    barrier = threading.Barrier(2)

    def work(index: int) -> None:
        barrier.wait()
        try:
            results[index] = refresh("slow_view", on_overlap=on_overlap, lock_timeout=lock_timeout)
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=work, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def max_simultaneous_refreshes(pg: psycopg.Connection, stop: threading.Event, seen: list[int]) -> None:
    while not stop.is_set():
        seen.append(len(refresh_backends(pg)))
        time.sleep(0.05)


def test_on_overlap_wait_runs_the_refreshes_one_after_the_other(
    scenario: psycopg.Connection, database: Database
) -> None:
    make_slow_view(scenario, 1.5)
    seen: list[int] = []
    stop = threading.Event()
    with database.connect() as watcher:
        watch = threading.Thread(target=max_simultaneous_refreshes, args=(watcher, stop, seen))
        watch.start()
        started = time.monotonic()
        results = run_two_refreshes("wait")
        elapsed = time.monotonic() - started
        stop.set()
        watch.join()
    assert all(isinstance(result, dict) for result in results), results
    assert max(seen) == 1  # never two REFRESH statements at once
    assert elapsed >= 3  # the second waited for the first


@pytest.mark.parametrize("on_overlap", ["skip", "fail"])
def test_on_overlap_skip_and_fail_leave_the_running_refresh_alone(
    scenario: psycopg.Connection, on_overlap: str
) -> None:
    make_slow_view(scenario, 1.5)
    results = run_two_refreshes(on_overlap)
    finished = [result for result in results if isinstance(result, dict)]
    (other,) = [result for result in results if not isinstance(result, dict)]
    assert len(finished) == 1
    expected = AirflowSkipException if on_overlap == "skip" else MatviewOverlapError
    assert isinstance(other, expected), other
    assert re.fullmatch(
        r"(Skipped: )?public\.slow_view \(connection 'postgres_default'\) is already being refreshed by pid \d+ "
        r"\(application_name 'airflow-matview refresh', user postgres, state (active|idle in transaction), "
        r"transaction started [^,]+, holding the refresh lock \(an advisory lock\) of "
        r"slow_view, query started \d\d:\d\d:\d\d: '[^']*'\)"
        + (
            r" \(on_overlap=skip\)\."
            if on_overlap == "skip"
            else r"; on_overlap=fail, so this run fails \(not "
            r"retried\)\. The view is untouched\."
        ),
        str(other),
    ), str(other)


def test_on_overlap_wait_gives_up_after_lock_timeout(scenario: psycopg.Connection) -> None:
    make_slow_view(scenario, 4)
    results = run_two_refreshes("wait", lock_timeout=1)
    (error,) = [result for result in results if isinstance(result, Exception)]
    assert isinstance(error, MatviewRefreshError)
    assert str(error).startswith(
        "Another refresh of public.slow_view (connection 'postgres_default') was still running after "
        "lock_timeout (1s): pid "
    )


# --- database faults -------------------------------------------------------------------------------------


@pytest.fixture
def own_server(pg_server: PostgresCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[PostgresCluster]:
    """A server of our own, so that stopping it does not disturb other tests."""
    cluster = PostgresCluster(pg_server.bin_dir)
    cluster.start()
    monkeypatch.setenv("AIRFLOW_CONN_POSTGRES_DEFAULT", cluster.uri())
    yield cluster
    cluster.destroy()


def test_server_restart_mid_refresh_fails_clearly_and_the_retry_succeeds(own_server: PostgresCluster) -> None:
    with psycopg.connect(own_server.dsn(), autocommit=True) as setup:
        create_reference_scenario(setup)
        make_slow_view(setup, 3)
        add_new_users(setup)

    outcome: list[BaseException] = []
    worker = threading.Thread(target=lambda: outcome.extend(_failure_of(lambda: refresh("slow_view"))))
    worker.start()
    with psycopg.connect(own_server.dsn(), autocommit=True) as watcher:
        wait_for(lambda: refresh_backends(watcher), 10, "the refresh never started")
    own_server.stop("fast")
    worker.join()
    (error,) = outcome
    assert isinstance(error, MatviewRefreshError)
    assert str(error).startswith(
        "Lost the connection to PostgreSQL while refreshing slow_view (connection 'postgres_default'): "
    )
    assert "the view keeps its previous contents; Airflow will retry." in str(error)

    with pytest.raises(
        MatviewRefreshError, match=rf"^Cannot connect to PostgreSQL at 127\.0\.0\.1:{own_server.port} to "
    ):
        refresh("slow_view")  # the next try, while the server is still down

    own_server.start()
    with psycopg.connect(own_server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM slow_view").fetchone() == (5,)
        assert refresh("slow_view")["mode"] == "concurrently"
        assert conn.execute("SELECT count(*) FROM slow_view").fetchone() == (7,)


def test_a_dropped_connection_fails_clearly_and_keeps_the_rows(scenario: psycopg.Connection) -> None:
    make_slow_view(scenario, 3)
    scenario.execute("INSERT INTO polls_user VALUES (8, 'heidi', 70)")
    outcome: list[BaseException] = []
    worker = threading.Thread(target=lambda: outcome.extend(_failure_of(lambda: refresh("slow_view"))))
    worker.start()
    ((pid, _),) = [backend for backend in _wait_backends(scenario)]
    scenario.execute("SELECT pg_terminate_backend(%s)", [pid])
    worker.join()
    (error,) = outcome
    assert isinstance(error, MatviewRefreshError)
    assert "Lost the connection to PostgreSQL while refreshing slow_view" in str(error)
    assert scenario.execute("SELECT count(*) FROM slow_view").fetchone() == (7,)


def _wait_backends(pg: psycopg.Connection) -> list[tuple[int, str]]:
    wait_for(lambda: refresh_backends(pg), 10, "the refresh never started")
    return refresh_backends(pg)


def _failure_of(action: Any) -> list[BaseException]:
    try:
        action()
    except BaseException as exc:
        return [exc]
    return []


# --- whatever the connection and the role's defaults say ------------------------------------------------------


def test_a_connection_with_the_dictcursor_extra_still_works(
    scenario: psycopg.Connection, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_POSTGRES_DEFAULT", f"{database.uri}?cursor=dictcursor")
    result = refresh()
    assert (result["view"], result["rows"]) == ("public.polls_user_matt_view", 7)
    assert view_rows(scenario) == FIRST_USERS + NEW_USERS


@contextlib.contextmanager
def refresh_waiting_for_another(scenario: psycopg.Connection, database: Database) -> Iterator[list[Any]]:
    """A refresh (on_overlap=wait) started while another one holds the view's refresh lock.

    The body runs while it waits; on leaving, the other refresh ends and the list holds the waiting refresh's
    result or exception.
    """
    oid = scenario.execute("SELECT 'polls_user_matt_view'::regclass::oid").fetchone()[0]  # type: ignore[index]
    results: list[Any] = []

    def attempt() -> None:
        try:
            results.append(refresh(on_overlap="wait"))
        except Exception as exc:
            results.append(exc)

    with psycopg.connect(database.dsn) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_key(oid)])  # another refresh is running
        waiting = threading.Thread(target=attempt)
        waiting.start()
        wait_for(
            lambda: (
                scenario.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone()
                == (1,)
            ),
            10,
            "the refresh never waited for the lock",
        )
        yield results
        holder.commit()
        waiting.join()


def test_a_refresh_that_waited_reads_what_was_committed_while_it_waited(
    scenario: psycopg.Connection, database: Database
) -> None:
    """Even where the role's default isolation is REPEATABLE READ, whose snapshot would predate the wait."""
    scenario.execute(f"ALTER DATABASE \"{database.name}\" SET default_transaction_isolation = 'repeatable read'")
    with refresh_waiting_for_another(scenario, database) as results:
        scenario.execute("INSERT INTO polls_user VALUES (8, 'heidi', 70)")
    assert results[0]["rows"] == 8
    assert [name for _, name, _ in view_rows(scenario)][-1] == "heidi"


def test_timeouts_longer_than_postgresql_allows_are_capped(scenario: psycopg.Connection) -> None:
    """PostgreSQL's timeouts are int4 milliseconds (24.8 days): a 30-day timeout must not break every run."""
    month = timedelta(days=30)
    assert refresh(lock_timeout=month, execution_timeout=month)["rows"] == 7


def test_a_view_recreated_while_the_refresh_waited_fails_clearly_and_the_retry_succeeds(
    scenario: psycopg.Connection, database: Database
) -> None:
    with refresh_waiting_for_another(scenario, database) as results:
        scenario.execute("DROP MATERIALIZED VIEW polls_user_matt_view")  # a migration recreates the view
        scenario.execute("CREATE MATERIALIZED VIEW polls_user_matt_view AS SELECT * FROM polls_user WHERE age >= 25")
    (error,) = results
    assert isinstance(error, MatviewRefreshError)
    assert str(error).startswith(
        "public.polls_user_matt_view (connection 'postgres_default') was dropped or recreated while this refresh waited"
    )
    assert refresh()["mode"] == "blocking"  # the retry finds the new view by name
    assert view_rows(scenario) == FIRST_USERS + NEW_USERS
