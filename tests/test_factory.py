"""The DAG factory and the drop-in DAG file, parsed by a real Airflow DagBag and CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
import yaml

from airflow_matview.factory import build_dags
from devtools.harness.dag_runs import DagBag
from devtools.harness.scenario import create_reference_scenario
from tests.conftest import AIRFLOW_BIN, REPO

if TYPE_CHECKING:
    from pathlib import Path

    import psycopg

    from tests.conftest import Database

THREE_VIEWS = {
    "defaults": {"conn_id": "warehouse", "retries": 3, "retry_delay": "1m", "tags": ["reporting"]},
    "views": [
        {"name": "public.polls_user_matt_view", "schedule": "*/5 * * * *"},
        {"name": 'public."Daily Totals"', "schedule": None, "concurrently": False, "analyze": True},
        {"name": "reporting.user_rollup", "after": ["public.polls_user_matt_view"], "dag_id": "rollup"},
    ],
}


def dags_folder(tmp_path: Path, config: dict[str, object] | str) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir()
    shutil.copy(REPO / "dags" / "matviews.py", folder)
    text = config if isinstance(config, str) else yaml.safe_dump(config)
    (folder / "matviews.yaml").write_text(text)
    return folder


def test_one_dag_per_view_with_the_promised_settings() -> None:
    dags = build_dags(THREE_VIEWS)
    assert sorted(dags) == ["matview.public.Daily_Totals", "matview.public.polls_user_matt_view", "rollup"]

    dag = dags["matview.public.polls_user_matt_view"]
    assert (dag.catchup, dag.max_active_runs) == (False, 1)
    assert dag.tags == {"matview", "reporting"}
    assert dag.schedule == "*/5 * * * *"
    assert "`public.polls_user_matt_view`" in (dag.doc_md or "")
    assert "`warehouse`" in (dag.doc_md or "")
    assert "`*/5 * * * *`" in (dag.doc_md or "")
    assert dag.params["concurrently"] == "auto"
    assert dag.params["analyze"] is False
    (task,) = dag.tasks
    assert task.task_id == "refresh"
    assert (task.retries, task.retry_delay) == (3, timedelta(minutes=1))
    assert task.execution_timeout == timedelta(hours=1)

    manual = dags["matview.public.Daily_Totals"]
    assert manual.schedule is None
    assert "manual runs only" in (manual.doc_md or "")
    assert (manual.params["concurrently"], manual.params["analyze"]) == ("false", True)


def test_a_task_process_builds_only_its_own_dag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "rollup")
    assert list(build_dags(THREE_VIEWS)) == ["rollup"]
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "some_other_files_dag")
    assert len(build_dags(THREE_VIEWS)) == 3


def test_dagbag_over_the_dags_folder_shows_one_dag_per_view(tmp_path: Path) -> None:
    bag = DagBag(dag_folder=str(dags_folder(tmp_path, THREE_VIEWS)))
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["matview.public.Daily_Totals", "matview.public.polls_user_matt_view", "rollup"]


def test_a_bad_file_is_one_clear_import_error_and_no_partial_dags(tmp_path: Path) -> None:
    config = yaml.safe_dump({"views": [{"name": "public.good"}, {"name": "public.bad", "schedule": "often"}]})
    bag = DagBag(dag_folder=str(dags_folder(tmp_path, config)))
    assert bag.dag_ids == []
    ((path, error),) = bag.import_errors.items()
    assert path.endswith("matviews.py")
    assert "views[1] (public.bad): schedule: 'often' is not a cron expression or preset" in error
    assert "airflow_matview/" not in error  # no traceback into our internals


def test_airflow_cli_lists_the_example_config_dags(tmp_path: Path, airflow_db: Path) -> None:
    env = {**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags")}
    reserialized = subprocess.run([str(AIRFLOW_BIN), "dags", "reserialize"], env=env, capture_output=True, text=True)
    assert reserialized.returncode == 0, reserialized.stderr[-2000:]
    listed = subprocess.run(
        [str(AIRFLOW_BIN), "dags", "list", "--output", "plain"], env=env, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "matview.public.polls_user_matt_view" in listed.stdout


PARSE_PROBE = textwrap.dedent(
    """
    import runpy, sys, time
    events = []
    watched = ("socket.connect", "sqlite3.connect", "socket.getaddrinfo")
    sys.addaudithook(lambda event, args: events.append(event) if event in watched else None)
    started = time.perf_counter()
    module = runpy.run_path(sys.argv[1])
    seconds = time.perf_counter() - started
    dags = [name for name in module if name.startswith("matview.")]
    print(len(dags), len(events), f"{seconds:.3f}", sorted(set(events)))
    """
)


@pytest.mark.one_server
def test_parsing_1000_views_touches_no_database(tmp_path: Path, database: Database) -> None:
    config = {"views": [{"name": f"public.view_{index:04d}"} for index in range(1000)]}
    folder = dags_folder(tmp_path, config)
    log = database.server.log_file
    connections_before = log.read_text().count(f"database={database.name}")
    env = {
        **os.environ,
        "AIRFLOW_CONN_POSTGRES_DEFAULT": database.uri,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://nobody@127.0.0.1:9/none",  # any metadata-DB use fails
    }
    started = time.perf_counter()
    probe = subprocess.run(
        [sys.executable, "-c", PARSE_PROBE, str(folder / "matviews.py")], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    assert probe.returncode == 0, probe.stderr[-3000:]
    dags, events, parse_seconds, kinds = probe.stdout.splitlines()[-1].split(maxsplit=3)
    assert (dags, events) == ("1000", "0"), kinds
    time.sleep(0.2)
    assert log.read_text().count(f"database={database.name}") == connections_before
    print(f"1000 views: parsed in {parse_seconds}s ({wall:.2f}s with interpreter start)")
    assert float(parse_seconds) < 10


def test_a_name_with_a_newline_is_one_import_error_line_and_no_dag(tmp_path: Path) -> None:
    config = yaml.safe_dump({"views": [{"name": "public.good"}, {"name": 'public."bad\nname"'}]})
    bag = DagBag(dag_folder=str(dags_folder(tmp_path, config)))
    assert bag.dag_ids == []
    ((_path, error),) = bag.import_errors.items()
    problems = [line for line in error.splitlines() if line.startswith("  - ")]
    assert problems == [
        "  - views[1] (public.\"bad\\nname\"): name: 'public.\"bad\\nname\"' holds the control character '\\n': "
        "PostgreSQL accepts it in a quoted name, but it would break the listings, DAG docs and logs that show the "
        "name; rename the view in PostgreSQL (ALTER MATERIALIZED VIEW ... RENAME TO ...) and write its new name here"
    ], error


def test_the_trigger_forms_concurrently_suggests_each_choice_once_and_takes_json_booleans() -> None:
    """The form renders the serialized schema: a text field with the suggestions auto/true/false (a select would
    list its enum, true and false twice); triggering validates the run's conf against the same schema."""
    from airflow.serialization.serialized_objects import DagSerialization

    dag = build_dags({"views": [{"name": "public.v", "concurrently": False}]})["matview.public.v"]
    served = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    param = served.params.get_param("concurrently")
    assert param.value == "false"
    assert "enum" not in param.schema
    assert param.schema["examples"] == ["auto", "true", "false"]
    for value in ("auto", "true", "false", True, False):
        assert served.params.deep_merge({"concurrently": value}).validate()["concurrently"] == value
    for value, reason in [
        ("maybe", "'maybe' does not match '^(auto|true|false)$'"),
        ("TRUE", "'TRUE' does not match '^(auto|true|false)$'"),
        (1, "1 is not of type 'string', 'boolean'"),
        (None, "None is not of type 'string', 'boolean'"),
    ]:
        with pytest.raises(Exception, match="Invalid input for param concurrently") as raised:
            served.params.deep_merge({"concurrently": value}).validate()
        assert reason in str(raised.value)


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
