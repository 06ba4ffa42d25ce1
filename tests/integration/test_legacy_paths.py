"""Stored and documented dotted paths import as Airflow's triggerer and scheduler import them: in a fresh process."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "path",
    [
        "airflow_matview.triggers.refresh.RefreshTrigger",
        "airflow_matview.triggers.source_changes.SourceChangesTrigger",
        "airflow_matview.staleness.notify_stale",
        "airflow_matview.operators.refresh.RefreshMaterializedViewOperator",
        "airflow_matview.plugins.fleet.MatviewFleetPlugin",
        "airflow_matview.config.MatviewConfigError",
        "airflow_matview.factory.build_dags",
        "airflow_matview.assets.matview_asset",
    ],
)
def test_a_stored_or_documented_dotted_path_imports_in_a_fresh_process(path: str) -> None:
    """As Airflow's triggerer and scheduler import them: ``import_string`` in a process that imported nothing yet."""
    script = f"from airflow.sdk._shared.module_loading import import_string; print(callable(import_string({path!r})))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True"
