"""The DAG doc says what Airflow does with THIS view's cron in THIS zone on the nights clocks change, and what it
says is checked here against the runs Airflow's scheduler computes (the DAG's serialized timetable)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import pytest

from airflow_matview.factory import build_dags

if TYPE_CHECKING:
    from airflow.sdk import DAG


def _dag(schedule: str, zone: str) -> DAG:
    return build_dags({"views": [{"name": "public.v", "schedule": schedule, "timezone": zone}]})["matview.public.v"]


def _local_runs(dag: DAG, zone: str, start: str, end: str) -> list[str]:
    """The runs Airflow's scheduler computes from ``start`` to ``end`` (UTC), in local time with their offset."""
    from zoneinfo import ZoneInfo

    import pendulum
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import TimeRestriction

    timetable = DagSerialization.from_dict(DagSerialization.to_dict(dag)).timetable
    begin = pendulum.instance(datetime.fromisoformat(start).replace(tzinfo=timezone.utc))
    until = pendulum.instance(datetime.fromisoformat(end).replace(tzinfo=timezone.utc))
    restriction = TimeRestriction(earliest=begin - timedelta(days=1), latest=until, catchup=True)
    runs, last = [], None
    while info := timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction):
        last = info.data_interval
        if info.run_after >= begin:
            runs.append(info.run_after.astimezone(ZoneInfo(zone)).strftime("%H:%M%z"))
    return runs


# (cron, zone, clocks forward window, runs Airflow makes then, clocks back window, runs then, what the doc says)
CASES = [
    (
        "30 2 * * *",
        "Europe/Berlin",
        ("2026-03-28T23:00", "2026-03-29T05:00"),
        ["03:30+0200"],
        ("2026-10-24T22:00", "2026-10-25T05:00"),
        ["02:30+0100"],
        "when clocks go forward (02:00 -> 03:00), 02:30 does not exist: the DAG runs once, at 03:30, instead; "
        "when clocks go back (03:00 -> 02:00), 02:30 happens twice: it runs once, at the second (CET, UTC+01:00)",
    ),
    (
        "*/30 2 * * *",
        "Europe/Berlin",
        ("2026-03-28T23:00", "2026-03-29T05:00"),
        ["03:00+0200"],  # 02:30 is not run at all that night
        ("2026-10-24T22:00", "2026-10-25T05:00"),
        ["02:00+0100", "02:30+0100"],
        "when clocks go forward (02:00 -> 03:00), 02:00 and 02:30 do not exist: the DAG runs once, at 03:00, "
        "instead; when clocks go back (03:00 -> 02:00), 02:00 and 02:30 happen twice: each runs once, at the second "
        "(CET, UTC+01:00)",
    ),
    (
        "0 * * * *",
        "Europe/Berlin",
        ("2026-03-29T00:00", "2026-03-29T02:30"),
        ["01:00+0100", "03:00+0200", "04:00+0200"],
        ("2026-10-24T23:00", "2026-10-25T02:30"),
        ["01:00+0200", "02:00+0200", "02:00+0100", "03:00+0100"],  # 02:00 runs twice
        "when clocks go forward (02:00 -> 03:00), 02:00 does not exist: no run takes its place; when clocks go "
        "back (03:00 -> 02:00), 02:00 happens twice: it runs twice (CEST, UTC+02:00 and CET, UTC+01:00)",
    ),
    (
        "30 2 * * *",
        "America/New_York",
        ("2026-03-08T05:00", "2026-03-08T10:00"),
        ["03:30-0400"],
        ("2026-11-01T04:00", "2026-11-01T10:00"),
        ["02:30-0500"],
        "when clocks go forward (02:00 -> 03:00), 02:30 does not exist: the DAG runs once, at 03:30, instead",
    ),
    (
        "15,45 1 * * *",
        "America/New_York",
        ("2026-03-08T05:00", "2026-03-08T07:00"),
        ["01:15-0500", "01:45-0500"],
        ("2026-11-01T04:00", "2026-11-01T07:00"),
        ["01:15-0500", "01:45-0500"],  # each once, at the second 01:xx (EST)
        "when clocks go back (02:00 -> 01:00), 01:15 and 01:45 happen twice: each runs once, at the second (EST, "
        "UTC-05:00)",
    ),
]


@pytest.mark.parametrize(("cron", "zone", "spring", "spring_runs", "fall", "fall_runs", "note"), CASES)
def test_the_doc_says_what_airflows_timetable_does_on_the_nights_clocks_change(
    cron: str,
    zone: str,
    spring: tuple[str, str],
    spring_runs: list[str],
    fall: tuple[str, str],
    fall_runs: list[str],
    note: str,
) -> None:
    dag = _dag(cron, zone)
    assert _local_runs(dag, zone, *spring) == spring_runs
    assert _local_runs(dag, zone, *fall) == fall_runs
    assert f"- clock changes in {zone}, as Airflow's timetable runs this cron: {note}\n" in (dag.doc_md or "")


@pytest.mark.parametrize(
    ("cron", "zone", "line"),
    [
        ("0 9 * * 1-5", "Europe/Berlin", "- clock changes in Europe/Berlin (02:00 -> 03:00, 03:00 -> 02:00) move none"),
        ("@daily", "America/New_York", "- clock changes in America/New_York (02:00 -> 03:00, 02:00 -> 01:00) move"),
    ],
)
def test_a_cron_outside_the_changed_hours_is_said_to_be_unaffected(cron: str, zone: str, line: str) -> None:
    assert line in (_dag(cron, zone).doc_md or "")


@pytest.mark.parametrize("zone", ["UTC", "Asia/Tokyo", "Etc/GMT-3"])
def test_a_zone_without_clock_changes_has_no_note(zone: str) -> None:
    assert "clock changes" not in (_dag("30 2 * * *", zone).doc_md or "")
