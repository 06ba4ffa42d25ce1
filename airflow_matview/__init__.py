"""Keep PostgreSQL materialized views fresh with Apache Airflow."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_matview import legacy_paths

if TYPE_CHECKING:
    from airflow_matview.operators.materialized_view import RefreshMaterializedViewOperator

__version__ = "0.1.0"

__all__ = ["RefreshMaterializedViewOperator", "__version__"]

legacy_paths.install()


def __getattr__(name: str) -> object:
    # Imported lazily so that `airflow providers list` and the CLI do not import Airflow's SDK for nothing.
    if name == "RefreshMaterializedViewOperator":
        from airflow_matview.operators.materialized_view import RefreshMaterializedViewOperator

        return RefreshMaterializedViewOperator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
