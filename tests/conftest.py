"""Fixtures: a throwaway PostgreSQL cluster per server major found, a fresh database per test, real Airflow."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parent.parent
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

from devtools.harness.pgcluster import PostgresCluster, available_bin_dirs, missing_majors  # noqa: E402

SERVERS = available_bin_dirs()
MISSING_MAJORS = missing_majors(SERVERS)
# MATVIEW_PG=17 (or 15,18...) runs the DB tests on those majors only, as `make test-matrix` does.
if os.environ.get("MATVIEW_PG"):
    _WANTED = set(os.environ["MATVIEW_PG"].split(","))
    SERVERS = {label: path for label, path in SERVERS.items() if label.split("-")[0] in _WANTED}
AIRFLOW_BIN = Path(sys.executable).parent / "airflow"


def pytest_report_header() -> list[str]:
    lines = [f"PostgreSQL servers: {', '.join(sorted(SERVERS)) or 'none'}"]
    lines += [
        f"PostgreSQL {major} not found (from {source}): its tests do not run"
        for major, source in MISSING_MAJORS.items()
    ]
    return lines


def pytest_configure(config: pytest.Config) -> None:
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A test that needs Airflow's metadata DB runs DAGs (dag.test(), `airflow dags ...`): `make test-matrix` runs
    # these on every supported Airflow minor (`-m airflow_run`).
    keep, deselected = [], []
    for item in items:
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


class Database:
    """A fresh database on the test server.

    :param server: the server it lives on.
    :param name: its name.
    """

    def __init__(self, server: PostgresCluster, name: str) -> None:
        self.server = server
        self.name = name
        self.dsn = server.dsn(name)
        self.uri = server.uri(name)

    def connect(self, **kwargs: object) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True, **kwargs)  # type: ignore[arg-type]


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
