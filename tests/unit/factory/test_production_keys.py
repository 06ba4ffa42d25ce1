"""What the DAG and its task get from the production keys, and when Airflow's own timetable code runs a local-time
cron across DST changes (the serialized timetable the scheduler reads)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pytest

from airflow_matview.config import InvalidConfigFileError, load_config
from airflow_matview.factory import build_dags
from devtools.harness.configs import ALL_KEYS, SMTP

if TYPE_CHECKING:
    from airflow.sdk import DAG


def problems_of(config: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidConfigFileError) as raised:
        load_config(config)
    return raised.value.problems


def test_the_dag_and_task_get_the_settings_and_the_doc_says_so() -> None:
    dag = build_dags({"views": [{"name": "public.sales", "schedule": "30 2 * * *", **ALL_KEYS}]})[
        "matview.public.sales"
    ]
    (task,) = dag.tasks
    assert (task.pool, task.pool_slots, task.priority_weight, task.queue) == ("pg_main", 2, 7, "refreshes")
    assert dag.description == "Nightly sales rollup"
    assert [repr(cb) for cb in task.on_failure_callback] == [f"TaskNotifier(failure, {SMTP})"]
    assert [repr(cb) for cb in task.on_retry_callback] == [f"TaskNotifier(retry, {SMTP})"]
    assert dag.deadline is None, "max_staleness is a lag, measured by the lag monitor, not a Deadline Alert"
    assert task.record_freshness, "its refreshes record what they reflect, for its lag"
    monitor = build_dags({"views": [{"name": "public.sales", "schedule": "30 2 * * *", **ALL_KEYS}]})[
        "matview.freshness.postgres_default"
    ]
    (watcher,) = monitor.timetable.asset_condition.watchers
    (entry,) = watcher.trigger.views
    assert (entry["alert_after"], entry["alert_key"], entry["target"]) == (7200.0, "max_staleness", None)
    assert entry["notifiers"] == list(ALL_KEYS["on_stale"])
    doc = dag.doc_md or ""
    assert "- cron times are Europe/Berlin local time" in doc
    assert "runs in the Airflow pool `pg_main` (2 slot(s)); **the pool must exist**" in doc
    assert (
        "- max staleness: `2h` behind its sources (its lag, measured by the triggerer whether or not a run exists), "
        f"then: `{SMTP}`" in doc
    )

    context: dict[str, Any] = {}
    task.on_success_callback[0](context)
    assert context["recorded"] == ["ok"], "a plain callable notifier gets the context and its configured kwargs"
    assert context["matview"]["subject"] == "[airflow-matview] public.sales refreshed (connection postgres_default)"


def _next_runs(dag: DAG, start: datetime, count: int) -> list[str]:
    """The next ``count`` run times Airflow's scheduler computes for ``dag`` (its serialized timetable)."""
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import TimeRestriction

    timetable = DagSerialization.from_dict(DagSerialization.to_dict(dag)).timetable
    restriction = TimeRestriction(earliest=start, latest=None, catchup=True)
    runs, last = [], None
    for _ in range(count):
        info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        assert info is not None
        last = info.data_interval
        runs.append(info.run_after.astimezone(timezone.utc).strftime("%m-%d %H:%M"))
    return runs


@pytest.mark.parametrize(
    ("zone", "start", "expected"),
    [
        # Spring forward (Berlin: Sunday 29 March 2026, 02:00 -> 03:00): 02:30 does not exist, the run is at 03:30
        # CEST (01:30 UTC), one hour later on the wall clock; from then on 02:30 CEST (00:30 UTC).
        ("Europe/Berlin", "2026-03-27", ["03-27 01:30", "03-28 01:30", "03-29 01:30", "03-30 00:30", "03-31 00:30"]),
        # Fall back (Sunday 25 October 2026, 03:00 -> 02:00): 02:30 happens twice; one run, at the second one
        # (02:30 CET, 01:30 UTC), not at 02:30 CEST (00:30 UTC).
        ("Europe/Berlin", "2026-10-23", ["10-23 00:30", "10-24 00:30", "10-25 01:30", "10-26 01:30", "10-27 01:30"]),
        # New York: Sunday 8 March 2026 (02:00 -> 03:00) and Sunday 1 November 2026 (02:00 -> 01:00).
        ("America/New_York", "2026-03-06", ["03-06 07:30", "03-07 07:30", "03-08 07:30", "03-09 06:30", "03-10 06:30"]),
        ("America/New_York", "2026-10-30", ["10-30 06:30", "10-31 06:30", "11-01 07:30", "11-02 07:30", "11-03 07:30"]),
    ],
)
def test_a_local_cron_runs_once_a_night_across_dst_changes(zone: str, start: str, expected: list[str]) -> None:
    dag = build_dags({"views": [{"name": "public.nightly", "schedule": "30 2 * * *", "timezone": zone}]})[
        "matview.public.nightly"
    ]
    begin = datetime.fromisoformat(start).replace(tzinfo=timezone.utc)
    assert _next_runs(dag, begin, 5) == expected


def test_a_skipped_time_runs_later_by_the_size_of_the_jump_and_the_doc_says_so() -> None:
    view = {"name": "public.nightly", "schedule": "15 2 * * *", "timezone": "Australia/Lord_Howe"}
    dag = build_dags({"views": [view]})["matview.public.nightly"]
    # Lord Howe Island moves its clocks by 30 minutes (Sunday 4 October 2026, 02:00 -> 02:30): 02:15 does not
    # exist that night; the run is at 02:45 (+11:00, 15:45 UTC the day before), 30 minutes later on the wall clock.
    assert _next_runs(dag, datetime(2026, 10, 2, tzinfo=timezone.utc), 4) == [
        "10-02 15:45",
        "10-03 15:45",
        "10-04 15:15",
        "10-05 15:15",
    ]
    assert "when clocks go forward (02:00 -> 02:30), 02:15 does not exist: the DAG runs once, at 02:45, instead" in (
        dag.doc_md or ""
    )


def test_a_local_cron_keeps_its_wall_clock_time_for_a_whole_dst_week() -> None:
    dag = build_dags({"views": [{"name": "public.hourly", "schedule": "0 9 * * 1-5", "timezone": "America/New_York"}]})[
        "matview.public.hourly"
    ]
    runs = _next_runs(dag, datetime(2026, 3, 5, tzinfo=timezone.utc), 5)
    # 09:00 in New York every weekday: 14:00 UTC before Sunday 8 March, 13:00 UTC after.
    assert runs == ["03-05 14:00", "03-06 14:00", "03-09 13:00", "03-10 13:00", "03-11 13:00"]


def test_the_description_leads_the_dag_doc_and_may_not_hold_control_characters() -> None:
    dag = build_dags({"views": [{"name": "public.sales", "description": "Sales per shop,\nfor the morning report"}]})[
        "matview.public.sales"
    ]
    assert (dag.doc_md or "").split("\n\n")[1] == "Sales per shop,\nfor the morning report"
    plain = build_dags({"views": [{"name": "public.x"}]})["matview.public.x"].doc_md or ""
    assert plain.split("\n\n")[1].startswith("- schedule: `@daily`")
    assert problems_of({"views": [{"name": "public.a", "description": "bell\x07 and tab\tok"}]}) == [
        "views[0] (public.a): description: 'bell\\x07 and tab\\tok' holds the control character '\\x07', which would "
        "garble the listings that show it; remove it (line breaks and tabs are fine)"
    ]
