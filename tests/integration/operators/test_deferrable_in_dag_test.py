"""``dag.test()`` runs a deferred refresh's trigger itself: no triggerer is needed, and none is asked for, even where
the API server would say that none is running."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from airflow_matview import RefreshMaterializedViewOperator
from devtools.harness.dag_runs import run_dag, task_result
from devtools.harness.health_server import HealthServer
from devtools.harness.scenario import create_reference_scenario

if TYPE_CHECKING:
    from pathlib import Path

    import psycopg

    from devtools.harness.databases import Database


@pytest.mark.one_server
def test_dag_test_refreshes_a_deferrable_view_without_a_triggerer(
    pg: psycopg.Connection, postgres_default: Database, airflow_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk import DAG

    create_reference_scenario(pg)
    with HealthServer() as api_server:
        api_server.triggerer = {"status": None, "latest_triggerer_heartbeat": None}
        monkeypatch.setenv("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", api_server.execution_api)
        with DAG("deferrable_in_dag_test", schedule=None) as dag:
            RefreshMaterializedViewOperator(task_id="refresh", view="public.polls_user_matt_view", deferrable=True)
        run = run_dag(dag)
    state, result = task_result(run)
    assert state == "success", result
    assert result["mode"] == "concurrently"
    assert api_server.asked == []
