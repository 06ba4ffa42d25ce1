"""Keep PostgreSQL materialized views fresh with Apache Airflow."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_matview.operators.refresh import RefreshMaterializedViewOperator

__version__ = "0.1.0"

__all__ = ["RefreshMaterializedViewOperator", "__version__"]


def __getattr__(name: str) -> object:
    # Imported lazily so that `airflow providers list` and the CLI do not import Airflow's SDK for nothing.
    if name == "RefreshMaterializedViewOperator":
        from airflow_matview.operators.refresh import RefreshMaterializedViewOperator

        return RefreshMaterializedViewOperator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
