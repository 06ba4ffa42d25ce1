"""The fleet overview's records: max_staleness and timezone read from serialized DAGs of every Airflow minor."""

from __future__ import annotations

from airflow_matview.fleet.overview import max_staleness_of, timezone_of
from airflow_matview.fleet.records import _serialized_intervals as _intervals


def test_max_staleness_is_read_from_airflows_deadline_alerts() -> None:
    timedelta_serde = {"__classname__": "datetime.timedelta", "__version__": 2, "__data__": 3600.0}
    assert max_staleness_of([timedelta_serde, {"__data__": 900.0}]) == 900.0
    assert max_staleness_of([{"__classname__": "VariableInterval", "__data__": {"key": "x"}}]) is None
    assert max_staleness_of([]) is None
    airflow_3_1 = {"__type": "deadline_alert", "__var": {"__type": "deadline_alert", "__var": {"interval": 600.0}}}
    assert max_staleness_of(_intervals([airflow_3_1, {"__var": {"interval": 1200.0}}])) == 600.0
    cron = {"__type": "airflow.timetables.trigger.CronTriggerTimetable", "__var": {"timezone": "Europe/Paris"}}
    assert timezone_of({"__type": "AssetOrTimeSchedule", "__var": {"timetable": cron}}) == "Europe/Paris"
