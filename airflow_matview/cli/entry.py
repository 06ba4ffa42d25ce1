"""The ``airflow-matview`` console script: quiet on Ctrl-C from the very first moment.

The command imports Airflow and psycopg, which takes a second or two; a Ctrl-C in that time must end the command
with exit code 130 and no traceback, like a Ctrl-C later on (see :func:`airflow_matview.cli.main.main`).
"""

from __future__ import annotations

import os
import sys
import warnings


def main() -> int:
    """Run :func:`airflow_matview.cli.main.main`, ending quietly with 130 when interrupted while it is imported."""
    # The output is our lines only: Airflow's own log lines ("Skipping masking for a secret as it's too short", ...)
    # and warnings would go to stdout among them. Airflow reads its log level when first imported, just below; its
    # errors still show (on stderr, see cli.main).
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "ERROR"
    warnings.simplefilter("ignore")
    try:
        from airflow_matview.cli.main import main as cli_main
    except KeyboardInterrupt:
        print("airflow-matview: interrupted", file=sys.stderr)
        return 130
    return cli_main()
