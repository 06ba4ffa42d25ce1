"""Refresh history in real DAG runs (``dag.test()``) of the DAGs the factory builds: a success row on a worker and
deferred (the trigger run by ``dag.test()``), a failure row, each naming the DAG, the run, the try and what
started it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from airflow_matview.database import history
from airflow_matview.database.identifiers import parse_qualified_name
from airflow_matview.factory import build_dags
from devtools.harness.dag_runs import run_dag, task_result
from devtools.harness.health_server import HealthServer
from devtools.harness.scenario import create_reference_scenario

if TYPE_CHECKING:
    from pathlib import Path

    import psycopg

    from devtools.harness.databases import Database

pytestmark = pytest.mark.one_server  # the server side runs on every major in tests/integration/database/


@pytest.fixture
def scenario(pg: psycopg.Connection, postgres_default: Database, airflow_db: Path) -> psycopg.Connection:
    create_reference_scenario(pg)
    pg.execute("CREATE MATERIALIZED VIEW deferred_view AS SELECT id, age FROM polls_user")
    pg.execute("CREATE FUNCTION boom(a integer) RETURNS integer LANGUAGE sql AS 'SELECT 1 / (a - 99)'")
    pg.execute("CREATE MATERIALIZED VIEW fragile AS SELECT boom(age) AS x FROM polls_user")
    pg.execute("INSERT INTO polls_user VALUES (99, 'zed', 99)")
    pg.execute("CREATE SCHEMA ops")
    for statement in history.create_statements(parse_qualified_name("ops.matview_history")):
        pg.execute(statement)
    return pg


def test_history_rows_of_real_runs(scenario: psycopg.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    config = {
        "defaults": {"history": "ops.matview_history", "history_retention": "30d", "schedule": None, "retries": 0},
        "views": [
            {"name": "public.polls_user_matt_view"},
            {"name": "public.deferred_view", "deferrable": True},
            {"name": "public.fragile"},
        ],
    }
    dags = build_dags(config)
    runs: dict[str, Any] = {}
    with HealthServer() as api_server:
        monkeypatch.setenv("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", api_server.execution_api)
        for dag_id, dag in dags.items():
            runs[dag_id] = run_dag(dag)
    states = {dag_id: task_result(run)[0] for dag_id, run in runs.items()}
    assert states == {
        "matview.public.polls_user_matt_view": "success",
        "matview.public.deferred_view": "success",
        "matview.public.fragile": "failed",
    }
    found = scenario.execute(
        "SELECT view, outcome, mode, rows, dag_id, run_id, try_number, started_by, message "
        "FROM ops.matview_history ORDER BY id"
    ).fetchall()
    expected = [
        ("public.polls_user_matt_view", "success", "concurrently", 6),
        ("public.deferred_view", "success", "blocking", None),  # no index, never analyzed: no estimate
        ("public.fragile", "failed", "blocking", None),
    ]
    assert [row[:4] for row in found] == expected
    for view, _, _, _, dag_id, run_id, try_number, started_by, _ in found:
        assert (dag_id, run_id, try_number, started_by) == (f"matview.{view}", runs[dag_id].run_id, 1, "manual")
    assert "division by zero" in found[2][8]
