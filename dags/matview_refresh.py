"""Refresh the reference materialized view every day; trigger it from the Airflow UI at any time."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_matview import RefreshMaterializedViewOperator

with DAG(
    dag_id="matview.public.polls_user_matt_view",
    schedule="@daily",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["matview"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    doc_md="Refreshes `public.polls_user_matt_view` through connection `postgres_default`, daily.",
):
    RefreshMaterializedViewOperator(task_id="refresh", view="public.polls_user_matt_view")
