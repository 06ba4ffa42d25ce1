"""Build one scheduled Airflow DAG per materialized view listed in a config file (see :mod:`.builder`)."""

from __future__ import annotations

from airflow_matview.factory.builder import build_dag, build_dags

__all__ = ["build_dag", "build_dags"]
