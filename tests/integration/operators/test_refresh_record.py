"""With target_lag, each refresh records what the view now reflects (the change signals it read, when, and when it
committed) in a Variable, on a worker and deferred alike, in real DAG runs (``dag.test()``); the lag measured from
it is 0 until a source changes again."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

import psycopg
import pytest

from airflow_matview.database.identifiers import QualifiedName
from airflow_matview.factory import build_dags
from airflow_matview.freshness import LagRecord, cover, lag_of, observe
from airflow_matview.refresh_task import RefreshRecord
from airflow_matview.triggers.source_changes import poll_views
from devtools.harness.dag_runs import run_dag, task_result
from devtools.harness.scenario import VIEW, add_new_users, create_reference_scenario

if TYPE_CHECKING:
    from pathlib import Path

    from devtools.harness.databases import Database

pytestmark = pytest.mark.one_server


async def _poll(database: Database) -> dict[str, object] | None:
    async with await psycopg.AsyncConnection.connect(database.dsn, autocommit=True) as conn:
        return (await poll_views(conn, [VIEW]))[VIEW].fingerprint


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferred"])
def test_a_refresh_records_what_the_view_reflects(
    database: Database, postgres_default: Database, airflow_db: Path, deferrable: bool
) -> None:
    from airflow.models import Variable

    with database.connect() as conn:
        create_reference_scenario(conn)
        conn.execute("SELECT pg_stat_force_next_flush()")
    config = {"views": [{"name": VIEW, "target_lag": "1m", "deferrable": deferrable}]}
    dag = build_dags(config)["matview.public.polls_user_matt_view"]
    before = time.time()
    state, xcom = task_result(run_dag(dag))
    assert state == "success"
    assert not {"fingerprint", "signals_read_at", "committed_at"} & set(xcom)
    key = RefreshRecord("postgres_default", QualifiedName("public", "polls_user_matt_view")).key
    stored = json.loads(Variable.get(key))
    assert before <= stored["signals_read_at"] <= stored["committed_at"] <= time.time()
    assert stored["fingerprint"] == asyncio.run(_poll(database))

    record = LagRecord()
    observe(record, asyncio.run(_poll(database)), time.time())
    cover(record, stored["fingerprint"], read_at=stored["signals_read_at"], committed_at=stored["committed_at"])
    assert lag_of(record, time.time(), stale_after=60).seconds == 0.0
    with database.connect() as conn:
        add_new_users(conn)
        conn.execute("SELECT pg_stat_force_next_flush()")
    seen = time.time()
    observe(record, asyncio.run(_poll(database)), seen)
    lag = lag_of(record, seen + 5, stale_after=60)
    assert (lag.seconds, lag.since) == (5.0, seen)
