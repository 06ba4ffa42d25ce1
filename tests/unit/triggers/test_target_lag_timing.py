"""The watcher with a target_lag: changes wait (coalescing) until a refresh started then only just meets the target,
nothing fires while nothing changes, and sources that cannot be watched fire on the period derived from the target.
The polls are fed as the shared poll yields them, with the clock under the test's control."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from airflow_matview.triggers import source_changes
from airflow_matview.triggers.source_changes import SourceChangesTrigger, ViewState
from devtools.harness.fingerprints import signals as _signals

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import pytest

VIEW = "public.v"


def _fired_at(
    trigger: SourceChangesTrigger, polls: list[tuple[float, ViewState]], monkeypatch: pytest.MonkeyPatch
) -> list[tuple[float, dict[str, Any]]]:
    """Feed ``polls`` (time, state) to the trigger; the times its events left at, with their payloads."""
    clock = [0.0]
    monkeypatch.setattr(source_changes.time, "time", lambda: clock[0])
    source_changes._LAST_FIRED.clear()

    async def stream() -> AsyncIterator[dict[str, ViewState]]:
        for at, state in polls:
            clock[0] = at
            yield {VIEW: state}

    async def run() -> list[tuple[float, dict[str, Any]]]:
        return [(clock[0], event.payload) async for event in trigger._fire_on_change(stream())]

    return asyncio.run(run())


def test_changes_wait_as_long_as_the_target_allows_then_fire_once(monkeypatch: pytest.MonkeyPatch) -> None:
    trigger = SourceChangesTrigger("pg", VIEW, poll_interval=5, min_interval=0, target_lag=60)
    polls = [(0.0, ViewState(_signals(0), {}))]  # no baseline: one refresh, to record what the view reflects
    polls += [(float(t), ViewState(_signals(t), {"10": "public.t"})) for t in range(5, 200, 5)]  # a commit a poll
    fired = _fired_at(trigger, polls, monkeypatch)
    # Lead: 60 s target - 5 s poll - 10 s from event to commit (not measured yet) = 45 s after the first change (5 s).
    assert [at for at, _ in fired] == [0.0, 50.0, 100.0, 150.0]
    assert fired[0][1]["changed"] == ["none recorded yet: one refresh to start measuring its lag"]
    assert fired[1][1]["changed"] == ["public.t"]


def test_nothing_fires_while_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    trigger = SourceChangesTrigger("pg", VIEW, poll_interval=5, min_interval=0, target_lag=60)
    polls = [(float(t), ViewState(_signals(0), {})) for t in range(0, 600, 5)]
    assert [at for at, _ in _fired_at(trigger, polls, monkeypatch)] == [0.0]  # only the first, recording refresh


def test_a_measured_refresh_time_starts_the_refresh_earlier(monkeypatch: pytest.MonkeyPatch) -> None:
    trigger = SourceChangesTrigger("pg", VIEW, poll_interval=5, min_interval=0, target_lag=60)
    monkeypatch.setitem(source_changes._FIRE_TO_COMMIT, ("pg", VIEW), 30.0)
    polls = [(0.0, ViewState(_signals(0), {})), (5.0, ViewState(_signals(1), {}))]
    polls += [(float(t), ViewState(_signals(1), {})) for t in range(10, 100, 5)]
    assert [at for at, _ in _fired_at(trigger, polls, monkeypatch)] == [0.0, 30.0]  # 5 + (60 - 5 - 30)


def test_without_a_target_a_change_fires_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    trigger = SourceChangesTrigger("pg", VIEW, poll_interval=5, min_interval=0)
    polls = [(0.0, ViewState(_signals(0), {})), (5.0, ViewState(_signals(1), {}))]
    assert [at for at, _ in _fired_at(trigger, polls, monkeypatch)] == [5.0]
    assert "target_lag" not in trigger.serialize()[1]


def test_unwatchable_sources_fire_on_the_period_the_target_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    why = "public.remote cannot be tracked (a foreign table or a sequence); it refreshes on its schedule only"
    trigger = SourceChangesTrigger("pg", VIEW, poll_interval=5, min_interval=0, target_lag=60)
    polls = [(float(t), ViewState(None, {}, why)) for t in range(1000, 1200, 5)]
    fired = _fired_at(trigger, polls, monkeypatch)
    assert [at for at, _ in fired] == [1000.0, 1050.0, 1100.0, 1150.0]  # every 60 s - 10 s
    assert fired[0][1]["changed"] == [f"none seen: {why}; refreshed every 50s"]
    # Without a target such a view is left to its schedule.
    plain = SourceChangesTrigger("pg", VIEW, poll_interval=5, min_interval=0)
    assert _fired_at(plain, polls, monkeypatch) == []


def test_a_view_that_does_not_exist_is_not_refreshed_on_the_period(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = ViewState(None, {}, "it does not exist (yet); watching for it to be created", False)
    trigger = SourceChangesTrigger("pg", VIEW, poll_interval=5, min_interval=0, target_lag=60)
    assert _fired_at(trigger, [(float(t), missing) for t in range(1000, 1200, 5)], monkeypatch) == []
