"""The provider on the CeleryExecutor: Redis, two Celery workers (concurrency 2 each) and a triggerer, on loopback.

One stack for the module. Slow views (each refresh sleeps ``SECONDS``) are refreshed by two DAGs of ``VIEWS`` tasks
each, in a pool of 2 slots: one DAG refreshes on the workers, the other defers to the triggerer. Measured from the
task instances' start and end times and from ``pg_stat_activity`` sampled every 0.2 s.
"""

from __future__ import annotations

import contextlib
import os
import signal
import textwrap
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from devtools.airflow_stack import AirflowStack, ApiClient, celery_unavailable
from devtools.pgcluster import embedded_cluster

if TYPE_CHECKING:
    from collections.abc import Iterator

VIEWS = 8  # the measure is 20 refreshes of 30 s; scaled down to keep the suite's time
SECONDS = 10
POOL = "two_slots"
RUN_TIMEOUT = 400

pytestmark = [
    pytest.mark.celery,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(bool(celery_unavailable()), reason=str(celery_unavailable())),
]

DAGS = f"""
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_matview import RefreshMaterializedViewOperator

for deferrable in (True, False):
    with DAG(
        "scale_deferred" if deferrable else "scale_on_workers",
        schedule=None,
        start_date=datetime(2024, 1, 1),
        max_active_tasks=64,
    ):
        for i in range({VIEWS}):
            RefreshMaterializedViewOperator(
                task_id=f"slow_{{i}}", view=f"public.slow_{{i}}", deferrable=deferrable, pool="{POOL}", retries=0
            )

for worker in ("worker1", "worker2"):
    with DAG(f"same_view_on_{{worker}}", schedule=None, start_date=datetime(2024, 1, 1)):
        RefreshMaterializedViewOperator(task_id="refresh", view="public.slow_0", queue=worker, retries=0)

with DAG("worker_lost", schedule=None, start_date=datetime(2024, 1, 1)):
    RefreshMaterializedViewOperator(
        task_id="refresh", view="public.long_view", retries=1, retry_delay=timedelta(seconds=1)
    )
"""


class Sampler(threading.Thread):
    """The most REFRESH statements running at once, sampled from pg_stat_activity."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.most = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                    "AND query LIKE 'REFRESH MATERIALIZED VIEW%%'"
                ).fetchone()
                self.most = max(self.most, int(row[0]) if row else 0)
                time.sleep(0.2)


@pytest.fixture(scope="module")
def celery_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AirflowStack, ApiClient, str]]:
    cluster = embedded_cluster()
    stack: AirflowStack | None = None
    try:
        cluster.start()
        cluster.create_database("scenario")
        with psycopg.connect(cluster.dsn("scenario"), autocommit=True) as conn:
            conn.execute("CREATE TABLE refresh_delay (seconds float8)")
            conn.execute("INSERT INTO refresh_delay VALUES (0)")
            for i in range(VIEWS):
                conn.execute(
                    f"CREATE MATERIALIZED VIEW slow_{i} AS SELECT g AS id FROM generate_series(1, 3) g "
                    "WHERE (SELECT pg_sleep(seconds)::text FROM refresh_delay) = ''"
                )
            conn.execute("UPDATE refresh_delay SET seconds = %s", [SECONDS])
            conn.execute("CREATE TABLE long_delay (seconds float8)")
            conn.execute("INSERT INTO long_delay VALUES (0)")
            conn.execute(
                "CREATE MATERIALIZED VIEW long_view AS SELECT clock_timestamp() AS refreshed_at "
                "WHERE (SELECT pg_sleep(seconds)::text FROM long_delay) = ''"
            )
        dags = tmp_path_factory.mktemp("dags")
        (dags / "scale.py").write_text(textwrap.dedent(DAGS))
        stack = AirflowStack(
            cluster, dags, {"postgres_default": cluster.uri("scenario")}, executor="celery", triggerer=True
        )
        # A task whose worker died is failed (and retried) once its heartbeat is this old.
        stack.env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] = "15"
        stack.start()
        api = ApiClient(stack)
        api.post("/pools", {"name": POOL, "slots": 2, "include_deferred": False})
        for dag_id in (
            "scale_deferred",
            "scale_on_workers",
            "same_view_on_worker1",
            "same_view_on_worker2",
            "worker_lost",
        ):
            api.wait_for_dag(dag_id)
            api.patch(f"/dags/{dag_id}", {"is_paused": False})
        yield stack, api, cluster.dsn("scenario")
    finally:
        try:
            if stack is not None:
                stack.stop()
        finally:
            cluster.destroy()


def _run(api: ApiClient, dsn: str, dag_id: str) -> tuple[float, list[dict[str, Any]], int]:
    """Trigger ``dag_id``; its wall time (first task start to last task end), task instances, most REFRESHes."""
    sampler = Sampler(dsn)
    sampler.start()
    run_id = api.post(f"/dags/{dag_id}/dagRuns", {"logical_date": None})["dag_run_id"]
    try:
        run = api.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)
    finally:
        sampler.stop.set()
        sampler.join()
    tasks = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]
    assert run["state"] == "success", [(task["task_id"], task["state"]) for task in tasks]
    starts = [datetime.fromisoformat(task["start_date"]) for task in tasks]
    ends = [datetime.fromisoformat(task["end_date"]) for task in tasks]
    return (max(ends) - min(starts)).total_seconds(), tasks, sampler.most


def test_deferred_refreshes_free_the_worker_slots(celery_stack: tuple[AirflowStack, ApiClient, str]) -> None:
    stack, api, dsn = celery_stack
    on_workers, worker_tasks, most_on_workers = _run(api, dsn, "scale_on_workers")
    deferred, deferred_tasks, most_deferred = _run(api, dsn, "scale_deferred")
    print(
        f"\n{VIEWS} refreshes of {SECONDS}s in a pool of 2 slots, CeleryExecutor with 2 workers: "
        f"on the workers {on_workers:.1f}s (at most {most_on_workers} REFRESH at once), "
        f"deferred {deferred:.1f}s (at most {most_deferred} at once)"
    )

    assert {task["state"] for task in worker_tasks + deferred_tasks} == {"success"}
    assert most_on_workers <= 2, "the pool's 2 slots bound the refreshes on the workers"
    assert on_workers >= VIEWS / 2 * SECONDS
    assert most_deferred > 2, "deferred refreshes run together in the triggerer, beyond the pool's slots"
    assert deferred < on_workers - 2 * SECONDS, "deferring saved at least two refreshes' time"
    hostnames = {task["hostname"] for task in worker_tasks}
    print(f"refreshes per worker: { {name: [t['hostname'] for t in worker_tasks].count(name) for name in hostnames} }")
    assert hostnames == set(stack.workers), "both Celery workers ran refreshes"


def test_one_view_on_two_workers_never_refreshes_twice_at_once(
    celery_stack: tuple[AirflowStack, ApiClient, str],
) -> None:
    stack, api, dsn = celery_stack
    sampler = Sampler(dsn)
    sampler.start()
    runs = {
        worker: api.post(f"/dags/same_view_on_{worker}/dagRuns", {"logical_date": None}) for worker in stack.workers
    }
    try:
        tasks = {}
        for worker, run in runs.items():
            dag_id = f"same_view_on_{worker}"
            assert api.wait_for_run(dag_id, run["dag_run_id"], timeout=RUN_TIMEOUT)["state"] == "success"
            tasks[worker] = api.get(f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances/refresh")
    finally:
        sampler.stop.set()
        sampler.join()
    spans = sorted(
        (datetime.fromisoformat(task["start_date"]), datetime.fromisoformat(task["end_date"]), task["hostname"])
        for task in tasks.values()
    )
    (first_start, first_end, first_host), (second_start, second_end, second_host) = spans
    print(
        f"\nslow_0 ({SECONDS}s) on {first_host} and {second_host}: tasks {first_start:%H:%M:%S}-{first_end:%H:%M:%S} "
        f"and {second_start:%H:%M:%S}-{second_end:%H:%M:%S}, at most {sampler.most} REFRESH at once"
    )
    assert {first_host, second_host} == set(stack.workers)
    assert second_start < first_end, "both tasks ran at once, so the second one waited for the lock"
    assert sampler.most == 1, "the advisory lock let only one REFRESH of the view run at a time"
    assert (max(first_end, second_end) - min(first_start, second_start)).total_seconds() >= 2 * SECONDS


def test_worker_killed_mid_refresh(celery_stack: tuple[AirflowStack, ApiClient, str]) -> None:
    """Last in the module: it leaves the stack with one worker."""
    stack, api, dsn = celery_stack
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE long_delay SET seconds = 120")
        before = conn.execute("SELECT refreshed_at FROM long_view").fetchone()
        run_id = api.post("/dags/worker_lost/dagRuns", {"logical_date": None})["dag_run_id"]
        task_path = f"/dags/worker_lost/dagRuns/{run_id}/taskInstances/refresh"
        deadline = time.monotonic() + RUN_TIMEOUT
        while not _refresh_backends(conn) or not api.get(task_path).get("hostname"):
            assert time.monotonic() < deadline, api.get(task_path)
            time.sleep(0.5)
        victim = api.get(task_path)["hostname"]
        conn.execute("UPDATE long_delay SET seconds = 3")  # the retry's refresh is short
        session = stack.processes[f"celery-{victim}"].pid
        killed = time.monotonic()
        for pid in _session_pids(session):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while _refresh_backends(conn) or _advisory_locks(conn):
            assert time.monotonic() - killed < 5, "the REFRESH or its lock outlived the killed worker by 5 s"
            time.sleep(0.1)
        print(f"\nworker {victim} SIGKILLed: REFRESH and lock gone {time.monotonic() - killed:.2f}s later")
        run = api.wait_for_run("worker_lost", run_id, timeout=RUN_TIMEOUT)
        task = api.get(task_path)
        print(f"retried on {task['hostname']}, run {run['state']} {time.monotonic() - killed:.1f}s after the kill")
        assert (run["state"], task["try_number"]) == ("success", 2)
        assert task["hostname"] != victim and task["hostname"] in stack.workers
        after = conn.execute("SELECT refreshed_at FROM long_view").fetchone()
        assert before is not None and after is not None and after[0] > before[0], "the view holds the new data"


def _refresh_backends(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'REFRESH MATERIALIZED VIEW%%'"
    ).fetchall()


def _advisory_locks(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
    return int(row[0]) if row else 0


def _session_pids(session: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[3]) == session:
                pids.append(int(stat.parent.name))
    return pids
