"""Hand-written DAGs: the operator reads its flags and durations as the config file does, refuses a connection URI
without repeating it, and records skip_if_unchanged's fingerprint whatever the view's name (real Airflow runs)."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from airflow.sdk import DAG, Param

from airflow_matview import RefreshMaterializedViewOperator
from airflow_matview.exceptions import MatviewSetupError
from airflow_matview.factory import build_dags
from devtools.harness.dag_runs import run_dag, task_result
from devtools.harness.scenario import add_new_users, create_reference_scenario
from tests.conftest import AIRFLOW_BIN, REPO

if TYPE_CHECKING:
    from pathlib import Path

    import psycopg

    from tests.conftest import Database

SECRET_URI = "postgresql://admin:hunter2-secret@db.example:5432/shop"


def operator(**kwargs: Any) -> RefreshMaterializedViewOperator:
    return RefreshMaterializedViewOperator(task_id="refresh", **{"view": "public.polls_user_matt_view", **kwargs})


@pytest.fixture
def scenario(pg: psycopg.Connection, postgres_default: Database, airflow_db: Path) -> psycopg.Connection:
    create_reference_scenario(pg)
    add_new_users(pg)
    return pg


def test_text_durations_and_flags_read_as_in_the_config() -> None:
    assert operator(lock_timeout="5m").lock_timeout == timedelta(minutes=5)
    assert operator(lock_timeout="90").lock_timeout == timedelta(seconds=90)
    assert operator(lock_timeout=None).lock_timeout is None
    for key, value, expected in [
        ("lock_timeout", "soon", "lock_timeout: 'soon' is not a duration; use 500ms, 30s, 5m, 1h, 1d or a number"),
        ("lock_timeout", 0, "lock_timeout: 0 is less than a millisecond"),
        ("with_data", "no", "with_data: 'no' is not allowed; use true or false."),
        ("with_data", 1, "with_data: 1 is not allowed; use true or false."),
        ("analyze", "yes", "analyze: 'yes' is not allowed; use true or false."),
    ]:
        with pytest.raises(MatviewSetupError) as raised:
            operator(**{key: value})
        assert str(raised.value).startswith(
            f"Cannot refresh public.polls_user_matt_view (connection 'postgres_default'): {expected}"
        ), str(raised.value)
        assert "\n" not in str(raised.value)


def test_with_data_false_as_text_from_params_empties_the_view(scenario: psycopg.Connection) -> None:
    with DAG(
        f"with_data_text_{os.getpid()}",
        schedule=None,
        start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
        params={"with_data": Param("false", type="string")},
    ) as dag:
        operator(with_data="{{ params.with_data }}", concurrently="false")
    state, result = task_result(run_dag(dag))
    assert (state, result["mode"]) == ("success", "no_data")
    row = scenario.execute("SELECT relispopulated FROM pg_class WHERE relname = 'polls_user_matt_view'").fetchone()
    assert row == (False,)


def test_the_concurrently_param_accepts_json_booleans(scenario: psycopg.Connection) -> None:
    (dag,) = build_dags({"views": [{"name": "public.polls_user_matt_view", "schedule": None}]}).values()
    state, result = task_result(run_dag(dag, run_conf={"concurrently": False}))
    assert (state, result["mode"], result["reason"]) == ("success", "blocking", "concurrently=False")
    state, result = task_result(run_dag(dag, run_conf={"concurrently": True}))
    assert (state, result["mode"]) == ("success", "concurrently")
    assert dag.params.validate() is not None


def test_a_connection_uri_is_refused_and_never_repeated() -> None:
    for conn_id in (SECRET_URI, "host=db.example password=hunter2-secret", "admin:hunter2-secret@db.example"):
        with pytest.raises(MatviewSetupError) as raised:
            operator(postgres_conn_id=conn_id)
        assert "hunter2" not in str(raised.value)
        assert "looks like a connection URI or DSN (not repeated here, as it may hold a password)" in str(raised.value)


def test_a_templated_connection_uri_is_refused_at_run_time_and_never_repeated(scenario: psycopg.Connection) -> None:
    task = operator(postgres_conn_id="{{ params.conn }}")
    assert task.outlets == []  # no asset for a templated connection: nothing to leak into the UI
    task.postgres_conn_id = SECRET_URI  # as rendered from a param
    with pytest.raises(MatviewSetupError) as raised:
        task.execute({})  # type: ignore[arg-type]
    assert "hunter2" not in str(raised.value)
    assert "postgres_conn_id (rendered): this looks like a connection URI" in str(raised.value)


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
