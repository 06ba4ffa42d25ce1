"""The lag monitor's DAG: one per connection with target_lag views, unpaused at creation, never running, whose
watcher measures the views with a target and, upstream first, the views they are built on."""

from __future__ import annotations

import json

import pytest

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
        {
            "view": "public.a",
            "dag_id": "matview.public.a",
            "target": None,
            "alert_after": None,
            "alert_key": "target_lag",
            "after": [],
            "notifiers": [],
            "watched": False,
            "min_interval": None,
            "schedule": "@hourly",
        },
        {
            "view": "public.b",
            "dag_id": "matview.public.b",
            "target": 300.0,
            "alert_after": 300.0,
            "alert_key": "target_lag",
            "after": ["public.a"],
            "notifiers": [{"notifier": NOTIFY[0]["notifier"], "label": "late"}],
            "watched": True,
            "min_interval": 0.0,
            "schedule": None,
        },
    ]
    assert dags["matview.public.a"].tasks[0].record_freshness, "an upstream view records what it reflects too"
    assert not dags["matview.public.c"].tasks[0].record_freshness
    other = dags["matview.freshness.other"].timetable.asset_condition.watchers[0].trigger
    assert (other.poll_interval, [view["view"] for view in other.views]) == (5.0, ["public.d"])


def test_max_staleness_is_a_lag_threshold_of_the_monitor_and_target_lag_its_default() -> None:
    config = {
        "views": [
            {"name": "public.nightly", "schedule": "@daily", "max_staleness": "2h", "on_stale": NOTIFY},
            {
                "name": "public.both",
                "target_lag": "5m",
                "max_staleness": "15m",
                "min_interval": "1m",
                "on_stale": NOTIFY,
            },
        ]
    }
    dags = build_dags(config)
    assert dags["matview.public.nightly"].deadline is None, "no Deadline Alert: the lag monitor alerts"
    (watcher,) = dags["matview.freshness.postgres_default"].timetable.asset_condition.watchers
    nightly, both = watcher.trigger.views
    assert (nightly["alert_after"], nightly["alert_key"], nightly["target"], nightly["watched"]) == (
        7200.0,
        "max_staleness",
        None,
        False,
    )
    assert (both["alert_after"], both["alert_key"], both["target"], both["min_interval"]) == (
        900.0,
        "max_staleness",
        300.0,
        60.0,
    )


def test_a_max_staleness_shorter_than_the_target_lag_is_refused() -> None:
    from airflow_matview.exceptions import InvalidConfigFileError

    view = {"name": "public.a", "target_lag": "10m", "max_staleness": "5m", "on_stale": NOTIFY}
    with pytest.raises(InvalidConfigFileError) as raised:
        build_dags({"views": [view]})
    assert "max_staleness: 5m is shorter than target_lag 10m, so the view would be called stale while on target" in str(
        raised.value
    )


def test_no_monitor_without_a_target() -> None:
    assert sorted(build_dags({"views": [{"name": "public.a", "on_change": True}]})) == ["matview.public.a"]
