"""What `validate` accepts, Airflow loads and schedules: the edge values of every key, through a real DagBag."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from airflow_matview.config import fields as config
from airflow_matview.config import load_config
from devtools.harness.dag_runs import DagBag, register
from tests.conftest import REPO

if TYPE_CHECKING:
    from pathlib import Path

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
