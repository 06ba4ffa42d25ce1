"""The lag monitor's DAG: one per connection with target_lag views, unpaused at creation, never running, whose
watcher measures the views with a target and, upstream first, the views they are built on."""

from __future__ import annotations

import json

from airflow_matview.factory import build_dags

NOTIFY = [{"notifier": "devtools.harness.recording_notifier.record", "label": "late"}]


def test_one_monitor_per_connection_measuring_targets_and_their_upstream_views() -> None:
    config = {
        "views": [
            {"name": "public.b", "after": ["public.a"], "target_lag": "5m", "on_stale": NOTIFY},
            {"name": "public.a", "schedule": "@hourly"},
            {"name": "public.c", "schedule": "@daily"},
            {"name": "public.d", "conn_id": "other", "target_lag": "1m", "poll_interval": "5s", "on_stale": NOTIFY},
        ]
    }
    dags = build_dags(config)
    assert sorted(dags) == [
        "matview.freshness.other",
        "matview.freshness.postgres_default",
        "matview.public.a",
        "matview.public.b",
        "matview.public.c",
        "matview.public.d",
    ]
    monitor = dags["matview.freshness.postgres_default"]
    assert monitor.tasks == [] and monitor.is_paused_upon_creation is False
    (watcher,) = monitor.timetable.asset_condition.watchers
    classpath, kwargs = watcher.trigger.serialize()
    kwargs = {**kwargs, "views": json.loads(kwargs["views"])}
    assert classpath == "airflow_matview.triggers.freshness_monitor.FreshnessTrigger"
    assert kwargs["poll_interval"] == 10.0
    assert kwargs["views"] == [
        {"view": "public.a", "dag_id": "matview.public.a", "target": None, "after": [], "notifiers": []},
        {
            "view": "public.b",
            "dag_id": "matview.public.b",
            "target": 300.0,
            "after": ["public.a"],
            "notifiers": [{"notifier": NOTIFY[0]["notifier"], "label": "late"}],
        },
    ]
    other = dags["matview.freshness.other"].timetable.asset_condition.watchers[0].trigger
    assert (other.poll_interval, [view["view"] for view in other.views]) == (5.0, ["public.d"])


def test_no_monitor_without_a_target() -> None:
    assert sorted(build_dags({"views": [{"name": "public.a", "on_change": True}]})) == ["matview.public.a"]
