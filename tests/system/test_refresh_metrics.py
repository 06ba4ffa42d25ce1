"""A refresh task's metrics in a real Airflow run (``airflow dags test`` in a subprocess, metrics on, a StatsD
listener on loopback): a success on a worker and deferred (duration, rows, lock wait, mode), a skip and a failure,
each by view and connection."""

from __future__ import annotations

import os
import socket
import subprocess
from typing import TYPE_CHECKING

import psycopg
import pytest

from airflow_matview.database.locks import advisory_key
from devtools.harness.paths import AIRFLOW_BIN
from devtools.harness.scenario import create_reference_scenario

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from devtools.harness.databases import Database

pytestmark = pytest.mark.one_server  # Airflow's metrics, not the server, are under test

DAG_FILE = """
from airflow.sdk import DAG

from airflow_matview import RefreshMaterializedViewOperator

with DAG("matview_metrics", schedule=None):
    RefreshMaterializedViewOperator(task_id="on_worker", view="public.polls_user_matt_view")
    RefreshMaterializedViewOperator(task_id="deferred", view="public.deferred_view", deferrable=True)
    RefreshMaterializedViewOperator(task_id="skipped", view="public.skipper", on_overlap="skip")
    RefreshMaterializedViewOperator(task_id="failed", view="public.fragile", retries=0)
"""


@pytest.fixture
def statsd() -> Iterator[socket.socket]:
    """A StatsD listener: a UDP socket on a free loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        yield listener


def received(listener: socket.socket) -> list[str]:
    """Every StatsD line received so far."""
    lines: list[str] = []
    listener.settimeout(0.5)
    while True:
        try:
            packet = listener.recv(65536)
        except TimeoutError:
            return lines
        lines += packet.decode().splitlines()


def test_statsd_receives_each_outcome_by_view_and_connection(
    pg: psycopg.Connection, database: Database, airflow_db: Path, tmp_path: Path, statsd: socket.socket
) -> None:
    create_reference_scenario(pg)
    pg.execute("CREATE MATERIALIZED VIEW deferred_view AS SELECT id, age FROM polls_user")
    pg.execute("CREATE MATERIALIZED VIEW skipper AS SELECT id FROM polls_user")
    pg.execute("CREATE FUNCTION boom(a integer) RETURNS integer LANGUAGE sql AS 'SELECT 1 / (a - 99)'")
    pg.execute("CREATE MATERIALIZED VIEW fragile AS SELECT boom(age) AS x FROM polls_user")
    pg.execute("INSERT INTO polls_user VALUES (99, 'zed', 99)")
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "metrics_dag.py").write_text(DAG_FILE)
    env = {
        **os.environ,
        "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "dags"),
        "AIRFLOW_CONN_POSTGRES_DEFAULT": database.uri,
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd.getsockname()[1]),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
    }
    oid = pg.execute("SELECT 'skipper'::regclass::oid").fetchone()[0]  # type: ignore[index]
    with psycopg.connect(database.dsn) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_key(oid)])  # another refresh of skipper runs
        done = subprocess.run(
            [str(AIRFLOW_BIN), "dags", "test", "matview_metrics"], env=env, capture_output=True, text=True, timeout=300
        )
    output = done.stdout + done.stderr
    assert "division by zero" in output, output[-4000:]
    lines = received(statsd)
    ours = sorted(line for line in lines if line.startswith("airflow.matview."))

    def one(prefix: str) -> str:
        found = [line for line in ours if line.startswith(prefix)]
        assert len(found) == 1, (prefix, ours)
        return found[0]

    worker = "postgres_default.public__polls_user_matt_view"
    assert one(f"airflow.matview.refresh.rows.{worker}:") == f"airflow.matview.refresh.rows.{worker}:6|g"
    assert one(f"airflow.matview.refresh.succeeded.{worker}:") == f"airflow.matview.refresh.succeeded.{worker}:1|c"
    assert one(f"airflow.matview.refresh.mode.concurrently.{worker}:").endswith(":1|c")
    assert one(f"airflow.matview.refresh.duration.{worker}:").endswith("|ms")
    assert one(f"airflow.matview.refresh.lock_wait.{worker}:").endswith("|ms")
    deferred = "postgres_default.public__deferred_view"
    assert one(f"airflow.matview.refresh.mode.blocking.{deferred}:").endswith(":1|c")
    assert one(f"airflow.matview.refresh.duration.{deferred}:").endswith("|ms")
    assert one("airflow.matview.refresh.skipped.postgres_default.public__skipper:") == (
        "airflow.matview.refresh.skipped.postgres_default.public__skipper:1|c"
    )
    assert one("airflow.matview.refresh.failed.postgres_default.public__fragile:") == (
        "airflow.matview.refresh.failed.postgres_default.public__fragile:1|c"
    )
    totals = [line for line in ours if line.startswith("airflow.matview.refresh.succeeded:")]
    assert totals == ["airflow.matview.refresh.succeeded:1|c"] * 2  # the tagged name: plain StatsD drops the tags
