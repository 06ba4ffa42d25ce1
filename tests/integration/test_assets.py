"""Assets and lineage with real Airflow runs: the asset event of a refresh, a chain of views, the trigger form's
params, and OpenLineage's inputs and outputs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from airflow_matview.assets import matview_asset_uri
from airflow_matview.database.identifiers import QualifiedName
from airflow_matview.factory import build_dags
from devtools.harness.dag_runs import asset_events, dags_due_on_assets, register, run_dag, task_result
from devtools.harness.databases import Database, publish_statistics
from devtools.harness.scenario import add_new_users, create_reference_scenario

if TYPE_CHECKING:
    from pathlib import Path

    import psycopg


VIEW_URI = matview_asset_uri("postgres_default", QualifiedName("public", "polls_user_matt_view"))


@pytest.fixture
def scenario(pg: psycopg.Connection, postgres_default: Database, airflow_db: Path) -> psycopg.Connection:
    create_reference_scenario(pg)
    add_new_users(pg)
    publish_statistics(pg)
    return pg


def test_a_refresh_emits_an_asset_event_with_its_metadata(scenario: psycopg.Connection) -> None:
    dag = build_dags({"views": [{"name": "public.polls_user_matt_view", "schedule": None}]})[
        "matview.public.polls_user_matt_view"
    ]
    run = run_dag(dag)
    state, result = task_result(run)
    assert state == "success"
    events = [event for event in asset_events(VIEW_URI) if event["run_id"] == run.run_id]
    assert events == [
        {
            "view": "public.polls_user_matt_view",
            "rows": result["rows"],
            "seconds": result["seconds"],
            "mode": "concurrently",
            "run_id": run.run_id,
        }
    ]
    assert result["rows"] == 7


def test_trigger_form_params_override_the_config_for_one_run(scenario: psycopg.Connection) -> None:
    (dag,) = build_dags({"views": [{"name": "public.polls_user_matt_view", "schedule": None}]}).values()
    state, result = task_result(run_dag(dag))
    assert (state, result["mode"]) == ("success", "concurrently")
    # (In this order: Airflow keeps a run's conf in the DAG's Param objects, which only matters in one process.)
    state, result = task_result(run_dag(dag, run_conf={"concurrently": "false", "analyze": True}))
    assert state == "success"
    assert (result["mode"], result["reason"], result["rows"]) == ("blocking", "concurrently=False", 7)


def test_a_chain_refreshes_the_downstream_view_after_the_upstream_one(
    scenario: psycopg.Connection, database: Database
) -> None:
    rollup = f"rollup_{database.name}"  # a DAG of its own: the metadata DB is shared by the whole session
    scenario.execute("CREATE SCHEMA reporting")
    scenario.execute(
        "CREATE MATERIALIZED VIEW reporting.user_rollup AS SELECT count(*) AS users, max(age) AS oldest "
        "FROM polls_user_matt_view"
    )
    dags = build_dags(
        {
            "views": [
                {"name": "public.polls_user_matt_view", "schedule": "@daily"},
                {"name": "reporting.user_rollup", "after": ["public.polls_user_matt_view"], "dag_id": rollup},
            ]
        }
    )
    upstream, downstream = dags["matview.public.polls_user_matt_view"], dags[rollup]
    register(upstream, downstream)
    assert rollup not in dags_due_on_assets()

    assert task_result(run_dag(upstream))[0] == "success"

    assert rollup in dags_due_on_assets()  # the scheduler's own query: the downstream DAG is due now
    assert scenario.execute("SELECT users FROM reporting.user_rollup").fetchone() == (5,)
    assert task_result(run_dag(downstream))[0] == "success"
    assert scenario.execute("SELECT users, oldest FROM reporting.user_rollup").fetchone() == (7, 58)


def test_openlineage_reports_the_view_as_output_and_its_tables_as_inputs(scenario: psycopg.Connection) -> None:
    from airflow_matview import RefreshMaterializedViewOperator

    scenario.execute("CREATE VIEW adults AS SELECT * FROM polls_user WHERE age >= 18")
    scenario.execute("CREATE MATERIALIZED VIEW adult_names AS SELECT name FROM adults")
    operator = RefreshMaterializedViewOperator(task_id="refresh", view="public.adult_names")
    assert operator.get_openlineage_facets_on_complete(None) is None  # nothing ran yet
    operator.execute({})  # type: ignore[arg-type]

    lineage = operator.get_openlineage_facets_on_complete(None)

    database = scenario.info.dbname
    namespace = f"postgres://127.0.0.1:{scenario.info.port}"
    assert [(d.namespace, d.name) for d in lineage.outputs] == [(namespace, f"{database}.public.adult_names")]
    assert [d.name for d in lineage.inputs] == [f"{database}.public.polls_user"]
