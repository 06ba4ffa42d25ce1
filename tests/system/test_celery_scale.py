"""The provider on the CeleryExecutor: Redis, two Celery workers (concurrency 2 each) and a triggerer, on loopback.

One stack for the module. Slow views (each refresh sleeps ``SECONDS``) are refreshed by two DAGs of ``VIEWS`` tasks
each, in a pool of 2 slots: one DAG refreshes on the workers, the other defers to the triggerer. Measured from the
task instances' start and end times and from ``pg_stat_activity`` sampled every 0.2 s.

The views live in a PostgreSQL server of their own, apart from the one that holds Airflow's metadata database, as in
a deployment: restarting the metadata database (``test_metadata_database_restart_during_runs``) leaves the refreshes
running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import textwrap
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from devtools.harness.airflow_stack import AirflowStack, ApiClient, celery_unavailable, session_pids
from devtools.harness.deployment import deployed

if TYPE_CHECKING:
    from collections.abc import Iterator

# The suite's scale; the measure, 20 refreshes of 30 s: MATVIEW_SCALE_VIEWS=20 MATVIEW_SCALE_SECONDS=30.
VIEWS = int(os.environ.get("MATVIEW_SCALE_VIEWS", "8"))
SECONDS = int(os.environ.get("MATVIEW_SCALE_SECONDS", "10"))
POOL = "two_slots"
RUN_TIMEOUT = max(400, 2 * VIEWS * SECONDS)
RECOVERY_VIEWS = 6  # more than the workers' 4 slots: some refreshes run, the others wait in the queue
# Seconds the metadata database stays stopped: the scheduler notices within its loop's second; the task runners on
# the workers retry their calls to the API server 5 times with a random backoff ([workers] execution_api_retries).
DB_DOWN = 5
RECOVERY_TIMEOUT = 240

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

with DAG("recovery", schedule=None, start_date=datetime(2024, 1, 1), max_active_tasks=64):
    slow = [
        RefreshMaterializedViewOperator(
            task_id=f"slow_{{i}}", view=f"public.recovery_{{i}}", retries=2, retry_delay=timedelta(seconds=2)
        )
        for i in range({RECOVERY_VIEWS})
    ]
    for worker in ("worker1", "worker2"):  # scheduled after the slow ones: each worker runs a task after recovery
        slow >> RefreshMaterializedViewOperator(
            task_id=f"then_on_{{worker}}",
            view=f"public.recovery_on_{{worker}}",
            queue=worker,
            retries=2,
            retry_delay=timedelta(seconds=2),
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
    def scenario(conn: psycopg.Connection) -> None:
        conn.execute("CREATE TABLE refresh_delay (seconds float8)")
        conn.execute("INSERT INTO refresh_delay VALUES (0)")
        for i in range(VIEWS):
            conn.execute(
                f"CREATE MATERIALIZED VIEW slow_{i} AS SELECT g AS id FROM generate_series(1, 3) g "
                "WHERE (SELECT pg_sleep(seconds)::text FROM refresh_delay) = ''"
            )
        conn.execute("CREATE TABLE recovery_source (generation int)")
        conn.execute("INSERT INTO recovery_source VALUES (0)")
        for i in range(RECOVERY_VIEWS):
            conn.execute(
                f"CREATE MATERIALIZED VIEW recovery_{i} AS SELECT generation FROM recovery_source "
                "WHERE (SELECT pg_sleep(seconds)::text FROM refresh_delay) = ''"
            )
        for worker in ("worker1", "worker2"):
            conn.execute(f"CREATE MATERIALIZED VIEW recovery_on_{worker} AS SELECT generation FROM recovery_source")
        conn.execute("UPDATE refresh_delay SET seconds = %s", [SECONDS])
        conn.execute("CREATE TABLE long_delay (seconds float8)")
        conn.execute("INSERT INTO long_delay VALUES (0)")
        conn.execute(
            "CREATE MATERIALIZED VIEW long_view AS SELECT clock_timestamp() AS refreshed_at "
            "WHERE (SELECT pg_sleep(seconds)::text FROM long_delay) = ''"
        )

    dags = tmp_path_factory.mktemp("dags")
    (dags / "scale.py").write_text(textwrap.dedent(DAGS))
    dag_ids = ("scale_deferred", "scale_on_workers", "same_view_on_worker1", "same_view_on_worker2", "worker_lost")
    env = {
        # A task whose worker died is failed (and retried) once its heartbeat is this old.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "15",
        # A Celery worker that takes a task while the metadata database is away loses it (it cannot record the
        # task as started in Celery's result backend, which lives there), and the task instance stays queued. A
        # new scheduler adopts the queued tasks of one that died (once its heartbeat is 30 s old) at its next
        # orphan check, then requeues those queued for longer than the timeout. Airflow's defaults: 300 s and 600 s.
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "10",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "60",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "10",
    }
    with deployed(
        dags,
        scenario,
        (*dag_ids, "recovery"),
        env=env,
        unpause=True,
        metadata_server_of_its_own=True,  # the database restart test restarts Airflow's server, not the views'
        executor="celery",
        triggerer=True,
    ) as up:
        up.api.post("/pools", {"name": POOL, "slots": 2, "include_deferred": False})
        yield up.stack, up.api, up.dsn


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


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_scheduler_restart_during_runs(
    celery_stack: tuple[AirflowStack, ApiClient, str], signum: signal.Signals
) -> None:
    """The scheduler's whole session stopped while refreshes run and others wait in the queue, then a new scheduler
    started, as systemd or Kubernetes does on a redeploy (SIGTERM) or after an OOM kill (SIGKILL)."""
    stack, api, dsn = celery_stack
    with psycopg.connect(dsn, autocommit=True) as conn:
        run_id, generation = _trigger_recovery(api, conn)
        states = _wait_until_running_and_queued(api, conn, run_id)
        stopped = time.monotonic()
        ended = stack.restart_component("scheduler", signum)
        run = _wait_for_run(api, stack, run_id, None)
        print(
            f"\nscheduler {signum.name}ed with {states}: session ended in {ended:.1f}s, new scheduler started, "
            f"run {run['state']} {time.monotonic() - stopped:.1f}s after the stop"
        )
        tasks = _assert_recovered(api, conn, run_id, run, generation)
        assert {task["try_number"] for task in tasks} == {1}, "no refresh was reset or retried"


def test_metadata_database_restart_during_runs(celery_stack: tuple[AirflowStack, ApiClient, str]) -> None:
    """The PostgreSQL server of Airflow's metadata database stopped (``pg_ctl stop -m fast``: every connection
    ended) for ``DB_DOWN`` seconds and started again on the same port, while refreshes run on the workers and others
    wait in the queue. The views live in another server, so the refreshes go on; Airflow's components must
    reconnect. A component that exits instead is restarted, as a supervisor (systemd ``Restart=always``, a
    Kubernetes pod's restart policy) does, and reported: Airflow 3.3's scheduler, dag-processor and triggerer exit
    on the first failed connection; the API server and the Celery workers ride the outage out."""
    stack, api, dsn = celery_stack
    with psycopg.connect(dsn, autocommit=True) as conn:
        run_id, generation = _trigger_recovery(api, conn)
        states = _wait_until_running_and_queued(api, conn, run_id, first_done=True)
        logged = {name: _log_size(stack, name) for name in stack.processes}
        stopped = time.monotonic()
        stack.cluster.restart("fast", down=DB_DOWN)
        down = time.monotonic() - stopped
        restarted: list[str] = []
        run = _wait_for_run(api, stack, run_id, restarted)
        finished = time.monotonic() - stopped
        _wait_until_healthy(api, stack, restarted)
        print(
            f"\nmetadata database restarted in {down:.1f}s with {states}: run {run['state']} {finished:.1f}s after, "
            f"all healthy {time.monotonic() - stopped:.1f}s after; "
            f"restarted by the supervisor: {restarted or 'none'}"
        )
        tasks = _assert_recovered(api, conn, run_id, run, generation)
        print(f"tries: { {task['task_id']: task['try_number'] for task in tasks} }")
        noticed = {name: _errors_since(stack, name, size) for name, size in logged.items()}
        print(f"database errors logged by: { {name: count for name, count in noticed.items() if count} }")
        requeued = _lines_since(stack, "scheduler", logged["scheduler"], "Task stuck in queued; will try to requeue")
        print(f"task instances lost by a worker during the outage and requeued: {requeued}")
        assert noticed["scheduler"], "the scheduler met the lost database"
        survivors = ("api-server", "redis", *(f"celery-{worker}" for worker in stack.workers))
        assert not [name for name in restarted if name.split()[0] in survivors], "these reconnect by themselves"


RECOVERY_TASKS = {f"slow_{i}" for i in range(RECOVERY_VIEWS)} | {"then_on_worker1", "then_on_worker2"}


def _trigger_recovery(api: ApiClient, conn: psycopg.Connection) -> tuple[str, int]:
    """A run of the ``recovery`` DAG after a new generation of the views' source data."""
    row = conn.execute("UPDATE recovery_source SET generation = generation + 1 RETURNING generation").fetchone()
    assert row is not None
    return api.post("/dags/recovery/dagRuns", {"logical_date": None})["dag_run_id"], int(row[0])


def _recovery_tasks(api: ApiClient, run_id: str) -> list[dict[str, Any]]:
    return list(api.get(f"/dags/recovery/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"])


def _wait_until_running_and_queued(
    api: ApiClient, conn: psycopg.Connection, run_id: str, *, first_done: bool = False
) -> dict[str, int]:
    """Task states once at least two refreshes run on the server and at least one slow task still waits; with
    ``first_done``, once the first refresh has succeeded while others still run or wait in the queue: the workers
    are ending Celery jobs and taking the next ones (one sample seeing a task running and one queued may never
    come: the queued ones start within a second)."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        states = [task["state"] for task in _recovery_tasks(api, run_id)]
        waiting = sum(state in (None, "scheduled", "queued") for state in states)
        if first_done:
            ready = "success" in states and any(state in ("running", "queued") for state in states)
        else:
            ready = states.count("running") >= 2 and waiting > 2 and len(_refresh_backends(conn)) >= 2
        if ready:
            return {str(state): states.count(state) for state in sorted(set(states), key=str)}
        assert time.monotonic() < deadline, states
        time.sleep(0.3)


def _wait_for_run(api: ApiClient, stack: AirflowStack, run_id: str, restarted: list[str] | None) -> dict[str, Any]:
    """The finished run, riding out the API's errors while the metadata database is away. With ``restarted``,
    restart every process of the stack that exits meanwhile and append it there; without, none may exit."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    while True:
        if restarted is not None:
            restarted += stack.restart_exited()
        else:
            assert not stack.exited(), {name: stack.log(name) for name in stack.exited()}
        with contextlib.suppress(RuntimeError, OSError, ValueError):
            run = dict(api.get(f"/dags/recovery/dagRuns/{run_id}"))
            if run["state"] in ("success", "failed"):
                return run
        if time.monotonic() > deadline:
            tasks = [(task["task_id"], task["state"], task["try_number"]) for task in _recovery_tasks(api, run_id)]
            raise AssertionError(f"run {run_id} not finished after {RECOVERY_TIMEOUT}s: {tasks}, restarted {restarted}")
        time.sleep(1)


def _wait_until_healthy(api: ApiClient, stack: AirflowStack, restarted: list[str]) -> None:
    deadline = time.monotonic() + 120
    health: Any = None
    while time.monotonic() < deadline:
        restarted += stack.restart_exited()
        with contextlib.suppress(RuntimeError, OSError, ValueError):
            health = api.get("/monitor/health")
            if all(
                (health.get(part) or {}).get("status") == "healthy"
                for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
            ):
                return
        time.sleep(1)
    raise AssertionError(f"not healthy after the restart: {health}")


def _log_size(stack: AirflowStack, name: str) -> int:
    return (stack.logs / f"{name}.log").stat().st_size


def _lines_since(stack: AirflowStack, name: str, offset: int, *needles: str) -> int:
    """How many lines of a process's log since ``offset`` hold one of ``needles``."""
    with (stack.logs / f"{name}.log").open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    return sum(any(needle in line for needle in needles) for line in text.splitlines())


def _errors_since(stack: AirflowStack, name: str, offset: int) -> int:
    """How many lines of a process's log since ``offset`` tell of the lost database connection."""
    return _lines_since(stack, name, offset, "OperationalError", "server closed the connection")


def _assert_recovered(
    api: ApiClient, conn: psycopg.Connection, run_id: str, run: dict[str, Any], generation: int
) -> list[dict[str, Any]]:
    tasks = _recovery_tasks(api, run_id)
    assert run["state"] == "success", [(task["task_id"], task["state"], task["try_number"]) for task in tasks]
    assert {task["task_id"]: task["state"] for task in tasks} == dict.fromkeys(RECOVERY_TASKS, "success")
    unfinished = "&".join(f"state={state}" for state in ("running", "queued", "scheduled", "up_for_retry", "deferred"))
    assert api.get(f"/dags/~/dagRuns/~/taskInstances?{unfinished}")["total_entries"] == 0
    assert api.get("/dags/~/dagRuns?state=running&state=queued")["total_entries"] == 0
    for worker in ("worker1", "worker2"):
        task = next(task for task in tasks if task["task_id"] == f"then_on_{worker}")
        assert task["hostname"] == worker, "each worker ran a task scheduled after the recovery"
    views = [f"recovery_{i}" for i in range(RECOVERY_VIEWS)] + ["recovery_on_worker1", "recovery_on_worker2"]
    held = {view: conn.execute(f"SELECT generation FROM {view}").fetchone() for view in views}
    assert held == dict.fromkeys(views, (generation,)), "every view holds the new data"
    assert not _refresh_backends(conn) and not _advisory_locks(conn), "no REFRESH or advisory lock is left"
    return tasks


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
        for pid in session_pids(session):
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
