"""``python -m airflow_matview`` is the ``airflow-matview`` command: the same output and exit code, whatever the
command and whatever the outcome."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from devtools.harness.scenario import create_reference_scenario

if TYPE_CHECKING:
    import psycopg

    from devtools.harness.databases import Database

CLI = Path(sys.executable).parent / "airflow-matview"
# discover stamps its output with the minute it ran
_STAMP = re.compile(r" on \d{4}-\d\d-\d\d \d\d:\d\d UTC")


def both(*args: str) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
    """What the console script and ``python -m airflow_matview`` answer to ``args``: exit code, stdout, stderr."""
    answers = []
    for command in ([str(CLI)], [sys.executable, "-m", "airflow_matview"]):
        done = subprocess.run([*command, *args], capture_output=True, text=True, env=os.environ, timeout=120)
        answers.append((done.returncode, _STAMP.sub(" on (time)", done.stdout), done.stderr))
    return answers[0], answers[1]


@pytest.mark.one_server
def test_python_m_is_the_console_script(pg: psycopg.Connection, database: Database, tmp_path: Path) -> None:
    create_reference_scenario(pg)
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(yaml.safe_dump({"views": [{"name": "public.polls_user_matt_view"}, {"name": "public.ghost"}]}))
    bad.write_text("views:\n  - name: a\n")
    cases = {
        "validate": (["validate", str(good)], 0),
        "validate, invalid config": (["validate", str(bad)], 1),
        "check": (["check", str(good), "--dsn", database.dsn], 1),
        "discover": (["discover", "--dsn", database.dsn], 0),
        "discover, nothing listening": (["discover", "--dsn", "host=127.0.0.1 port=1 dbname=x"], 3),
        "--help": (["--help"], 0),
        "usage error": (["validate"], 2),
        "unknown option": (["check", str(good), "--schema", "x"], 2),
    }
    for case, (args, code) in cases.items():
        script, module = both(*args)
        assert module == script, case
        assert script[0] == code, (case, script)
        if case == "discover":
            assert "- name: public.polls_user_matt_view" in script[1]
