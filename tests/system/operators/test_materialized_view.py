"""The operator in the task process of ``airflow dags test``: a refresh never outlives its task (SIGTERM, SIGKILL,
execution_timeout), shows which DAG, task and try it is, and records skip_if_unchanged's fingerprint whatever
the view's name."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from devtools.harness.paths import AIRFLOW_BIN, REPO
from devtools.harness.refresh_probes import locks_on, make_slow_view, refresh_backends, wait_for
from devtools.harness.scenario import add_new_users, create_reference_scenario

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    import psycopg

    from devtools.harness.databases import Database


@pytest.fixture
def scenario(pg: psycopg.Connection, postgres_default: Database, airflow_db: Path) -> psycopg.Connection:
    create_reference_scenario(pg)
    add_new_users(pg)
    return pg


@pytest.mark.one_server  # the Variable key Airflow accepts, not the server, is under test
def test_skip_if_unchanged_on_a_non_ascii_view_name_under_airflow_dags_test(
    scenario: psycopg.Connection, database: Database, tmp_path: Path
) -> None:
    """The fingerprint's Variable key is valid for any name; a refresh that committed is never reported failed."""
    scenario.execute('CREATE MATERIALIZED VIEW "ventes_été" AS SELECT id, name FROM polls_user')
    scenario.execute('CREATE UNIQUE INDEX ON "ventes_été" (id)')
    folder = tmp_path / "dags"
    folder.mkdir()
    shutil.copy(REPO / "dags" / "matviews.py", folder)
    dag_id = f"ventes_ete_{database.name}"
    view = {"name": 'public."ventes_été"', "dag_id": dag_id, "schedule": None, "skip_if_unchanged": True}
    (folder / "matviews.yaml").write_text(yaml.safe_dump({"views": [view]}, allow_unicode=True), encoding="utf-8")
    env = {**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(folder), "AIRFLOW_CONN_POSTGRES_DEFAULT": database.uri}

    def dags_test() -> str:
        done = subprocess.run(
            [str(AIRFLOW_BIN), "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=300
        )
        return done.stdout + done.stderr

    scenario.execute("DELETE FROM polls_user WHERE id = 1")
    scenario.execute("SELECT pg_stat_force_next_flush()")  # publish this session's counts now, not ~10 s later
    scenario.execute("SELECT 1")
    output = dags_test()
    assert "state=success" in output, output[-4000:]
    assert scenario.execute('SELECT count(*) FROM "ventes_été"').fetchone() == (6,)
    output = dags_test()
    assert 'Skipped: none of the sources of public."ventes_été"' in output, output[-4000:]


SLOW_DAG = "matview.public.slow_view"


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
