"""Where things are: the repository, and the ``airflow`` and ``airflow-matview`` commands of this environment."""

from __future__ import annotations

import sys
from pathlib import Path

#: The repository's root (``dags/``, ``tests/``, ``artifacts/`` are under it).
REPO = Path(__file__).resolve().parents[2]
#: Airflow's command line, from the environment running the tests.
AIRFLOW_BIN = Path(sys.executable).parent / "airflow"
#: The package's console script, as a user runs it.
CLI = Path(sys.executable).parent / "airflow-matview"
