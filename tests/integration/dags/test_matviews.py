"""The drop-in DAG file with real Airflow: the edge values that ``validate`` accepts load in a DagBag and are
written to the metadata database as the dag-processor writes them; parsing 1,000 views touches no database
or network (in a fresh interpreter)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from airflow_matview.config import fields as config
from airflow_matview.config import load_config
from devtools.harness.configs import ALL_KEYS, RECORDING, SMTP
from devtools.harness.dag_files import PARSE_PROBE, dags_folder
from devtools.harness.dag_runs import DagBag, register
from devtools.harness.paths import REPO

if TYPE_CHECKING:
    from pathlib import Path

    from devtools.harness.databases import Database

    pass


LONGEST_DAG_ID = "d" * 250


EDGE_CASES = f"""
defaults:
  # every default commented out
views:
  - name: public.plain
  - name: 'public."Mixed Case"'
    schedule: "0 0 29 2 *"
    tags: ["{"t" * config.TAG_MAX_LEN}", "ünïcode tag", "a,b"]
    owner: "{"o" * config.OWNER_MAX_LEN}"
    retries: "{config.MAX_RETRIES}"
    retry_delay: "90"
  - name: public.café
    dag_id: {LONGEST_DAG_ID}
    schedule: "@continuous"
    lock_timeout: 1ms
    execution_timeout: null
  - name: public.once
    schedule: "@once"
    lock_timeout: null
    retries: 0
    retry_delay: 0
  - name: public.yearly
    schedule: "@annually"
  - name: public.last_day
    schedule: "0 3 L * *"
  - name: public.fridays
    schedule: "30 9 * MAR-APR FRI"
  - name: public.downstream
    after: [public.plain, public.yearly]
    schedule: "*/5 * * * 1-5"
  - name: public.manual
    after: [public.downstream]
"""


def test_edge_values_that_validate_load_in_airflow_and_get_a_next_run(tmp_path: Path, airflow_db: Path) -> None:
    from airflow.models.dag import TAG_MAX_LEN, DagModel
    from airflow.utils.session import create_session

    assert config.TAG_MAX_LEN == TAG_MAX_LEN
    folder = tmp_path / "dags"
    folder.mkdir()
    shutil.copy(REPO / "dags" / "matviews.py", folder)
    (folder / "matviews.yaml").write_text(EDGE_CASES, encoding="utf-8")
    expected = {view.resolved_dag_id: view for view in load_config(folder / "matviews.yaml").views}

    bag = DagBag(dag_folder=str(folder))

    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == sorted(expected)
    register(*bag.dags.values())  # serialized and written as the dag-processor does, timetables validated
    with create_session() as session:
        models = {model.dag_id: model for model in session.query(DagModel).filter(DagModel.dag_id.in_(expected))}
    assert sorted(models) == sorted(expected)
    for dag_id, view in expected.items():
        if view.schedule not in (None, "@continuous"):  # a cron or preset: Airflow knows when it runs next
            assert models[dag_id].next_dagrun_create_after is not None, dag_id


def test_parsing_1000_views_with_every_production_key_touches_no_database_or_network(tmp_path: Path) -> None:
    keys = {**ALL_KEYS, "on_success": ALL_KEYS["on_failure"]}
    config = {"defaults": keys, "views": [{"name": f"public.view_{index:04d}"} for index in range(1000)]}
    folder = dags_folder(tmp_path, config)
    env = {
        **os.environ,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://nobody@127.0.0.1:9/none",  # any metadata-DB use fails
        "PYTHONPATH": str(REPO),
    }
    probe = subprocess.run(
        [sys.executable, "-c", PARSE_PROBE, str(folder / "matviews.py")], env=env, capture_output=True, text=True
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    dags, events, seconds, kinds = probe.stdout.splitlines()[-1].split(maxsplit=3)
    assert (dags, events) == ("1001", "0"), kinds  # and the lag monitor of their max_staleness
    print(f"1000 views with every production key parsed in {seconds}s")


def test_edge_values_of_the_production_keys_that_validate_load_in_a_dagbag(tmp_path: Path, airflow_db: Path) -> None:
    from devtools.harness.dag_runs import DagBag, register

    stale = [
        {"notifier": f"{RECORDING}.record_async", "label": "late"},
        {"notifier": SMTP, "to": "x@y.z"},
    ]
    config = {
        "defaults": {"on_failure": [{"notifier": SMTP, "to": ["a@example.com", "b@example.com"]}]},
        "views": [
            {
                "name": "public.a",
                "timezone": "Etc/GMT+2",
                "pool": "p" * 256,
                "pool_slots": 2**31 - 1,
                "priority_weight": 2**31 - 1,
                "queue": "q" * 256,
                "description": "<b>multi</b>\nline **markdown** " + "d" * 960,
                "max_staleness": "3650d",
                "on_stale": stale,
            },
            {
                "name": "public.b",
                "timezone": "US/Eastern",
                "schedule": "@daily",
                "priority_weight": "-2147483648",
                "max_staleness": "1s",
                "after": ["public.a"],
            },
            {"name": "public.c", "timezone": "Australia/Lord_Howe", "schedule": "*/30 * * * *", "on_failure": None},
        ],
    }
    load_config(config)  # validates
    bag = DagBag(dag_folder=str(dags_folder(tmp_path, config)))
    assert bag.import_errors == {}
    assert sorted(bag.dags) == [
        "matview.freshness.postgres_default",
        "matview.public.a",
        "matview.public.b",
        "matview.public.c",
    ]
    register(*bag.dags.values())  # serialized (the lag monitor and timetables included) and written to the DB


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
