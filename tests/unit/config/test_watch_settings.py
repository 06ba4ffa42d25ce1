"""``poll_interval`` and ``min_interval`` (the on_change watcher's settings): a floor of one second between polls,
and no setting that nothing uses. On a view they need ``on_change: true``; in ``defaults:``, which every view
inherits, they need at least one view with ``on_change: true`` (views without it simply do not watch)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from airflow_matview.config import InvalidConfigFileError, load_config

FLOOR = (
    "is under a second: every poll is a catalog query on the view's database, and the watcher would run it many "
    "times a second; use at least 1s (default 10s)"
)


def _problems(config: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidConfigFileError) as raised:
        load_config(config)
    return raised.value.problems


@pytest.mark.parametrize("value", ["1ms", "500ms", "0.999s", 0.5, "0.2"])
def test_a_poll_interval_under_a_second_is_refused(value: object) -> None:
    assert _problems({"views": [{"name": "public.a", "on_change": True, "poll_interval": value}]}) == [
        f"views[0] (public.a): poll_interval: {value!r} {FLOOR}"
    ]


def test_a_poll_interval_under_a_second_in_defaults_is_refused_once() -> None:
    config = {"defaults": {"on_change": True, "poll_interval": "1ms"}, "views": [{"name": "public.a"}]}
    assert _problems(config) == [f"defaults: poll_interval: '1ms' {FLOOR}"]


@pytest.mark.parametrize("value", ["1s", 1, "1000ms", "10m"])
def test_a_poll_interval_from_one_second_is_accepted(value: object) -> None:
    view = load_config({"views": [{"name": "public.a", "on_change": True, "poll_interval": value}]}).views[0]
    assert view.poll_interval >= timedelta(seconds=1)


@pytest.mark.parametrize("key", ["poll_interval", "min_interval"])
@pytest.mark.parametrize("on_change", [None, False, "false"])
def test_a_watch_setting_on_a_view_without_on_change_is_refused(key: str, on_change: object) -> None:
    view: dict[str, Any] = {"name": "public.a", key: "30s"}
    if on_change is not None:
        view["on_change"] = on_change
    uses = "on_change: true, target_lag or max_staleness" if key == "poll_interval" else "on_change: true"
    fix = "set one of them" if key == "poll_interval" else "set on_change: true"
    assert _problems({"views": [view]}) == [
        f"views[0] (public.a): {key}: is only used with {uses}, which this view does not set; {fix} or remove {key}"
    ]


def test_a_poll_interval_paces_the_lag_monitor_of_a_max_staleness_view() -> None:
    notify = [{"notifier": "airflow.providers.smtp.notifications.smtp.SmtpNotifier", "to": "ops@example.com"}]
    view = {"name": "public.a", "max_staleness": "1m", "poll_interval": "2s", "on_stale": notify}
    assert load_config({"views": [view]}).views[0].poll_interval == timedelta(seconds=2)
    assert _problems({"views": [{**view, "min_interval": "5m"}]}) == [
        "views[0] (public.a): min_interval: is only used with on_change: true, which this view does not set; "
        "set on_change: true or remove min_interval"
    ]


def test_watch_settings_in_defaults_need_one_view_that_watches() -> None:
    defaults = {"poll_interval": "30s", "min_interval": "5m"}
    assert _problems({"defaults": defaults, "views": [{"name": "public.a"}, {"name": "public.b"}]}) == [
        "defaults: min_interval, poll_interval: no view has on_change: true, so they are never used; set on_change "
        "on the views to watch, or remove them"
    ]
    views = load_config(
        {"defaults": defaults, "views": [{"name": "public.a"}, {"name": "public.b", "on_change": True}]}
    ).views
    assert [(v.on_change, v.poll_interval.total_seconds()) for v in views] == [(False, 30), (True, 30)]


def test_a_view_may_set_its_own_watch_settings_over_defaults_that_watch() -> None:
    config = {
        "defaults": {"on_change": True, "poll_interval": "30s"},
        "views": [{"name": "public.a", "poll_interval": "5s"}, {"name": "public.b", "on_change": False}],
    }
    views = load_config(config).views
    assert [(v.on_change, v.poll_interval.total_seconds()) for v in views] == [(True, 5), (False, 30)]


def test_poll_interval_is_accepted_with_max_staleness_alone_as_the_lag_monitor_polls_at_it() -> None:
    from airflow_matview.factory.monitor import build_monitors

    stale = {
        "schedule": "@daily",
        "max_staleness": "2h",
        "on_stale": [{"notifier": "devtools.harness.recording_notifier.record_any"}],
    }
    views = load_config({"views": [{"name": "public.a", "poll_interval": "1m", **stale}]}).views
    monitor = build_monitors(views)["matview.freshness.postgres_default"]
    assert [watcher.trigger.poll_interval for watcher in monitor.timetable.asset_condition.watchers] == [60.0]
    in_defaults = load_config(
        {"defaults": {"poll_interval": "1m", "min_interval": "5m"}, "views": [{"name": "public.a", "on_change": True}]}
    )
    assert in_defaults.views[0].poll_interval.total_seconds() == 60
    assert _problems(
        {"defaults": {"poll_interval": "1m", "min_interval": "5m"}, "views": [{"name": "a.b", **stale}]}
    ) == [
        "defaults: min_interval: no view has on_change: true, so it is never used; set on_change on the views to "
        "watch, or remove it"
    ]
