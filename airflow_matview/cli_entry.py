"""The ``airflow-matview`` console script: quiet on Ctrl-C from the very first moment.

The command imports Airflow and psycopg, which takes a second or two; a Ctrl-C in that time must end the command
with exit code 130 and no traceback, like a Ctrl-C later on (see :func:`airflow_matview.cli.main`).
"""

from __future__ import annotations

import sys


def main() -> int:
    """Run :func:`airflow_matview.cli.main`, ending quietly with 130 when interrupted while it is imported."""
    try:
        from airflow_matview.cli import main as cli_main
    except KeyboardInterrupt:
        print("airflow-matview: interrupted", file=sys.stderr)
        return 130
    return cli_main()
