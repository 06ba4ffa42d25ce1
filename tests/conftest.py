"""The suite's fixtures, and its three tiers: one folder each, which ``make test-unit`` and ``-m`` select.

- ``tests/unit``: the package in this process only: no PostgreSQL server, no Airflow metadata database, no
  subprocess (``make test-unit``, seconds).
- ``tests/integration``: the package against what it talks to: PostgreSQL servers the suite starts (one per major
  found, a fresh database per test), Airflow's metadata database in this process (``dag.test()``, a DagBag), and
  fresh interpreters and the ``airflow-matview`` command in subprocesses.
- ``tests/system``: Airflow's own programs run the package: real stacks (api-server, scheduler, dag-processor,
  triggerer, LocalExecutor or Celery workers), the browser, ``airflow dags test`` and ``airflow dags list``, and
  ``make airflow``'s processes.

Each test gets its tier's marker (``-m unit``, ``-m integration``, ``-m system``) from its folder. Test modules share
code through ``devtools/harness``, never by importing one another.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="matview-airflow-home-"))

# Airflow reads its configuration when first imported, so the environment is set before any test imports it.
os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "True",
    }
)
# Its asserts report their values as a test's own do.
pytest.register_assert_rewrite("devtools.harness.console_script")

from devtools.harness.databases import Database  # noqa: E402
from devtools.harness.paths import AIRFLOW_BIN  # noqa: E402
from devtools.harness.pgcluster import (  # noqa: E402
    PostgresCluster,
    available_bin_dirs,
    missing_majors,
    unavailable_reason,
)

TIERS = ("unit", "integration", "system")
#: Fixtures the unit tier may not use, directly or through another fixture.
NOT_IN_UNIT = {"pg_server": "a PostgreSQL server", "airflow_db": "Airflow's metadata database"}

SERVERS = available_bin_dirs()
MISSING_MAJORS = missing_majors(SERVERS)
# MATVIEW_PG=17 (or 15,18...) runs the DB tests on those majors only, as `make test-matrix` does.
if os.environ.get("MATVIEW_PG"):
    _WANTED = set(os.environ["MATVIEW_PG"].split(","))
    SERVERS = {label: path for label, path in SERVERS.items() if label.split("-")[0] in _WANTED}


def pytest_report_header() -> list[str]:
    lines = [f"PostgreSQL servers: {', '.join(sorted(SERVERS)) or 'none'}"]
    lines += [
        f"PostgreSQL {major} not found (from {source}): its tests do not run"
        for major, source in MISSING_MAJORS.items()
    ]
    return lines


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


def pytest_configure(config: pytest.Config) -> None:
    # Said once, in one line, rather than as a traceback in every test that starts a server (xdist's workers would
    # only repeat it: the controller checks).
    if SERVERS and not hasattr(config, "workerinput") and (reason := unavailable_reason()):
        raise pytest.UsageError(f"The tests' PostgreSQL servers cannot run here: {reason}")
    # CI must not turn green because a server it should test against failed to install.
    if os.environ.get("CI") and MISSING_MAJORS and not os.environ.get("MATVIEW_PG"):
        missing = "; ".join(f"{major} (from {source})" for major, source in MISSING_MAJORS.items())
        raise pytest.UsageError(f"CI tests every supported PostgreSQL major, and these are missing: {missing}")


# Tests marked one_server (and those that run a DAG in an `airflow` subprocess) check Airflow's side, not the
# server's: they run on this server only, to keep `make test` within its time. MATVIEW_ALL_SERVERS=1 runs them on all.
ONE_SERVER = "16-pgserver" if "16-pgserver" in SERVERS else next(iter(sorted(SERVERS)), None)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``-n`` (``--dist load``, xdist's default), keep each module-scoped Airflow stack in one worker."""
    if config.getvalue("dist") != "load":
        return None
    from devtools.harness.xdist_scheduling import StackModulesTogether

    return StackModulesTogether(config, log)


def tier_of(item: pytest.Item) -> str:
    """The tier of ``item``: the first folder of its path under ``tests/``.

    :param item: a collected test.
    :raises pytest.UsageError: for a test outside the three tiers' folders, or a unit test that would start a
        PostgreSQL server or migrate Airflow's metadata database.
    """
    parts = item.path.relative_to(TESTS).parts if item.path.is_relative_to(TESTS) else ()
    tier = parts[0] if len(parts) > 1 else ""
    if tier not in TIERS:
        raise pytest.UsageError(f"{item.nodeid}: a test module lives in tests/unit, tests/integration or tests/system")
    if tier == "unit":
        for fixture, what in NOT_IN_UNIT.items():
            if fixture in getattr(item, "fixturenames", ()):
                raise pytest.UsageError(f"{item.nodeid} uses {what} ({fixture}): move it to tests/integration")
    return tier


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A test that needs Airflow's metadata DB runs DAGs (dag.test(), `airflow dags ...`): `make test-matrix` runs
    # these on every supported Airflow minor (`-m airflow_run`).
    keep, deselected = [], []
    for item in items:
        item.add_marker(tier_of(item))
        fixtures = getattr(item, "fixturenames", ())
        if "airflow_db" in fixtures:
            item.add_marker(pytest.mark.airflow_run)
        if "slow_dag_run" in fixtures:
            item.add_marker(pytest.mark.one_server)
        server = getattr(getattr(item, "callspec", None), "params", {}).get("pg_server")
        one_server = item.get_closest_marker("one_server") and not os.environ.get("MATVIEW_ALL_SERVERS")
        (deselected if one_server and server not in (None, ONE_SERVER) else keep).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = keep


@pytest.fixture(scope="session", params=sorted(SERVERS), ids=lambda label: f"pg{label}")
def pg_server(request: pytest.FixtureRequest) -> Iterator[PostgresCluster]:
    """A PostgreSQL server for the whole session, once per major version found on the machine."""
    cluster = PostgresCluster(SERVERS[request.param], settings={"log_connections": "on"})
    cluster.start()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Airflow's metadata database (SQLite in a temporary AIRFLOW_HOME), migrated once."""
    subprocess.run([str(AIRFLOW_BIN), "db", "migrate"], check=True, capture_output=True, env=os.environ)
    return AIRFLOW_HOME


@pytest.fixture
def database(pg_server: PostgresCluster) -> Iterator[Database]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield Database(pg_server, name)
    with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def pg(database: Database) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test's database, for setting up and inspecting."""
    with database.connect() as conn:
        yield conn


@pytest.fixture
def postgres_default(database: Database, monkeypatch: pytest.MonkeyPatch) -> Database:
    """The Airflow connection ``postgres_default`` points at the test's database."""
    monkeypatch.setenv("AIRFLOW_CONN_POSTGRES_DEFAULT", database.uri)
    return database
