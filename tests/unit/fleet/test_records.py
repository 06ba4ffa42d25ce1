"""The fleet overview's records: the timezone read from serialized DAGs of every Airflow minor."""

from __future__ import annotations

from airflow_matview.fleet.overview import timezone_of


def test_the_timezone_is_read_from_a_timetable_of_every_airflow_minor() -> None:
    cron = {"__type": "airflow.timetables.trigger.CronTriggerTimetable", "__var": {"timezone": "Europe/Paris"}}
    assert timezone_of({"__type": "AssetOrTimeSchedule", "__var": {"timetable": cron}}) == "Europe/Paris"
