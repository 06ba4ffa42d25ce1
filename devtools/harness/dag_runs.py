"""Run DAGs for real in the test process: serialize them to the metadata DB, then ``dag.test()``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:  # Airflow 3.2+
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.1
    from airflow.models.dagbag import DagBag  # type: ignore[no-redef,attr-defined,unused-ignore]

if TYPE_CHECKING:
    from airflow.models.dagrun import DagRun
    from airflow.sdk import DAG

__all__ = ["DagBag", "asset_events", "dags_due_on_assets", "register", "run_dag", "task_result"]


def register(*dags: DAG) -> None:
    """Write ``dags`` to the metadata DB, unpaused, as the dag-processor would after parsing them."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.models.dag import DagModel
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session
    from sqlalchemy import update

    DagBundlesManager().sync_bundles_to_db()
    with create_session() as session:
        parsed = [LazyDeserializedDAG.from_dag(dag) for dag in dags]
        update_dag_parsing_results_in_db("dags-folder", None, parsed, {}, None, set(), session=session)
    with create_session() as session:
        dag_ids = [dag.dag_id for dag in dags]
        session.execute(update(DagModel).where(DagModel.dag_id.in_(dag_ids)).values(is_paused=False))


def run_dag(dag: DAG, **kwargs: Any) -> DagRun:
    """One real DAG run, in process, like ``airflow dags test``."""
    register(dag)
    return dag.test(**kwargs)


def task_result(run: DagRun, task_id: str = "refresh") -> tuple[str | None, Any]:
    """The task's final state and its return value (XCom)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    ti = run.get_task_instance(task_id)
    assert ti is not None, f"no task instance {task_id} in {run}"
    with create_session() as session:
        query = XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id, task_ids=task_id, key="return_value")
        value = session.scalars(query).first()
    return (str(ti.state) if ti.state else None), (XComModel.deserialize_value(value) if value else None)


def asset_events(uri: str) -> list[dict[str, Any]]:
    """Every event of the asset ``uri``: its extra, plus the run that emitted it."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(AssetEvent).join(AssetModel, AssetModel.id == AssetEvent.asset_id).where(AssetModel.uri == uri)
        return [
            {**event.extra, "run_id": event.source_run_id} for event in session.scalars(query.order_by(AssetEvent.id))
        ]


def dags_due_on_assets() -> set[str]:
    """The DAGs the scheduler would now start because of asset events (its own query)."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        _, triggered = DagModel.dags_needing_dagruns(session)
        return set(triggered)
