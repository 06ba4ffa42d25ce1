"""A refresh never outlives its task, never overlaps itself, bounds its lock waits and survives faults."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import yaml

from airflow_matview import RefreshMaterializedViewOperator
from airflow_matview.database.locks import advisory_key
from airflow_matview.exceptions import MatviewOverlapError, MatviewRefreshError
from airflow_matview.version_compat import AirflowSkipException
from devtools.harness.pgcluster import PostgresCluster
from devtools.harness.scenario import FIRST_USERS, NEW_USERS, add_new_users, create_reference_scenario, view_rows
from tests.conftest import AIRFLOW_BIN, REPO

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.conftest import Database

SLOW_DAG = "matview.public.slow_view"


def refresh(view: str = "polls_user_matt_view", **kwargs: Any) -> dict[str, Any]:
    return RefreshMaterializedViewOperator(task_id="refresh", view=view, **kwargs).execute({})  # type: ignore[arg-type]


def make_slow_view(pg: psycopg.Connection, seconds: float) -> None:
    """``slow_view`` (over polls_user, unique index) takes ``seconds`` to refresh: its query sleeps once."""
    pg.execute("CREATE TABLE refresh_delay (seconds float8)")
    pg.execute("INSERT INTO refresh_delay VALUES (0)")
    pg.execute(
        "CREATE MATERIALIZED VIEW slow_view AS SELECT id, name FROM polls_user "
        "WHERE (SELECT pg_sleep(seconds)::text FROM refresh_delay) = ''"
    )
    pg.execute("CREATE UNIQUE INDEX ON slow_view (id)")
    pg.execute("UPDATE refresh_delay SET seconds = %s", [seconds])


def refresh_backends(pg: psycopg.Connection) -> list[tuple[int, str]]:
    return pg.execute(
        "SELECT pid, application_name FROM pg_stat_activity "
        "WHERE state = 'active' AND query LIKE 'REFRESH MATERIALIZED VIEW%%' AND pid <> pg_backend_pid()"
    ).fetchall()


def locks_on(pg: psycopg.Connection, relname: str) -> int:
    row = pg.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        "WHERE c.relname = %s AND l.pid <> pg_backend_pid()",
        [relname],
    ).fetchone()
    return int(row[0]) if row else 0


def wait_for(condition: Any, timeout: float, message: str) -> float:
    """Poll ``condition`` until true; return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{message} (waited {timeout}s)")


@pytest.fixture
def scenario(pg: psycopg.Connection, postgres_default: Database) -> psycopg.Connection:
    create_reference_scenario(pg)
    add_new_users(pg)
    return pg


# --- no orphaned refreshes -------------------------------------------------------------------------------


@pytest.fixture
def slow_dag_run(scenario: psycopg.Connection, database: Database, tmp_path: Path, airflow_db: Path) -> Iterator[Any]:
    """Start ``airflow dags test`` of a DAG whose refresh takes 30 s; yield a starter and clean up."""
    make_slow_view(scenario, 30)
    scenario.execute("INSERT INTO polls_user VALUES (8, 'heidi', 70)")  # a refresh would show 8 rows
    processes: list[subprocess.Popen[str]] = []

    def start(execution_timeout: str | None = None) -> subprocess.Popen[str]:
        folder = tmp_path / "dags"
        folder.mkdir()
        shutil.copy(REPO / "dags" / "matviews.py", folder)
        view: dict[str, object] = {"name": "public.slow_view", "retries": 0, "execution_timeout": execution_timeout}
        (folder / "matviews.yaml").write_text(yaml.safe_dump({"defaults": {"schedule": None}, "views": [view]}))
        env = {**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(folder), "AIRFLOW_CONN_POSTGRES_DEFAULT": database.uri}
        process = subprocess.Popen(
            [str(AIRFLOW_BIN), "dags", "test", SLOW_DAG],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        processes.append(process)
        wait_for(lambda: refresh_backends(scenario), 60, "the refresh never started")
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


def assert_refresh_ends_soon(pg: psycopg.Connection, since: float, what: str) -> float:
    wait_for(
        lambda: not refresh_backends(pg) and locks_on(pg, "slow_view") == 0, 10, f"REFRESH still running after {what}"
    )
    seconds = time.monotonic() - since
    print(f"{what}: REFRESH gone and locks released {seconds:.2f}s later")
    assert pg.execute("SELECT count(*) FROM slow_view").fetchone() == (7,)  # previous contents intact
    return seconds


def test_refresh_shows_dag_task_and_try_in_application_name(scenario: psycopg.Connection, slow_dag_run: Any) -> None:
    slow_dag_run()
    ((_, application_name),) = refresh_backends(scenario)
    assert application_name == f"airflow-matview {SLOW_DAG}.refresh try 1"


def test_sigterm_to_the_task_cancels_the_refresh(scenario: psycopg.Connection, slow_dag_run: Any) -> None:
    process = slow_dag_run()
    killed = time.monotonic()
    os.kill(process.pid, signal.SIGTERM)
    assert assert_refresh_ends_soon(scenario, killed, "SIGTERM") < 10
    output, _ = process.communicate(timeout=60)
    assert "was cancelled (the task was stopped, timed out or was marked failed)" in output


def test_sigkill_of_the_task_process_ends_the_refresh_on_the_server(
    scenario: psycopg.Connection, slow_dag_run: Any
) -> None:
    process = slow_dag_run()
    killed = time.monotonic()
    os.killpg(process.pid, signal.SIGKILL)
    assert assert_refresh_ends_soon(scenario, killed, "SIGKILL") < 10


def test_execution_timeout_cancels_the_refresh(scenario: psycopg.Connection, slow_dag_run: Any) -> None:
    process = slow_dag_run(execution_timeout="4s")
    deadline = time.monotonic() + 4  # the latest the timeout can fire: the task started before the refresh
    wait_for(lambda: not refresh_backends(scenario), 20, "REFRESH still running after execution_timeout")
    assert_refresh_ends_soon(scenario, deadline, "execution_timeout")
    output, _ = process.communicate(timeout=60)
    assert (
        "airflow_matview.exceptions.MatviewTimeoutError: The refresh of public.slow_view (connection "
        "'postgres_default') exceeded its execution_timeout (4s) and was cancelled; PostgreSQL rolled it back, so the "
        "view keeps its previous contents." in output
    )
    assert "error ignored in rollback" not in output  # psycopg's warning when a transaction is abandoned mid-query
    assert "During handling of the above exception" not in output


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
