"""Run DAGs for real in the test process: serialize them to the metadata DB, then ``dag.test()``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.models.dagrun import DagRun
    from airflow.sdk import DAG


def register(dag: DAG) -> None:
    """Write ``dag`` to the metadata DB, as the dag-processor would after parsing it."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    DagBundlesManager().sync_bundles_to_db()
    with create_session() as session:
        update_dag_parsing_results_in_db(
            "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
        )


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
