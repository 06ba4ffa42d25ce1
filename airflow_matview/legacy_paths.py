"""Module paths of earlier releases, kept importable: Airflow stores some of them, and DAG files import others.

Airflow's metadata database keeps the classpath of a deferred task's trigger and of an asset watcher's trigger, and
the dotted path of a Deadline Alert's callback, in rows written by the release that created them; a DAG file or a
plugin list may import a module by its documented path. Each path below is an alias of the module that holds the
code now (the same module object, imported when first asked for), so none of them breaks on upgrade.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import ModuleType

#: old module path -> where its code lives now (CHANGELOG.md lists them).
MOVED_MODULES = {
    "airflow_matview.operators.refresh": "airflow_matview.operators.materialized_view",
    "airflow_matview.triggers.refresh": "airflow_matview.triggers.deferred_refresh",
    "airflow_matview.staleness": "airflow_matview.alerting.staleness",
    "airflow_matview.plugins": "airflow_matview.fleet",
    "airflow_matview.plugins.fleet": "airflow_matview.fleet.app",
    "airflow_matview.cli_entry": "airflow_matview.cli.entry",
    "airflow_matview.refresh": "airflow_matview.database.refresh",
    "airflow_matview.compat": "airflow_matview.version_compat",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path of :data:`MOVED_MODULES` and loads it as the module it moved to."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED_MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(MOVED_MODULES[spec.name])
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run (the module ran when it was imported); give it back its own spec, which the import system
        replaced with the old path's."""
        module.__spec__ = module.__spec__.loader_state if module.__spec__ else None


def install() -> None:
    """Make the old paths importable (once per process)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
