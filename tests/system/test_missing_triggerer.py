"""``deferrable: true`` without a triggerer, in a real Airflow (api-server, scheduler, dag-processor, LocalExecutor;
the triggerer started only later): the task fails at once naming the view, the connection and the missing
triggerer, with ``execution_timeout: null`` too; a triggerer that stops after the deferral fails it within
``execution_timeout`` and 30 s, saying so; ``airflow-matview check`` reports the missing triggerer in one line.
One stack serves the whole module; its tests run in order.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from devtools.harness.airflow_stack import session_pids
from devtools.harness.deployment import Deployment, deployed, matviews_dags
from devtools.harness.scenario import create_reference_scenario

if TYPE_CHECKING:
    from collections.abc import Iterator

    import psycopg

CLI = Path(sys.executable).parent / "airflow-matview"
SMTP = "airflow.providers.smtp.notifications.smtp.SmtpNotifier"
FAST_DAG = "matview.public.polls_user_matt_view"
SLOW_DAG = "matview.public.slow_view"
LABEL = "connection 'postgres_default'"
NO_TRIGGERER_EVER = "no Airflow triggerer is running (none has ever run with this metadata database)"

pytestmark = pytest.mark.timeout(900)


def _scenario(conn: psycopg.Connection) -> None:
    create_reference_scenario(conn)
    conn.execute("CREATE TABLE refresh_delay (seconds float)")
    conn.execute("INSERT INTO refresh_delay VALUES (0)")
    conn.execute(
        "CREATE MATERIALIZED VIEW slow_view AS SELECT id, name FROM polls_user "
        "WHERE (SELECT pg_sleep(seconds)::text FROM refresh_delay) = ''"
    )
    conn.execute("CREATE UNIQUE INDEX ON slow_view (id)")
    conn.execute("CREATE MATERIALIZED VIEW watched AS SELECT name FROM polls_user")
    conn.execute("CREATE MATERIALIZED VIEW watched_for_staleness AS SELECT id FROM polls_user")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    config = {
        "defaults": {"schedule": None, "retries": 0, "deferrable": True},
        "views": [
            {"name": "public.polls_user_matt_view", "execution_timeout": None},
            {"name": "public.slow_view", "execution_timeout": "10s"},
            # Also need a triggerer: the watcher of on_change; the alert of max_staleness (not the refresh).
            {"name": "public.watched", "deferrable": False, "on_change": True},
            {
                "name": "public.watched_for_staleness",
                "deferrable": False,
                "max_staleness": "1h",
                "on_stale": [{"notifier": SMTP, "to": "ops@example.com"}],
            },
        ],
    }
    dags = matviews_dags(tmp_path_factory.mktemp("dags"), config)
    env = {
        # The scheduler looks for deferrals past their timeout every 5 s (15 s by default): the test waits less. A
        # stopped triggerer is called dead 30 s after its last heartbeat (the default: on a loaded machine a live
        # triggerer's heartbeat was seen 19 s late, and the deferral refused).
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "30",
        "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "5",
    }
    with deployed(dags, _scenario, (FAST_DAG, SLOW_DAG), unpause=True, triggerer=False, env=env) as up:
        yield up


def _check(deployment: Deployment) -> subprocess.CompletedProcess[str]:
    config = Path(deployment.stack.env["AIRFLOW__CORE__DAGS_FOLDER"]) / "matviews.yaml"
    env = {**deployment.stack.env, "PATH": os.environ.get("PATH", "")}
    return subprocess.run([str(CLI), "check", str(config)], env=env, capture_output=True, text=True, timeout=120)


def _failure(deployment: Deployment, dag_id: str, run_id: str) -> str:
    """The error that ended the task, as its log states it."""
    task = deployment.api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/refresh")
    assert (task["state"], task["try_number"]) == ("failed", 1), task
    log = deployment.api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/refresh/logs/1?full_content=true")
    errors = [entry for entry in log["content"] if entry.get("level") == "error" and entry.get("error_detail")]
    assert errors, log["content"][-10:]
    detail = errors[-1]["error_detail"][-1]
    return f"{detail['exc_type']}: {detail['exc_value']}"


def test_check_reports_the_missing_triggerer(deployment: Deployment) -> None:
    done = _check(deployment)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for why, views in [
        ("deferrable: true refreshes the view in the triggerer", 2),
        ("on_change: true watches the view's sources from the triggerer", 1),
        ("max_staleness: the triggerer measures its lag and sends its on_stale alert", 1),
    ]:
        line = f"        triggerer: {NO_TRIGGERER_EVER}, and {why}: start one (`airflow triggerer`)"
        assert lines.count(line) == views, done.stdout
    assert "OK      public.watched_for_staleness" in lines, "a missing alert does not stop the refresh"
    assert lines[-1] == "1 of 4 view(s) can be refreshed as configured."


def test_a_deferred_refresh_without_a_triggerer_fails_at_once_saying_so(deployment: Deployment) -> None:
    started = time.monotonic()
    run_id = deployment.trigger(FAST_DAG)
    assert deployment.api.wait_for_run(FAST_DAG, run_id, timeout=180)["state"] == "failed"
    seconds = time.monotonic() - started
    failure = _failure(deployment, FAST_DAG, run_id)
    print(f"deferrable, no triggerer, execution_timeout null: failed {seconds:.1f}s after the trigger: {failure}")
    assert failure == (
        f"MatviewRefreshError: Cannot refresh public.polls_user_matt_view ({LABEL}) in Airflow's triggerer "
        f"(deferrable): {NO_TRIGGERER_EVER}. Start one (`airflow triggerer`), or set deferrable to false to refresh "
        "on the worker; Airflow retries the task if retries remain."
    )
    assert seconds < 90


def test_with_a_triggerer_the_deferred_refresh_runs(deployment: Deployment) -> None:
    stack = deployment.stack
    stack.components = (*stack.components, "triggerer")
    stack.start_component("triggerer")
    deadline = time.monotonic() + 120
    while _triggerer_status(deployment) != "healthy":
        assert time.monotonic() < deadline, stack.log("triggerer")
        time.sleep(1)
    assert "triggerer:" not in _check(deployment).stdout
    run_id = deployment.trigger(FAST_DAG)
    assert deployment.api.wait_for_run(FAST_DAG, run_id, timeout=180)["state"] == "success"


def test_a_triggerer_that_stops_after_the_deferral_fails_the_task_saying_so(deployment: Deployment) -> None:
    with deployment.connect() as conn:
        conn.execute("UPDATE refresh_delay SET seconds = 300")
        before = conn.execute("SELECT count(*) FROM slow_view").fetchone()
        run_id = deployment.trigger(SLOW_DAG)
        _wait(lambda: _refreshing(conn, "active"), 120, "the triggerer running the refresh", deployment)
        deferred = time.monotonic()
        stopped = session_pids(deployment.stack.processes["triggerer"].pid)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        try:
            assert deployment.api.wait_for_run(SLOW_DAG, run_id, timeout=240)["state"] == "failed"
            seconds = time.monotonic() - deferred
            checked = _check(deployment)
        finally:
            for pid in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        conn.execute("UPDATE refresh_delay SET seconds = 0")
        _wait(lambda: not _refreshing(conn, "%"), 60, "the refresh gone from the server", deployment)
        assert conn.execute("SELECT count(*) FROM slow_view").fetchone() == before
    failure = _failure(deployment, SLOW_DAG, run_id)
    print(f"triggerer stopped after the deferral (execution_timeout 10s): failed {seconds:.1f}s later: {failure}")
    assert failure.startswith(
        f"MatviewRefreshError: The deferred refresh of public.slow_view ({LABEL}) did not finish within 40s "
        "(execution_timeout and 30s), and Airflow gave it up: no Airflow triggerer is running (the latest heartbeat "
        "was "
    ), failure
    assert failure.endswith(" ago): start one (`airflow triggerer`). Airflow retries the task if retries remain.")
    assert 35 <= seconds < 120  # 40 s from the deferral, a moment before the refresh showed
    assert "triggerer: no Airflow triggerer is running (the latest heartbeat was " in checked.stdout, checked.stdout


def _triggerer_status(deployment: Deployment) -> str | None:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{deployment.stack.url}/api/v2/monitor/health", timeout=10) as response:
        return (json.load(response).get("triggerer") or {}).get("status")


def _refreshing(conn: psycopg.Connection, state: str) -> bool:
    """Whether a session whose last statement refreshes slow_view is in ``state`` (a LIKE pattern): ``active``,
    or (after a statement_timeout) idle in its aborted transaction until its client rolls back."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'REFRESH MATERIALIZED VIEW%%slow_view%%' "
        "AND state LIKE %s",
        [state],
    ).fetchone()
    return bool(row and row[0])


def _wait(condition: Any, seconds: float, what: str, deployment: Deployment) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds:.0f}s\n{deployment.stack.log('triggerer')}")
        time.sleep(0.5)
