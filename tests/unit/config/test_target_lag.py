"""``target_lag``: a duration per view or in defaults; it watches the sources as on_change does, the target (not
min_interval's default) decides when, and what cannot meet it is refused."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_matview.config import InvalidConfigFileError, load_config
from devtools.harness.scenario import VIEW


def _problems(config: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidConfigFileError) as raised:
        load_config(config)
    return raised.value.problems


def test_a_target_watches_the_sources_with_no_schedule_and_no_min_interval_floor() -> None:
    (view,) = load_config({"views": [{"name": VIEW, "target_lag": "2m"}]}).views
    assert view.watched and not view.on_change and view.schedule is None
    assert view.target_lag is not None and view.target_lag.total_seconds() == 120
    assert view.watch_min_interval.total_seconds() == 0
    (explicit,) = load_config({"views": [{"name": VIEW, "target_lag": "2m", "min_interval": "30s"}]}).views
    assert explicit.watch_min_interval.total_seconds() == 30
    # In defaults: every view has it; a schedule of its own still applies too.
    config = {
        "defaults": {"target_lag": "5m"},
        "views": [{"name": "public.a"}, {"name": "public.b", "schedule": "@daily"}],
    }
    a, b = load_config(config).views
    assert (a.schedule, b.schedule) == (None, "@daily")


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"target_lag": "500ms"}, "target_lag: '500ms' is under a second, sooner than a change can be seen"),
        ({"target_lag": "soon"}, "target_lag: 'soon' is not a duration"),
        (
            {"target_lag": "10s"},
            "target_lag: 10s is not longer than poll_interval 10s, and a change is seen up to one poll_interval "
            "after its commit; lengthen target_lag or shorten poll_interval",
        ),
        (
            {"target_lag": "1m", "min_interval": "1m"},
            "min_interval: 1m keeps runs further apart than target_lag 1m allows; shorten min_interval or remove "
            "it (the target then decides)",
        ),
        ({"target_lag": "1m", "schedule": "@once"}, "schedule: @once cannot be combined with target_lag"),
    ],
)
def test_a_target_that_cannot_be_met_is_refused(settings: dict[str, Any], problem: str) -> None:
    (found,) = _problems({"views": [{"name": VIEW, **settings}]})
    assert found.startswith(f"views[0] ({VIEW}): "), found
    assert problem in found, found


def test_poll_interval_is_used_by_a_target_alone() -> None:
    (view,) = load_config({"views": [{"name": VIEW, "target_lag": "1m", "poll_interval": "2s"}]}).views
    assert view.poll_interval.total_seconds() == 2
    assert load_config({"defaults": {"poll_interval": "2s", "target_lag": "1m"}, "views": [{"name": VIEW}]})
