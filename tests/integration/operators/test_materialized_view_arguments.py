"""Hand-written DAGs in real Airflow runs: the operator reads its templated flags as the config file does, takes
JSON booleans from params, and refuses a rendered connection URI without repeating it."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pytest
from airflow.sdk import DAG, Param

from airflow_matview import RefreshMaterializedViewOperator
from airflow_matview.exceptions import MatviewSetupError
from airflow_matview.factory import build_dags
from devtools.harness.dag_runs import run_dag, task_result
from devtools.harness.scenario import add_new_users, create_reference_scenario

if TYPE_CHECKING:
    from pathlib import Path

    import psycopg

    from devtools.harness.databases import Database


SECRET_URI = "postgresql://admin:hunter2-secret@db.example:5432/shop"


def operator(**kwargs: Any) -> RefreshMaterializedViewOperator:
    return RefreshMaterializedViewOperator(task_id="refresh", **{"view": "public.polls_user_matt_view", **kwargs})


@pytest.fixture
def scenario(pg: psycopg.Connection, postgres_default: Database, airflow_db: Path) -> psycopg.Connection:
    create_reference_scenario(pg)
    add_new_users(pg)
    return pg


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


def test_a_templated_connection_uri_is_refused_at_run_time_and_never_repeated(scenario: psycopg.Connection) -> None:
    task = operator(postgres_conn_id="{{ params.conn }}")
    assert task.outlets == []  # no asset for a templated connection: nothing to leak into the UI
    task.postgres_conn_id = SECRET_URI  # as rendered from a param
    with pytest.raises(MatviewSetupError) as raised:
        task.execute({})  # type: ignore[arg-type]
    assert "hunter2" not in str(raised.value)
    assert "postgres_conn_id (rendered): this looks like a connection URI" in str(raised.value)
