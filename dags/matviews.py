"""One DAG per materialized view listed in matviews.yaml, next to this file (see airflow-matview's docs/config.md)."""

from __future__ import annotations

from pathlib import Path

from airflow_matview.config import InvalidConfigFileError
from airflow_matview.factory import build_dags

try:
    globals().update(build_dags(Path(__file__).with_name("matviews.yaml")))
except InvalidConfigFileError as error:
    # Shown by Airflow as this file's import error: the problems, without our internals' traceback.
    raise error.with_traceback(None) from None
