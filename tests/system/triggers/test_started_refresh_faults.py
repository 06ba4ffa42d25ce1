"""start_from_trigger under faults, in a real Airflow with two triggerers (high availability) and a small
``[triggerer] capacity``: a triggerer SIGKILLed mid-refresh, a triggerer frozen while its refreshes run (the other
one takes them over), and more refreshes at once than the triggerers' capacity."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from devtools.harness.deployment import Deployment, deployed, matviews_dags

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.timeout(1500), pytest.mark.one_server]

SLOW = [f"slow_{number:02d}" for number in range(12)]
CAPACITY = 4
POOL_SLOTS = 2
HEALTH_THRESHOLD = 15


def dag(view: str) -> str:
    return f"matview.public.{view}"


def scenario(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE refresh_delay (seconds float8)")
    conn.execute("INSERT INTO refresh_delay VALUES (0)")
    for name in SLOW:
        conn.execute(
            f"CREATE MATERIALIZED VIEW {name} AS SELECT g AS id FROM generate_series(1, 3) g "
            "WHERE (SELECT pg_sleep(seconds)::text FROM refresh_delay) = ''"
        )


class Sampler(threading.Thread):
    """Every 0.1 s, the REFRESH statements running on the views' database, by view."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.samples: list[Counter[str]] = []
        self.done = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.done.is_set():
                rows = conn.execute(
                    "SELECT query FROM pg_stat_activity WHERE state = 'active' "
                    "AND query LIKE 'REFRESH MATERIALIZED VIEW%%' AND pid <> pg_backend_pid()"
                ).fetchall()
                self.samples.append(Counter(str(row[0]).split()[-1] for row in rows))
                time.sleep(0.1)


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    config = {
        "defaults": {"schedule": None, "retries": 0, "start_from_trigger": True, "lock_timeout": "5m"},
        "views": [{"name": f"public.{name}"} for name in SLOW],
    }
    dags = matviews_dags(tmp_path_factory.mktemp("dags"), config)
    env = {
        "AIRFLOW__TRIGGERER__CAPACITY": str(CAPACITY),
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(HEALTH_THRESHOLD),
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
        # default_pool's slots: Airflow applies no pool to a task that starts in the triggerer.
        "AIRFLOW__CORE__DEFAULT_POOL_TASK_SLOT_COUNT": str(POOL_SLOTS),
    }
    with deployed(dags, scenario, [dag(name) for name in SLOW], unpause=True, env=env, triggerers=2) as up:
        yield up


def refreshing(conn: psycopg.Connection) -> list[tuple[int, str]]:
    return conn.execute(
        "SELECT pid, query FROM pg_stat_activity WHERE state = 'active' "
        "AND query LIKE 'REFRESH MATERIALIZED VIEW%%' AND pid <> pg_backend_pid()"
    ).fetchall()


def wait_for(condition: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} not within {timeout:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - started


def final_states(faults: Deployment, runs: dict[str, str], timeout: float = 600) -> dict[str, str]:
    found = {}
    for view, run_id in runs.items():
        faults.api.wait_for_run(dag(view), run_id, timeout=timeout)
        found[view] = faults.api.get(f"/dags/{dag(view)}/dagRuns/{run_id}/taskInstances/refresh")["state"]
    return found


def test_beyond_capacity_the_refreshes_wait_for_the_triggerers_and_all_succeed(faults: Deployment) -> None:
    with faults.connect() as conn:
        conn.execute("UPDATE refresh_delay SET seconds = 2")
    sampler = Sampler(faults.dsn)
    sampler.start()
    started = time.monotonic()
    try:
        runs = {view: faults.trigger(dag(view)) for view in SLOW}
        states = final_states(faults, runs)
    finally:
        sampler.done.set()
        sampler.join()
    took = time.monotonic() - started
    most = max((sum(sample.values()) for sample in sampler.samples), default=0)
    print(
        f"{len(SLOW)} refreshes of 2 s, 2 triggerers of capacity {CAPACITY}, default_pool of {POOL_SLOTS} slots: "
        f"{took:.1f} s, at most {most} at once"
    )
    assert set(states.values()) == {"success"}
    assert most <= 2 * CAPACITY, "more refreshes ran at once than the triggerers hold"
    assert most > POOL_SLOTS, "the pool bounded tasks that start in the triggerer (Airflow applies none to them)"
    assert all(count == 1 for sample in sampler.samples for count in sample.values()), "a view refreshed twice at once"


def test_a_sigkilled_triggerer_leaves_no_refresh_and_the_task_succeeds_after_all(faults: Deployment) -> None:
    with faults.connect() as conn:
        conn.execute("UPDATE refresh_delay SET seconds = 60")
        faults.stack.stop_component("triggerer-2", signal.SIGTERM)  # one triggerer: the refresh runs there
        try:
            run_id = faults.trigger(dag(SLOW[0]))
            wait_for(lambda: refreshing(conn), 120, "the refresh")
            killed = time.monotonic()
            faults.stack.stop_component("triggerer", signal.SIGKILL)
            gone = wait_for(lambda: not refreshing(conn), 5, "the REFRESH ended after the SIGKILL")
            locks = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
            print(f"triggerer SIGKILLed mid-refresh: the REFRESH and its locks gone {gone:.2f} s later")
            assert locks == (0,)
            conn.execute("UPDATE refresh_delay SET seconds = 0")
            faults.stack.start_component("triggerer")
            restarted = time.monotonic()
            states = final_states(faults, {SLOW[0]: run_id})
        finally:
            faults.stack.start_component("triggerer-2")
    print(f"the task, started again by the restarted triggerer, ended {time.monotonic() - restarted:.1f} s later")
    assert states == {SLOW[0]: "success"}
    assert time.monotonic() - killed < 300


def test_a_frozen_triggerer_is_taken_over_and_never_refreshes_a_view_at_once(faults: Deployment) -> None:
    """SIGSTOP one triggerer while it refreshes: the other takes its refreshes over once it is unhealthy and runs
    them again, waiting for the view's refresh lock, which the frozen one still holds; SIGCONT ends both."""
    with faults.connect() as conn:
        conn.execute("UPDATE refresh_delay SET seconds = 3")
    sampler = Sampler(faults.dsn)
    sampler.start()
    frozen = faults.stack.processes["triggerer"].pid
    try:
        runs = {view: faults.trigger(dag(view)) for view in SLOW[:4]}
        with faults.connect() as conn:
            wait_for(lambda: refreshing(conn), 120, "a refresh")
        for pid in _session(faults, "triggerer"):
            _signal(pid, signal.SIGSTOP)
        time.sleep(HEALTH_THRESHOLD + 25)  # the other triggerer takes the frozen one's triggers over
        for pid in _session(faults, "triggerer"):
            _signal(pid, signal.SIGCONT)
        states = final_states(faults, runs)
    finally:
        for pid in _session(faults, "triggerer"):
            _signal(pid, signal.SIGCONT)
        sampler.done.set()
        sampler.join()
    assert frozen == faults.stack.processes["triggerer"].pid
    assert set(states.values()) == {"success"}, states
    twice = [sample for sample in sampler.samples if any(count > 1 for count in sample.values())]
    assert not twice, f"a view refreshed twice at once: {twice[:3]}"
    # The task's log holds both triggerers' logs of the try: a view taken over was refreshed by each, one after
    # the other.
    started = {
        view: _task_log(faults, view, run_id).count(f"Refreshing public.{view} ") for view, run_id in runs.items()
    }
    print(f"refreshes per view with one triggerer frozen {HEALTH_THRESHOLD + 25} s: {started}")
    assert max(started.values()) >= 2, "no refresh was taken over by the other triggerer"


def _task_log(faults: Deployment, view: str, run_id: str) -> str:
    import json

    content = faults.api.get(f"/dags/{dag(view)}/dagRuns/{run_id}/taskInstances/refresh/logs/1")["content"]
    return json.dumps(content)


def _session(faults: Deployment, name: str) -> list[int]:
    from devtools.harness.airflow_stack import session_pids

    return session_pids(faults.stack.processes[name].pid)


def _signal(pid: int, signum: signal.Signals) -> None:
    import contextlib
    import os

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
