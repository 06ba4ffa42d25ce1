"""The reference scenario under ``airflow dags test``: the shipped DAG file refreshes the view."""

from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING

import pytest

from devtools.harness.paths import AIRFLOW_BIN
from devtools.harness.scenario import FIRST_USERS, NEW_USERS, add_new_users, create_reference_scenario, view_rows

if TYPE_CHECKING:
    from pathlib import Path

    import psycopg

    from devtools.harness.databases import Database


DAG_ID = "matview.public.polls_user_matt_view"


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
