"""A broken Airflow configuration (its metadata database URL first): ``validate`` still works, since it needs no
database; ``check`` and ``discover`` say what is wrong in one line, without repeating the URL's password."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.harness.paths import REPO

CLI = Path(sys.executable).parent / "airflow-matview"
CONFIG = str(REPO / "dags" / "matviews.yaml")
SECRET = "Sup3rSecret"

# (the URL, what the line says about it)
BROKEN_URLS = [
    ("notaurl", "is not a database URL"),
    (f"postgresql://airflow:{SECRET}@db.example:notaport/airflow", "has a port that is not a number"),
    (f"postgresql+nodriver://airflow:{SECRET}@db.example/airflow", "names a database driver that SQLAlchemy does not"),
    ("", "is empty"),
    ("sqlite:///relative/airflow.db", "AirflowConfigException: Cannot use relative path"),
]


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url}
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(("url", "reason"), BROKEN_URLS, ids=["not-a-url", "port", "driver", "empty", "relative"])
def test_validate_needs_no_metadata_database(url: str, reason: str) -> None:
    done = cli(url, "validate", CONFIG)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines()[0] == f"{CONFIG}: OK, 1 DAG(s)"


@pytest.mark.parametrize(("url", "reason"), BROKEN_URLS, ids=["not-a-url", "port", "driver", "empty", "relative"])
def test_check_says_in_one_line_that_airflow_cannot_start(url: str, reason: str) -> None:
    done = cli(url, "check", CONFIG)
    assert done.returncode == 3
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("airflow-matview check: Airflow cannot start"), line
    assert reason in line
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" in line or "airflow.cfg" in line
    assert SECRET not in line
    if url:
        assert url not in line


def test_discover_and_help_with_a_broken_metadata_url() -> None:
    done = cli("notaurl", "discover", "--dsn", "host=127.0.0.1 dbname=nothing")
    assert done.returncode == 3
    (line,) = done.stderr.splitlines()
    assert line.startswith("airflow-matview discover: Airflow cannot start: Airflow's metadata database URL")
    for args in (["--help"], ["check", "--help"]):  # help needs no Airflow set-up
        helped = cli("notaurl", *args)
        assert (helped.returncode, helped.stderr) == (0, ""), args
        assert helped.stdout.startswith("usage: airflow-matview")
    usage = cli("notaurl", "vaildate", CONFIG)
    assert usage.returncode == 2
    assert "invalid choice: 'vaildate'" in usage.stderr and "Traceback" not in usage.stderr
