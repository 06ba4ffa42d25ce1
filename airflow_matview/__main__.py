"""``python -m airflow_matview``: the ``airflow-matview`` command."""

from __future__ import annotations

import sys

from airflow_matview.cli.entry import main

sys.exit(main())
