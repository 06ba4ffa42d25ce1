"""Paths of earlier releases stay importable: Airflow's metadata database stores trigger classpaths and Deadline
Alerts callbacks by path, and DAG files import the documented modules. (In a fresh process: the integration tier.)"""

from __future__ import annotations

import importlib

import pytest

from airflow_matview.legacy_paths import MOVED_MODULES


@pytest.mark.parametrize(("old", "new"), sorted(MOVED_MODULES.items()))
def test_an_old_module_path_is_the_module_it_moved_to(old: str, new: str) -> None:
    moved = importlib.import_module(old)
    assert moved is importlib.import_module(new)
    assert moved.__spec__ is not None and moved.__spec__.name == new  # its own spec, not the alias's
