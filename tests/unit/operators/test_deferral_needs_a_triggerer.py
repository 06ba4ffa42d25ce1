"""A deferrable refresh asks the API server, before deferring, whether a triggerer is alive (as a task on a worker
can: its public health endpoint, on a real HTTP server here), and never waits long for the answer; a deferral that
timed out is one line naming the view and the connection, not Airflow's bare ``TaskDeferralTimeout``."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest

from airflow_matview import RefreshMaterializedViewOperator
from airflow_matview.exceptions import MatviewRefreshError
from airflow_matview.version_compat import TaskDeferred
from devtools.harness.health_server import HealthServer

if TYPE_CHECKING:
    from collections.abc import Iterator

VIEW = "public.polls_user_matt_view"
LABEL = "connection 'postgres_default'"


@pytest.fixture(params=["", "/airflow"], ids=["root", "under-a-path"])
def api_server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[HealthServer]:
    """The API server the task talks to, as a supervised task does (the supervisor's channel stands in)."""
    from airflow.sdk.execution_time import task_runner

    with HealthServer(request.param) as server:
        monkeypatch.setenv("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", server.execution_api)
        monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", object(), raising=False)
        yield server


def execute(**kwargs: Any) -> BaseException:
    operator = RefreshMaterializedViewOperator(task_id="refresh", view=VIEW, deferrable=True, **kwargs)
    with pytest.raises((TaskDeferred, MatviewRefreshError)) as raised:
        operator.execute({})  # type: ignore[arg-type]
    return raised.value


def test_a_live_triggerer_gets_the_refresh(api_server: HealthServer) -> None:
    deferred = execute(execution_timeout=timedelta(minutes=5))
    assert isinstance(deferred, TaskDeferred)
    assert deferred.timeout == timedelta(minutes=5, seconds=30)
    assert api_server.asked == [f"{api_server.prefix}/api/v2/monitor/health"]


@pytest.mark.parametrize(
    ("triggerer", "problem"),
    [
        ({"status": None, "latest_triggerer_heartbeat": None}, "none has ever run with this metadata database"),
        ({"status": "unhealthy", "latest_triggerer_heartbeat": "HEARTBEAT"}, "the latest heartbeat was 2m ago"),
    ],
    ids=["never", "stopped"],
)
def test_no_live_triggerer_fails_at_once(api_server: HealthServer, triggerer: dict[str, Any], problem: str) -> None:
    if triggerer["latest_triggerer_heartbeat"]:
        triggerer["latest_triggerer_heartbeat"] = (datetime.now(timezone.utc) - timedelta(minutes=2)).isoformat()
    api_server.triggerer = triggerer
    error = execute()
    assert isinstance(error, MatviewRefreshError)
    assert str(error) == (
        f"Cannot refresh {VIEW} ({LABEL}) in Airflow's triggerer (deferrable): no Airflow triggerer is running "
        f"({problem}). Start one (`airflow triggerer`), or set deferrable to false to refresh on the worker; "
        "Airflow retries the task if retries remain."
    )


def test_an_api_server_that_cannot_say_does_not_stop_the_deferral(api_server: HealthServer) -> None:
    api_server.triggerer = None  # no health endpoint (404)
    assert isinstance(execute(), TaskDeferred)
    api_server.silent = True  # accepts, never answers
    started = time.monotonic()
    deferred = execute()
    assert isinstance(deferred, TaskDeferred)
    assert time.monotonic() - started < 10
    assert deferred.timeout == timedelta(hours=1, seconds=30), "bounded without an execution_timeout too"


def test_outside_a_supervised_task_nothing_is_asked(api_server: HealthServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.execution_time import task_runner

    api_server.triggerer = {"status": None, "latest_triggerer_heartbeat": None}
    monkeypatch.delattr(task_runner, "SUPERVISOR_COMMS")  # a bare execute(), as in dag.test() with its own trigger
    assert isinstance(execute(), TaskDeferred)
    assert api_server.asked == []


@pytest.mark.parametrize(
    ("execution_timeout", "within"),
    [
        (timedelta(seconds=10), "40s (execution_timeout and 30s)"),
        (None, "1h30s (1h without an execution_timeout, and 30s)"),
    ],
)
def test_a_deferral_that_timed_out_is_one_line(
    api_server: HealthServer, execution_timeout: timedelta | None, within: str
) -> None:
    operator = RefreshMaterializedViewOperator(
        task_id="refresh", view=VIEW, deferrable=True, execution_timeout=execution_timeout
    )
    fail = {"error": "Trigger timeout", "traceback": None}
    with pytest.raises(MatviewRefreshError) as alive:
        operator.resume_execution("__fail__", fail, {})  # type: ignore[arg-type]
    assert str(alive.value) == (
        f"The deferred refresh of {VIEW} ({LABEL}) did not finish within {within}, and Airflow gave it up: no "
        "triggerer picked it up in time, or it ran longer than that: check that `airflow triggerer` is running and "
        "healthy, or raise execution_timeout. Airflow retries the task if retries remain."
    )
    api_server.triggerer = {"status": "unhealthy", "latest_triggerer_heartbeat": None}
    with pytest.raises(MatviewRefreshError) as dead:
        operator.resume_execution("__fail__", fail, {})  # type: ignore[arg-type]
    assert "and Airflow gave it up: no Airflow triggerer is running (none has ever run with this metadata " in str(
        dead.value
    )
