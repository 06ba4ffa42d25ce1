"""How ``make test`` spreads the suite over pytest-xdist workers (``-n 2``).

Most tests wait on a PostgreSQL server or a real Airflow more than they compute, so they go one by one to whichever
worker is free. A module with a fixture set up once per module (a whole Airflow stack, say) must stay in one worker,
or every worker would start its own copy: its tests form one unit of work, handed out first since they take longest.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING

from xdist.scheduler import LoadScopeScheduling

if TYPE_CHECKING:
    import pytest
    from xdist.remote import Producer


def modules_with_module_fixtures(folder: Path) -> set[str]:
    """The test modules in ``folder`` and its tiers (file names) that define a fixture with ``scope="module"``."""
    found = set()
    for path in folder.rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and any(
                keyword.arg == "scope" and isinstance(keyword.value, ast.Constant) and keyword.value.value == "module"
                for keyword in node.keywords
            ):
                found.add(path.name)
    return found


class StackModulesTogether(LoadScopeScheduling):
    """Load scheduling by test, except that the tests of a module with a module-scoped fixture go to one worker.

    :param config: pytest's configuration.
    :param log: xdist's log.
    """

    def __init__(self, config: pytest.Config, log: Producer | None = None) -> None:
        super().__init__(config, log)
        self.together = modules_with_module_fixtures(Path(__file__).parent)

    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        return path if Path(path).name in self.together else nodeid
