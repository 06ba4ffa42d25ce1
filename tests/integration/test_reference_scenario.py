"""The reference scenario: the shipped DAG file refreshes the view in a real DAG run (``dag.test()``). Under
``airflow dags test``: ``tests/system/test_reference_scenario.py``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from devtools.harness.dag_runs import DagBag, run_dag, task_result
from devtools.harness.paths import REPO
from devtools.harness.scenario import FIRST_USERS, NEW_USERS, add_new_users, create_reference_scenario, view_rows

if TYPE_CHECKING:
    from pathlib import Path

    import psycopg

    from devtools.harness.databases import Database


DAG_ID = "matview.public.polls_user_matt_view"


def test_view_shows_new_users_only_after_the_dag_runs(
    pg: psycopg.Connection, postgres_default: Database, airflow_db: Path
) -> None:
    create_reference_scenario(pg)
    add_new_users(pg)
    assert view_rows(pg) == FIRST_USERS

    dag = DagBag(dag_folder=str(REPO / "dags")).get_dag(DAG_ID)
    assert dag is not None
    state, result = task_result(run_dag(dag))

    assert state == "success"
    assert view_rows(pg) == FIRST_USERS + NEW_USERS
    assert result is not None
    assert result["view"] == "public.polls_user_matt_view"
    assert result["mode"] == "concurrently"
    assert result["seconds"] > 0
