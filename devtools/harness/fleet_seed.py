"""A generated fleet in Airflow's metadata database, for the fleet overview's benchmark and tests.

The DAGs are built by :func:`airflow_matview.factory.build_dags` and written by Airflow's own DAG-processor code
(``update_dag_parsing_results_in_db``: DAG rows, serialized DAGs, tags, asset references), then each view gets a
history of runs, refresh task instances and asset events (bulk ORM inserts), as if the scheduler had run them.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy.orm import Session

START = datetime(2026, 11, 1, tzinfo=timezone.utc)


def fleet_config(views: int, schema: str = "bench", conn_id: str = "warehouse") -> dict[str, Any]:
    """``views`` views, every tenth one built on the one before it, in two connections and a few tags."""
    entries: list[dict[str, Any]] = []
    for index in range(views):
        entry: dict[str, Any] = {
            "name": f"{schema}.view_{index:04d}",
            "conn_id": conn_id if index % 3 else f"{conn_id}_replica",
            "schedule": "*/15 * * * *",
            "tags": [f"team_{index % 5}"],
        }
        if index % 10 == 9 and index % 3 == (index - 1) % 3:
            entry["after"] = [f"{schema}.view_{index - 1:04d}"]
        entries.append(entry)
    return {"views": entries}


def seed_fleet(
    config: dict[str, Any],
    *,
    runs: int = 20,
    bundle: str = "fleet-seed",
    now: datetime | None = None,
    outcomes: dict[str, list[str]] | None = None,
) -> list[str]:
    """Write the DAGs of ``config`` and ``runs`` finished runs for each view; returns the views' DAG ids (a lag
    monitor's DAG, with ``target_lag``, is written and never runs).

    :param config: a matviews config (as :func:`fleet_config` returns).
    :param runs: how many runs each view has had, every 15 minutes up to ``now``.
    :param bundle: the DAG bundle the DAGs belong to.
    :param now: the time of the last run (default: the current time).
    :param outcomes: per DAG id, the refresh task's states, oldest first (default: mostly successes, with
        failures, skips and paused DAGs spread over the fleet).
    """
    from airflow.utils.session import create_session

    from airflow_matview.factory import build_dags

    now = now or datetime.now(timezone.utc)
    dags = build_dags(config)
    write_dags(dags.values(), bundle)
    with create_session() as session:
        return _write_history(session, dags, runs, now, outcomes)


def write_dags(dags: Iterable[Any], bundle: str) -> None:
    """Write ``dags`` (any DAGs, ours or not) to the metadata database as the DAG processor does after parsing.

    :param dags: the DAG objects.
    :param bundle: the DAG bundle they belong to (created if missing).
    """
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.models.dagbundle import DagBundleModel
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    with create_session() as session:
        if session.get(DagBundleModel, bundle) is None:
            session.add(DagBundleModel(name=bundle))
    with create_session() as session:
        update_dag_parsing_results_in_db(
            bundle, None, [LazyDeserializedDAG.from_dag(dag) for dag in dags], {}, None, set(), session=session
        )


def _write_history(
    session: Session, dags: dict[str, Any], runs: int, now: datetime, outcomes: dict[str, list[str]] | None
) -> list[str]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import insert, select, update

    dag_ids = sorted(dag_id for dag_id, dag in dags.items() if "refresh" in dag.task_dict)  # not lag monitors
    session.execute(update(DagModel).where(DagModel.dag_id.in_(dag_ids)).values(is_paused=False))
    asset_ids = dict(
        session.execute(select(AssetModel.uri, AssetModel.id).where(AssetModel.uri.like("matview://%"))).tuples().all()
    )
    rng = random.Random(42)
    dag_runs: list[dict[str, Any]] = []
    instances: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for position, dag_id in enumerate(dag_ids):
        states = (outcomes or {}).get(dag_id) or _default_outcomes(position, runs, rng)
        if position % 50 == 49:
            session.execute(update(DagModel).where(DagModel.dag_id == dag_id).values(is_paused=True))
        uri = next(iter(dags[dag_id].task_dict["refresh"].outlets)).uri
        for number, state in enumerate(states):
            run_after = now - timedelta(minutes=15 * (len(states) - number))
            seconds = round(rng.uniform(0.5, 3.0) * (1 + position % 7), 3)
            run_id = f"scheduled__{run_after.isoformat()}"
            run_state = "failed" if state == "failed" else "success"
            end = run_after + timedelta(seconds=seconds + 1)
            dag_runs.append(
                {
                    "dag_id": dag_id,
                    "run_id": run_id,
                    "run_type": "scheduled",
                    "run_after": run_after,
                    "logical_date": run_after,
                    "queued_at": run_after,
                    "start_date": run_after,
                    "end_date": end,
                    "state": run_state,
                }
            )
            instances.append(
                {
                    "dag_id": dag_id,
                    "task_id": "refresh",
                    "run_id": run_id,
                    "map_index": -1,
                    "state": state,
                    "start_date": run_after,
                    "end_date": end,
                    "duration": seconds if state != "skipped" else 0.05,
                    "try_number": 1,
                    "pool": "default_pool",
                    "pool_slots": 1,
                    "queue": "default",
                    "priority_weight": 1,
                    "operator": "RefreshMaterializedViewOperator",
                }
            )
            if state == "success":
                events.append(
                    {
                        "asset_id": asset_ids[uri],
                        "extra": {"rows": 1000 + position, "seconds": seconds - 0.4, "mode": "concurrently"},
                        "source_dag_id": dag_id,
                        "source_task_id": "refresh",
                        "source_run_id": run_id,
                        "source_map_index": -1,
                        "timestamp": end,
                    }
                )
    for model, rows in ((DagRun, dag_runs), (TaskInstance, instances), (AssetEvent, events)):
        for start in range(0, len(rows), 5000):
            session.execute(insert(model.__table__), rows[start : start + 5000])
    return dag_ids


def _default_outcomes(position: int, runs: int, rng: random.Random) -> list[str]:
    states = ["skipped" if rng.random() < 0.1 else "success" for _ in range(runs)]
    if position % 13 == 0:
        states[-1] = "failed"
    return states
