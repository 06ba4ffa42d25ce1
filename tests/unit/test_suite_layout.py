"""The test suite's own rules (``tests/conftest.py``): three tiers, one folder each, and test modules that share code
through ``devtools/harness`` rather than by importing one another."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
MODULES = sorted(TESTS.rglob("*.py"))
#: What a unit test may not start: a server, a subprocess, a real Airflow.
NOT_IN_UNIT = (
    "subprocess",
    "devtools.harness.pgcluster",
    "devtools.harness.airflow_stack",
    "devtools.harness.deployment",
)


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code.

    :param path: a Python file.
    """
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_no_test_module_imports_another() -> None:
    found = {
        str(path.relative_to(TESTS)): sorted(name for name in imported(path) if name.split(".")[0] == "tests")
        for path in MODULES
    }
    assert {path: names for path, names in found.items() if names} == {}


def test_every_test_module_is_in_a_tier() -> None:
    misplaced = [
        str(path.relative_to(TESTS))
        for path in MODULES
        if path.name.startswith("test_") and path.relative_to(TESTS).parts[0] not in ("unit", "integration", "system")
    ]
    assert misplaced == []


def test_unit_tests_start_no_server_and_no_process() -> None:
    found = {
        str(path.relative_to(TESTS)): sorted(name for name in imported(path) if name.startswith(NOT_IN_UNIT))
        for path in sorted((TESTS / "unit").rglob("test_*.py"))
    }
    assert {path: names for path, names in found.items() if names} == {}
