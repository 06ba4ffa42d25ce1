"""Why the lag monitor says a view is behind: from its watcher (a refresh requested, held by ``min_interval``, no
watcher here), its DAG's runs (queued, running, none: the scheduler) and its last failed refresh, each in one line
that names the time and what to look at. Airflow's answers are stood in for (the real triggerer's are in
tests/system/test_lag_alerts_stack.py)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from airflow_matview.freshness import Lag, unknown
from airflow_matview.triggers import freshness_monitor, source_changes
from airflow_matview.triggers.freshness_monitor import FreshnessTrigger, Watched

if TYPE_CHECKING:
    import pytest

CONN, VIEW, DAG_ID = "warehouse", "public.orders", "matview.public.orders"


def _reason(
    monkeypatch: pytest.MonkeyPatch,
    *,
    lag: Lag,
    spec: dict[str, Any] | None = None,
    fired_ago: float | None = None,
    facts: tuple[int, int, tuple[float, str] | None] | Exception = (0, 0, None),
    watchers: int = 2,
    never_refreshed: bool = False,
) -> str:
    now = time.time()
    trigger = FreshnessTrigger(CONN, 1.0, [])
    view = Watched({"view": VIEW, "dag_id": DAG_ID, "target": 60.0, "watched": True, **(spec or {})}, lag=lag)
    view.record.refreshed_at = None if never_refreshed else now - 3600
    monkeypatch.setattr(
        source_changes, "_LAST_FIRED", {} if fired_ago is None else {(CONN, VIEW): (now - fired_ago, None)}
    )
    monkeypatch.setattr(source_changes, "_WATCHED", {trigger.shared_stream_key(): Counter({VIEW: watchers})})

    def run_facts(dag_id: str, conn_id: str, name: str) -> tuple[int, int, tuple[float, str] | None]:
        assert (dag_id, conn_id, name) == (DAG_ID, CONN, VIEW)
        if isinstance(facts, Exception):
            raise facts
        return facts

    monkeypatch.setattr(freshness_monitor, "_run_facts", run_facts)
    return asyncio.run(trigger._reason(view, now))


def _behind(seconds: float) -> Lag:
    return Lag(seconds, "sources", time.time() - seconds, "a source change not reflected yet")


def test_a_requested_refresh_with_no_run_points_at_the_scheduler(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = _reason(monkeypatch, lag=_behind(90), fired_ago=40)
    assert "a refresh was requested at" in reason and "none has committed since" in reason
    assert f"no run of {DAG_ID} is queued or running: its DAG is paused, or the scheduler has not started one" in reason
    assert "airflow jobs check --job-type SchedulerJob" in reason


def test_a_queued_run_and_a_running_one_are_told_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    queued = _reason(monkeypatch, lag=_behind(90), fired_ago=40, facts=(1, 0, None))
    assert f"a run of {DAG_ID} is queued and has not started" in queued
    running = _reason(monkeypatch, lag=_behind(90), fired_ago=40, facts=(0, 1, None))
    assert f"a run of {DAG_ID} is running and has not committed" in running


def test_a_failure_since_the_request_is_told_with_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    failed = (time.time() - 5, "DivisionByZero: division by zero")
    reason = _reason(monkeypatch, lag=_behind(90), fired_ago=40, facts=(0, 0, failed))
    assert "its refresh failed at" in reason and "(DivisionByZero: division by zero)" in reason
    older = (time.time() - 300, "DivisionByZero: division by zero")
    assert "failed" not in _reason(monkeypatch, lag=_behind(90), fired_ago=40, facts=(0, 0, older)), "before it"


def test_runs_that_cannot_be_read_still_give_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = _reason(monkeypatch, lag=_behind(90), fired_ago=40, facts=RuntimeError("no comms"))
    assert reason.endswith("its run is queued, running or failing (its state could not be read)")


def test_a_change_held_by_min_interval_says_until_when(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = _reason(monkeypatch, lag=_behind(30), spec={"min_interval": 600.0}, fired_ago=120)
    assert "its refresh waits for min_interval (10m) until" in reason
    assert "not requested yet" in _reason(monkeypatch, lag=_behind(30), spec={"min_interval": 60.0}, fired_ago=120)


def test_no_watcher_here_is_a_paused_dag_or_another_triggerer(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = _reason(monkeypatch, lag=_behind(90), watchers=1)
    assert "no watcher requests its refresh in this triggerer (its DAG is paused" in reason


def test_a_scheduled_view_says_it_waits_for_its_schedule_and_what_its_runs_do(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = {"watched": False, "schedule": "@daily", "min_interval": None}
    idle = _reason(monkeypatch, lag=_behind(9000), spec=spec)
    assert idle.endswith("; it is refreshed on its schedule (@daily), and has not been since"), "no one to blame"
    running = _reason(monkeypatch, lag=_behind(9000), spec=spec, facts=(0, 1, None))
    assert "on its schedule (@daily), and a run of matview.public.orders is running" in running


def test_an_unknown_lag_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = _reason(monkeypatch, lag=unknown("no measurement for 2m"))
    assert reason == "its lag cannot be measured: no measurement for 2m"


def test_a_view_never_refreshed_since_it_is_measured_says_so_rather_than_a_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = {"watched": False, "schedule": None}
    reason = _reason(monkeypatch, lag=_behind(90), spec=spec, never_refreshed=True)
    assert reason.startswith("no refresh of it has been recorded since its lag is measured (")
    assert reason.endswith("; it is refreshed only when triggered (it has no schedule), and has not been since")
    assert "sources changed" not in reason


def test_a_view_built_after_others_says_their_refreshes_start_it_not_that_it_has_no_schedule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chained = {"watched": False, "schedule": None, "after": ["public.lines", "public.customers"]}
    reason = _reason(monkeypatch, lag=_behind(9000), spec=chained)
    assert reason.endswith(
        "; it is refreshed when public.lines or public.customers is refreshed, and has not been since"
    ), reason
    assert "no schedule" not in reason
    both = _reason(monkeypatch, lag=_behind(9000), spec={**chained, "after": ["public.lines"], "schedule": "@hourly"})
    assert "; it is refreshed when public.lines is refreshed and on its schedule (@hourly), and has not" in both


def test_a_slow_answer_on_the_runs_holds_up_neither_the_measurement_nor_the_other_views_alerts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Airflow's answer takes longer than the limit: each alert waits at most the limit, all at once, in the
    # background; the measurement goes on, and a view's recovery is told after its alert, never before.
    monkeypatch.setattr(freshness_monitor, "RUN_FACTS_TIME_LIMIT", 0.3)
    monkeypatch.setattr(freshness_monitor, "_run_facts", lambda *args: time.sleep(1.0))
    monkeypatch.setattr(source_changes, "_LAST_FIRED", {})
    names = [f"public.v{number}" for number in range(3)]
    specs = [{"view": name, "dag_id": f"matview.{name}", "target": 60.0, "watched": False} for name in names]
    trigger = FreshnessTrigger(CONN, 1.0, specs)
    sent: list[tuple[str, str, str | None]] = []

    async def notify(event: str, spec: Any, conn_id: str, lag: Lag, reason: str | None, now: float) -> list[str]:
        sent.append((event, spec["view"], reason))
        return []

    async def nothing(*args: Any) -> None:
        return None

    monkeypatch.setattr("airflow_matview.alerting.lag_alerts.notify_lag", notify)
    monkeypatch.setattr(FreshnessTrigger, "_store_call", nothing)
    views = [Watched(spec, stale_after=3600.0) for spec in trigger.views]
    for view in views:
        view.record.refreshed_at, view.record.measured_at = 1.0, 1999.0
        view.record.pending = [[1000.0, 1000.0, None]]

    async def scenario() -> float:
        reader = asyncio.get_running_loop().create_future()  # the poll still runs
        started = time.monotonic()
        await trigger._measure(views, {}, 2000.0, reader)
        took = time.monotonic() - started
        for view in views[:1]:
            view.record.pending = []
        await trigger._measure(views, {}, 2001.0, reader)
        while trigger._sending:
            await asyncio.gather(*trigger._sending)
        return took

    took = asyncio.run(scenario())
    assert took < 0.2, f"the measurement waited {took:.1f}s for the reasons"
    assert sorted(sent[:3]) == [("behind", name, sent[0][2]) for name in names]
    assert sent[0][2] is not None and sent[0][2].endswith("and has not been since")
    assert sent[3] == ("caught_up", names[0], None), "after its alert"
