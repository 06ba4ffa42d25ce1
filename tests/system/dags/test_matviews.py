"""The drop-in DAG file under Airflow's own command line: ``airflow dags list`` lists its DAGs, ``airflow dags
test`` runs them with a trigger form's JSON booleans, and a connection Airflow cannot read fails the task with why."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from typing import TYPE_CHECKING

import pytest

from devtools.harness.dag_files import dags_folder
from devtools.harness.paths import AIRFLOW_BIN, REPO
from devtools.harness.scenario import create_reference_scenario

if TYPE_CHECKING:
    from pathlib import Path

    import psycopg

    from devtools.harness.databases import Database


def test_airflow_cli_lists_the_example_config_dags(tmp_path: Path, airflow_db: Path) -> None:
    env = {**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags")}
    reserialized = subprocess.run([str(AIRFLOW_BIN), "dags", "reserialize"], env=env, capture_output=True, text=True)
    assert reserialized.returncode == 0, reserialized.stderr[-2000:]
    listed = subprocess.run(
        [str(AIRFLOW_BIN), "dags", "list", "--output", "plain"], env=env, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "matview.public.polls_user_matt_view" in listed.stdout


@pytest.mark.one_server
def test_airflow_dags_test_with_json_false_runs_a_plain_refresh(
    pg: psycopg.Connection, database: Database, airflow_db: Path, tmp_path: Path
) -> None:
    create_reference_scenario(pg)
    dag_id = f"form_{database.name}"
    folder = dags_folder(tmp_path, {"views": [{"name": "public.polls_user_matt_view", "dag_id": dag_id}]})
    env = {**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(folder), "AIRFLOW_CONN_POSTGRES_DEFAULT": database.uri}

    def dags_test(conf: str) -> subprocess.CompletedProcess[str]:
        command = [str(AIRFLOW_BIN), "dags", "test", dag_id, "-c", conf]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    done = dags_test('{"concurrently": false}')
    output = done.stdout + done.stderr
    assert "state=success" in output, output[-4000:]
    assert "Refreshing public.polls_user_matt_view (blocking): concurrently=False." in output, output[-4000:]
    done = dags_test('{"concurrently": "maybe"}')
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Invalid input for param concurrently: 'maybe' does not match '^(auto|true|false)$'" in output


def test_an_unreadable_connection_fails_the_task_with_the_reason_under_airflow_dags_test(
    airflow_db: Path, tmp_path: Path
) -> None:
    """At refresh time, in a real task run: the task log says what is wrong with the connection, not "not defined"."""
    folder = tmp_path / "dags"
    folder.mkdir()
    shutil.copy(REPO / "dags" / "matviews.py", folder)
    dag_id = f"unreadable_{uuid.uuid4().hex[:8]}"
    (folder / "matviews.yaml").write_text(
        f"views:\n  - name: public.v\n    dag_id: {dag_id}\n    conn_id: unreadable\n    retries: 0\n"
    )
    env = {
        **os.environ,
        "AIRFLOW__CORE__DAGS_FOLDER": str(folder),
        "AIRFLOW_CONN_UNREADABLE": '{"conn_type": "postgres", "host": "127.0.0.1", "password": "Sup3rSecret",',
    }
    done = subprocess.run(
        [str(AIRFLOW_BIN), "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=300
    )
    output = done.stdout + done.stderr
    assert "Sup3rSecret" not in output
    assert (
        "Cannot refresh public.v: Airflow connection 'unreadable' exists (environment variable "
        "AIRFLOW_CONN_UNREADABLE) but cannot be read: it is not valid JSON (Expecting property name enclosed in "
        "double quotes at line 1 column"
    ) in " ".join(output.split()), output[-4000:]
    assert "isn't defined" not in output and "is not defined" not in output
