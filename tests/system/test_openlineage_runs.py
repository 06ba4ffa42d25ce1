"""OpenLineage in a real Airflow run (``airflow dags test`` in a subprocess, the OpenLineage provider with a file
transport): START and COMPLETE of a refresh on a worker and of a deferred one, FAIL of a failed one, with the view
as output, the relations it reads (through a plain view; another materialized view in a chain; a partitioned
table, named by its parent) as inputs, and their columns as schema facets."""

from __future__ import annotations

import json
import os
import subprocess
from typing import TYPE_CHECKING, Any

import pytest

from devtools.harness.paths import AIRFLOW_BIN
from devtools.harness.scenario import create_reference_scenario

if TYPE_CHECKING:
    from pathlib import Path

    import psycopg

    from devtools.harness.databases import Database

pytestmark = pytest.mark.one_server  # OpenLineage's events, not the server, are under test

DAG_FILE = """
from airflow.sdk import DAG

from airflow_matview import RefreshMaterializedViewOperator

with DAG("matview_lineage", schedule=None):
    RefreshMaterializedViewOperator(task_id="on_worker", view="public.polls_user_matt_view")
    RefreshMaterializedViewOperator(task_id="deferred", view="public.through_view", deferrable=True)
    RefreshMaterializedViewOperator(task_id="failed", view="public.fragile", retries=0)
    RefreshMaterializedViewOperator(task_id="chained", view="public.chained")
    RefreshMaterializedViewOperator(task_id="partitioned", view="public.by_region")
"""


def events(path: Path) -> list[dict[str, Any]]:
    """The run events the file transport wrote (one JSON document per line, or one file per event)."""
    files = sorted(path.parent.glob(path.name + "*"))
    found = []
    for file in files:
        for line in file.read_text().splitlines():
            if line.strip():
                found.append(json.loads(line))
    return found


def test_start_complete_and_fail_with_datasets_and_schemas(
    pg: psycopg.Connection, database: Database, airflow_db: Path, tmp_path: Path
) -> None:
    create_reference_scenario(pg)
    pg.execute("CREATE VIEW adults AS SELECT id, age FROM polls_user WHERE age >= 18")
    pg.execute("CREATE MATERIALIZED VIEW through_view AS SELECT id, age FROM adults")
    pg.execute("CREATE FUNCTION boom(a integer) RETURNS integer LANGUAGE sql AS 'SELECT 1 / (a - 99)'")
    pg.execute("CREATE MATERIALIZED VIEW fragile AS SELECT boom(age) AS x FROM polls_user")
    pg.execute("INSERT INTO polls_user VALUES (99, 'zed', 99)")
    pg.execute("CREATE MATERIALIZED VIEW chained AS SELECT count(*) AS n FROM polls_user_matt_view")
    pg.execute("CREATE TABLE events (id integer, region text) PARTITION BY LIST (region)")
    pg.execute("CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu')")
    pg.execute("CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us')")
    pg.execute("INSERT INTO events VALUES (1, 'eu'), (2, 'us'), (3, 'us')")
    pg.execute("CREATE MATERIALIZED VIEW by_region AS SELECT region, count(*) AS n FROM events GROUP BY region")
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "lineage_dag.py").write_text(DAG_FILE)
    log_file = tmp_path / "lineage" / "events.json"
    log_file.parent.mkdir()
    env = {
        **os.environ,
        "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "dags"),
        "AIRFLOW_CONN_POSTGRES_DEFAULT": database.uri,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(log_file), "append": True}),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "matview_tests",
    }
    done = subprocess.run(
        [str(AIRFLOW_BIN), "dags", "test", "matview_lineage"], env=env, capture_output=True, text=True, timeout=300
    )
    output = done.stdout + done.stderr
    found = events(log_file)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for event in found:
        name = event.get("job", {}).get("name", "")
        by_task.setdefault(name.rsplit(".", 1)[-1], []).append(event)
    assert set(by_task) >= {"on_worker", "deferred", "failed"}, (sorted(by_task), output[-4000:])
    types = {task: [event["eventType"] for event in by_task[task]] for task in ("on_worker", "deferred", "failed")}
    # A deferred task starts twice (deferred, then resumed on a worker), as Airflow reports every deferral.
    assert types == {
        "on_worker": ["START", "COMPLETE"],
        "deferred": ["START", "START", "COMPLETE"],
        "failed": [
            "START",
            "FAIL",
        ],
    }
    namespace, db = f"postgres://127.0.0.1:{pg.info.port}", pg.info.dbname
    polls_user = (namespace, f"{db}.public.polls_user", [("id", "integer"), ("name", "text"), ("age", "integer")])
    for task, view, columns in (
        ("on_worker", "polls_user_matt_view", polls_user[2]),
        ("deferred", "through_view", [("id", "integer"), ("age", "integer")]),
    ):
        start, *_, complete = by_task[task]
        assert datasets(start, "outputs") == [(namespace, f"{db}.public.{view}", None)]
        assert datasets(complete, "outputs") == [(namespace, f"{db}.public.{view}", columns)]
        assert datasets(complete, "inputs") == [polls_user]
    assert datasets(by_task["failed"][-1], "outputs") == [(namespace, f"{db}.public.fragile", None)]
    # A chain: a materialized view built on another is that view's input, not the other's tables.
    chained = by_task["chained"][-1]
    assert chained["eventType"] == "COMPLETE"
    assert datasets(chained, "inputs") == [(namespace, f"{db}.public.polls_user_matt_view", polls_user[2])]
    assert datasets(chained, "outputs") == [(namespace, f"{db}.public.chained", [("n", "bigint")])]
    # A partitioned table is one input, named by its parent: the partitions are where its rows are stored.
    partitioned = by_task["partitioned"][-1]
    assert partitioned["eventType"] == "COMPLETE"
    assert datasets(partitioned, "inputs") == [
        (namespace, f"{db}.public.events", [("id", "integer"), ("region", "text")])
    ]


def datasets(event: dict[str, Any], side: str) -> list[tuple[str, str, list[tuple[str, str]] | None]]:
    """An event's inputs or outputs: namespace, name and the schema facet's columns (``None`` without one)."""
    found = []
    for dataset in event.get(side, []):
        schema = dataset.get("facets", {}).get("schema")
        columns = None if schema is None else [(field["name"], field["type"]) for field in schema["fields"]]
        found.append((dataset["namespace"], dataset["name"], columns))
    return found
