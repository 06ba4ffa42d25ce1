"""Paths of earlier releases stay importable: Airflow's metadata database stores trigger classpaths and Deadline
Alert callbacks by path, and DAG files import the documented modules."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from airflow_matview.legacy_paths import MOVED_MODULES


@pytest.mark.parametrize(("old", "new"), sorted(MOVED_MODULES.items()))
def test_an_old_module_path_is_the_module_it_moved_to(old: str, new: str) -> None:
    moved = importlib.import_module(old)
    assert moved is importlib.import_module(new)
    assert moved.__spec__ is not None and moved.__spec__.name == new  # its own spec, not the alias's


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
