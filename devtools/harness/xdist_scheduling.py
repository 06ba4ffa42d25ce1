"""How ``make test`` spreads the suite over pytest-xdist workers (``-n 2``).

Most tests wait on a PostgreSQL server or a real Airflow more than they compute, so they go one by one to whichever
worker is free. A module with a fixture set up once per module (a whole Airflow stack, say) must stay in one worker,
or every worker would start its own copy: its tests form one unit of work, handed out first since they take longest.
``tests/conftest.py`` installs this scheduler (``pytest_xdist_make_scheduler``).
"""

from __future__ import annotations

import ast
from functools import cache
from typing import TYPE_CHECKING

from xdist.scheduler import LoadScopeScheduling

if TYPE_CHECKING:
    from pathlib import Path

    import pytest
    from xdist.remote import Producer


@cache
def has_module_fixture(path: Path) -> bool:
    """Whether the test module at ``path`` defines a fixture with ``scope="module"``.

    :param path: a test module (``tests/system/test_end_to_end.py``, say).
    """
    if not path.is_file():
        return False
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and any(
            keyword.arg == "scope" and isinstance(keyword.value, ast.Constant) and keyword.value.value == "module"
            for keyword in node.keywords
        ):
            return True
    return False


class StackModulesTogether(LoadScopeScheduling):
    """Load scheduling by test, except that the tests of a module with a module-scoped fixture go to one worker.

    :param config: pytest's configuration.
    :param log: xdist's log.
    """

    def __init__(self, config: pytest.Config, log: Producer | None = None) -> None:
        super().__init__(config, log)
        self.rootpath = config.rootpath

    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]  # relative to the rootdir, in any tier's folder
        return path if has_module_fixture(self.rootpath / path) else nodeid
