"""The config file: one YAML document listing the materialized views to keep fresh (see the config reference).

``load_config`` reads and validates it; reading touches no database, network, Airflow connection or Variable.
"""

from __future__ import annotations

from airflow_matview.config.fields import default_dag_id
from airflow_matview.config.loading import load_config
from airflow_matview.config.model import MatviewConfig, ViewConfig, ViewSettings
from airflow_matview.exceptions import InvalidConfigFileError, MatviewConfigError

__all__ = [
    "InvalidConfigFileError",
    "MatviewConfig",
    "MatviewConfigError",
    "ViewConfig",
    "ViewSettings",
    "default_dag_id",
    "load_config",
]
