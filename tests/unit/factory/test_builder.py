"""The DAG factory: one DAG per view with the promised settings, a task process building only its own DAG,
schedules from ``after:``, and the trigger form's params."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_matview.factory import build_dags
from devtools.harness.configs import THREE_VIEWS


def test_one_dag_per_view_with_the_promised_settings() -> None:
    dags = build_dags(THREE_VIEWS)
    assert sorted(dags) == ["matview.public.Daily_Totals", "matview.public.polls_user_matt_view", "rollup"]

    dag = dags["matview.public.polls_user_matt_view"]
    assert (dag.catchup, dag.max_active_runs) == (False, 1)
    assert dag.tags == {"matview", "reporting"}
    assert dag.schedule == "*/5 * * * *"
    assert "`public.polls_user_matt_view`" in (dag.doc_md or "")
    assert "`warehouse`" in (dag.doc_md or "")
    assert "`*/5 * * * *`" in (dag.doc_md or "")
    assert dag.params["concurrently"] == "auto"
    assert dag.params["analyze"] is False
    (task,) = dag.tasks
    assert task.task_id == "refresh"
    assert (task.retries, task.retry_delay) == (3, timedelta(minutes=1))
    assert task.execution_timeout == timedelta(hours=1)

    manual = dags["matview.public.Daily_Totals"]
    assert manual.schedule is None
    assert "manual runs only" in (manual.doc_md or "")
    assert (manual.params["concurrently"], manual.params["analyze"]) == ("false", True)


def test_a_task_process_builds_only_its_own_dag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "rollup")
    assert list(build_dags(THREE_VIEWS)) == ["rollup"]
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "some_other_files_dag")
    assert len(build_dags(THREE_VIEWS)) == 3


def test_the_trigger_forms_concurrently_suggests_each_choice_once_and_takes_json_booleans() -> None:
    """The form renders the serialized schema: a text field with the suggestions auto/true/false (a select would
    list its enum, true and false twice); triggering validates the run's conf against the same schema."""
    from airflow.serialization.serialized_objects import DagSerialization

    dag = build_dags({"views": [{"name": "public.v", "concurrently": False}]})["matview.public.v"]
    served = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    param = served.params.get_param("concurrently")
    assert param.value == "false"
    assert "enum" not in param.schema
    assert param.schema["examples"] == ["auto", "true", "false"]
    for value in ("auto", "true", "false", True, False):
        assert served.params.deep_merge({"concurrently": value}).validate()["concurrently"] == value
    for value, reason in [
        ("maybe", "'maybe' does not match '^(auto|true|false)$'"),
        ("TRUE", "'TRUE' does not match '^(auto|true|false)$'"),
        (1, "1 is not of type 'string', 'boolean'"),
        (None, "None is not of type 'string', 'boolean'"),
    ]:
        with pytest.raises(Exception, match="Invalid input for param concurrently") as raised:
            served.params.deep_merge({"concurrently": value}).validate()
        assert reason in str(raised.value)


def test_a_view_with_after_and_a_schedule_runs_on_either() -> None:
    dags = build_dags(
        {
            "views": [
                {"name": "public.a"},
                {"name": "public.b", "after": ["public.a"]},
                {"name": "public.c", "after": ["public.a"], "schedule": "@hourly"},
            ]
        }
    )
    assert type(dags["matview.public.b"].timetable).__name__ == "AssetTriggeredTimetable"
    either = dags["matview.public.c"].timetable
    assert type(either).__name__ == "AssetOrTimeSchedule"
    assert "after each refresh of `public.a`, and on `@hourly`" in (dags["matview.public.c"].doc_md or "")
