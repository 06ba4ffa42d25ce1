"""on_change in the config and the DAG's schedule: an asset with a watcher on the view's sources. The polls against
real servers are in ``tests/integration/triggers/test_source_changes.py``, the whole path through a real
triggerer in ``tests/system/test_on_change_stack.py``."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_matview.config import InvalidConfigFileError, load_config
from airflow_matview.factory import build_dags
from devtools.harness.scenario import VIEW


def _config(**view: object) -> dict[str, Any]:
    return {"views": [{"name": VIEW, **view}]}


def _assets(condition: Any) -> list[Any]:
    return [condition] if hasattr(condition, "uri") else [a for part in condition.objects for a in _assets(part)]


def test_on_change_alone_runs_only_on_changes() -> None:
    (view,) = load_config(_config(on_change=True)).views
    assert view.on_change and view.schedule is None
    assert load_config(_config(on_change="TRUE")).views[0].schedule is None
    assert load_config({"defaults": {"on_change": "true", "schedule": "@hourly"}, **_config()}).views[0].schedule == (
        "@hourly"
    )
    assert (view.poll_interval.total_seconds(), view.min_interval.total_seconds()) == (10, 60)
    dags = build_dags(_config(on_change=True, poll_interval="1s", min_interval="500ms"))
    dag = dags["matview.public.polls_user_matt_view"]
    (asset,) = _assets(dag.timetable.asset_condition)
    assert asset.uri == "matview-sources://postgres_default/public/polls_user_matt_view"
    (watcher,) = asset.watchers
    assert watcher.trigger.serialize() == (
        "airflow_matview.triggers.source_changes.SourceChangesTrigger",
        {"conn_id": "postgres_default", "view": VIEW, "poll_interval": 1.0, "min_interval": 0.5},
    )


def test_on_change_combines_with_schedule_and_after() -> None:
    config = {
        "defaults": {"on_change": "true", "poll_interval": 2},
        "views": [{"name": "public.a", "schedule": "*/5 * * * *"}, {"name": "public.b", "after": ["public.a"]}],
    }
    dags = build_dags(config)
    a, b = dags["matview.public.a"], dags["matview.public.b"]
    assert type(a.timetable).__name__ == "AssetOrTimeSchedule"
    assert [asset.uri for asset in _assets(a.timetable.asset_condition)] == [
        "matview-sources://postgres_default/public/a"
    ]
    assert type(b.timetable).__name__ == "AssetTriggeredTimetable"
    assert sorted(asset.uri for asset in _assets(b.timetable.asset_condition)) == [
        "matview-sources://postgres_default/public/b",
        "matview://postgres_default/public/a",
    ]
    assert "when its sources change (polled every 0:00:02" in b.doc_md


@pytest.mark.parametrize(
    ("view", "message"),
    [
        ({"on_change": "yes please"}, "on_change: 'yes please' is not allowed; use true or false"),
        ({"on_change": True, "poll_interval": "0s"}, "poll_interval:"),
        ({"on_change": True, "min_interval": "soon"}, "min_interval:"),
        ({"on_change": True, "schedule": "@once"}, "schedule: @once cannot be combined with on_change"),
    ],
)
def test_bad_on_change_settings_are_one_clear_line(view: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidConfigFileError) as error:
        load_config(_config(**view))
    (problem,) = error.value.problems
    assert problem.startswith(f"views[0] ({VIEW}): ") and message in problem, problem


def test_the_dag_runs_on_its_watcher_which_carries_the_target() -> None:
    dag = build_dags({"views": [{"name": VIEW, "target_lag": "45s", "poll_interval": "5s"}]})[
        "matview.public.polls_user_matt_view"
    ]
    (asset,) = _assets(dag.timetable.asset_condition)
    (watcher,) = asset.watchers
    assert watcher.trigger.serialize()[1] == {
        "conn_id": "postgres_default",
        "view": VIEW,
        "poll_interval": 5.0,
        "min_interval": 0.0,
        "target_lag": 45.0,
    }
    assert "within `target_lag` 0:00:45" in dag.doc_md
