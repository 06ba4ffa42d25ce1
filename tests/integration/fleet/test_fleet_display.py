"""What the fleet overview shows for names that need quotes and for preset schedules, read from a real Airflow
metadata database written by Airflow's DAG-processor code (devtools/fleet_seed.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from devtools.harness.fleet_seed import seed_fleet

if TYPE_CHECKING:
    from pathlib import Path


def test_quoted_names_and_preset_schedules_are_shown_as_written(airflow_db: Path) -> None:
    from airflow.utils.session import create_session

    from airflow_matview.fleet.overview import load_fleet

    config = {
        "defaults": {"conn_id": "display_test"},
        "views": [
            {"name": 'public."a.b"', "schedule": "@weekly"},
            {"name": '"Sales"."Q1 Totals"', "schedule": "@daily", "timezone": "Europe/Berlin"},
            {"name": "public.plain", "after": ['public."a.b"', '"Sales"."Q1 Totals"'], "schedule": "@hourly"},
            {"name": "public.cron", "schedule": "0 0 * * 0"},
        ],
    }
    dag_ids = seed_fleet(config, runs=1, bundle="fleet-display")
    with create_session() as session:
        views = {view.dag_id: view for view in load_fleet(session, dag_ids).views}
    shown = {view.view: (view.schedule, sorted(view.after)) for view in views.values()}
    assert shown == {
        'public."a.b"': ("@weekly", []),
        '"Sales"."Q1 Totals"': ("@daily", []),
        "public.plain": ("@hourly", ['"Sales"."Q1 Totals"', 'public."a.b"']),
        # A cron that is a preset's is shown as that preset: Airflow keeps only the cron.
        "public.cron": ("@weekly", []),
    }
