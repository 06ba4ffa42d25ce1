"""The reference scenario, end to end: the shipped DAG file refreshes the view in a real Airflow run."""

from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING

import pytest

from devtools.harness.dag_runs import DagBag, run_dag, task_result
from devtools.harness.scenario import FIRST_USERS, NEW_USERS, add_new_users, create_reference_scenario, view_rows
from tests.conftest import AIRFLOW_BIN, REPO

if TYPE_CHECKING:
    from pathlib import Path

    import psycopg

    from tests.conftest import Database

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


@pytest.mark.one_server
def test_airflow_dags_test_cli_refreshes_the_view(
    pg: psycopg.Connection, postgres_default: Database, airflow_db: Path
) -> None:
    create_reference_scenario(pg)
    add_new_users(pg)

    done = subprocess.run(
        [str(AIRFLOW_BIN), "dags", "test", DAG_ID], capture_output=True, text=True, env=os.environ, timeout=180
    )

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Refreshed public.polls_user_matt_view (concurrently)" in done.stdout + done.stderr
    assert view_rows(pg) == FIRST_USERS + NEW_USERS
