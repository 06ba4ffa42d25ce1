"""The refresh history's keys (config and operator) and what a run's history row says started it."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_matview import RefreshMaterializedViewOperator
from airflow_matview.assets import SCHEME, SOURCES_SCHEME
from airflow_matview.config import load_config
from airflow_matview.exceptions import InvalidConfigFileError, MatviewSetupError
from airflow_matview.factory import build_dags
from airflow_matview.refresh_task import SOURCES_URI_PREFIX, VIEW_URI_PREFIX, history_target, started_by


def problems_of(config: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidConfigFileError) as error:
        load_config(config)
    return error.value.problems


def test_history_keys_reach_the_operator() -> None:
    config = {"defaults": {"history": "ops.matview_history", "history_retention": "90d"}, "views": [{"name": "a.b"}]}
    (dag,) = build_dags(config).values()
    task = dag.get_task("refresh")
    assert (task.history, task.history_retention) == ("ops.matview_history", timedelta(days=90))


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        ({"history": "matview_history"}, "history: 'matview_history' has no schema; use schema.table"),
        ({"history": 3}, "history: 3 is not a table name; use schema.table"),
        ({"history": "ops." + "t" * 60}, "leaves no room for the view beside it"),
        ({"history_retention": "30d"}, "history_retention: the view records no history; set history"),
    ],
)
def test_bad_history_keys_in_one_line(view: dict[str, Any], expected: str) -> None:
    (problem,) = problems_of({"views": [{"name": "a.b", **view}]})
    assert expected in problem
    assert "\n" not in problem


def test_the_operator_refuses_a_history_without_schema() -> None:
    with pytest.raises(MatviewSetupError, match=r"history: 'h' has no schema"):
        RefreshMaterializedViewOperator(task_id="r", view="a.b", history="h")


def test_the_asset_prefixes_are_the_assets_schemes() -> None:
    prefixes = (VIEW_URI_PREFIX, SOURCES_URI_PREFIX)
    assert prefixes == (f"{SCHEME}://", f"{SOURCES_SCHEME}://")


def _context(run_type: str, *uris: str) -> dict[str, Any]:
    from airflow.sdk import Asset

    return {
        "dag_run": SimpleNamespace(run_type=run_type),
        # Iterated for its keys, the assets (a list: an Asset cannot be a dict key on Airflow 3.1, it hashes a dict).
        "triggering_asset_events": [Asset(uri=uri) for uri in uris],
        "ti": SimpleNamespace(dag_id="d", run_id="r", try_number=3),
    }


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (_context("scheduled"), "schedule"),
        (_context("manual"), "manual"),
        (_context("backfill"), "manual"),
        (_context("asset_triggered", "matview-sources://pg/public/v"), "on_change"),
        (_context("asset_triggered", "matview://pg/public/up"), "chain"),
        (_context("asset_triggered", "s3://bucket/key"), "asset"),
        (_context("asset_materialization"), "asset_materialization"),
        ({}, None),
    ],
)
def test_what_started_a_refresh(context: dict[str, Any], expected: str | None) -> None:
    assert started_by(context) == expected


def test_the_history_target_names_the_run() -> None:
    target = history_target("ops.h", 60.0, _context("scheduled"))
    assert target is not None
    assert (target.started_by, target.dag_id, target.run_id, target.try_number) == ("schedule", "d", "r", 3)
    assert history_target(None, None, _context("scheduled")) is None


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        ({"after": ["public.up"]}, "chain"),
        ({"on_change": True}, "on_change"),
        ({"after": ["public.up"], "on_change": True}, "asset"),
    ],
)
def test_what_started_an_asset_run_whose_events_are_not_in_the_context(view: dict[str, Any], expected: str) -> None:
    """In the triggerer the run's asset events are not in the context: the DAG's schedule says, when it can."""
    config = {"views": [{"name": "public.up"}, {"name": "public.down", **view}]}
    from airflow.serialization.serialized_objects import DagSerialization

    dag = build_dags(config)["matview.public.down"]
    deserialized = DagSerialization.from_dict(DagSerialization.to_dict(dag))  # as the triggerer has it
    for found in (dag, deserialized):
        context = {"dag": found, "dag_run": SimpleNamespace(run_type="asset_triggered"), "triggering_asset_events": {}}
        assert started_by(context) == expected
