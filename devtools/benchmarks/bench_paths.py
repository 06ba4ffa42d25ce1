"""The three ways to run a refresh, side by side: on a worker, deferred, and started in the triggerer
(``start_from_trigger``). Run with ``make bench-paths`` (``BENCH_ARGS=--quick`` for a smoke run).

For each path in turn, a real Airflow on loopback (``devtools/harness/airflow_stack.py``: LocalExecutor with
parallelism 2, api-server, scheduler, dag-processor, triggerer) over ``--views`` tiny views from one config file,
every one on a ``* * * * *`` schedule, parsed while paused. Unpausing them all makes every DAG due at once (each gets
the run of the last minute at once, ``catchup: false``), and then every minute; the stack is watched for
``--minutes`` minutes from the end of the unpausing. Measured per path:

- all at once: how long from the unpausing to the last success of those first runs (or how many of them succeeded
  within the window, when not all);
- refreshes per minute: successes of the refresh task within the window;
- CPU-seconds per refresh: the CPU time of every Airflow process and of the PostgreSQL server over the window,
  divided by the refreshes in it;
- trigger-to-success, p50 and p95: from the time a run was due (``run_after``; the unpausing for the first runs) to
  its task's success;
- what bounded the path: the scheduler's own CPU share, the CPU of each component, the task states at the end;
- one at a time: before the 1,000 are unpaused, a view of its own (no schedule) triggered through the REST API six
  times, one run after the other (and one warm-up): from the trigger to its task's success, on the idle stack.

Each path has a stack and a PostgreSQL server of its own, so that no run of one path is left over in the next.
Airflow's scheduler settings (``--scheduler KEY=VALUE``, e.g. ``max_dagruns_to_create_per_loop=100``) apply to
every path.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import yaml

from devtools.benchmarks.bench import header
from devtools.benchmarks.bench_scale import CpuMeter, StackCpu, load_average, stamp, wait_for_dags
from devtools.benchmarks.bench_stats import percentile
from devtools.harness.airflow_stack import AirflowStack, ApiClient
from devtools.harness.paths import REPO
from devtools.harness.pgcluster import embedded_cluster

PATHS = {
    "worker": {},
    "deferred": {"deferrable": True},
    "start_from_trigger": {"start_from_trigger": True},
}


@dataclass
class PathResult:
    path: str
    views: int
    window: float
    refreshes: int
    first_batch: str
    cpu: float
    scheduler_cpu: float
    machine: float
    latencies: list[float]
    states: dict[str, int]
    load: str
    single: list[float] | None = None

    @property
    def per_minute(self) -> float:
        return self.refreshes / self.window * 60

    @property
    def cpu_per_refresh(self) -> float:
        return self.cpu / self.refreshes if self.refreshes else float("nan")


LATENCY_VIEW = "one_at_a_time"
LATENCY_RUNS = 6


def view_names(count: int) -> list[str]:
    return [f"tiny_{number:04d}" for number in range(count)]


def create_views(dsn: str, count: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE tiny_src (id integer PRIMARY KEY, val integer NOT NULL)")
        conn.execute("INSERT INTO tiny_src SELECT g, g * 7 FROM generate_series(1, 10) g")
        for name in [*view_names(count), LATENCY_VIEW]:
            conn.execute(f"CREATE MATERIALIZED VIEW {name} AS SELECT * FROM tiny_src")
            conn.execute(f"CREATE UNIQUE INDEX ON {name} (id)")


def write_dags(folder: Path, count: int, path: str) -> None:
    shutil.copy(REPO / "dags" / "matviews.py", folder / "matviews.py")
    config = {
        "defaults": {"schedule": "* * * * *", "retries": 0, **PATHS[path]},
        "views": [
            *({"name": f"public.{name}"} for name in view_names(count)),
            {"name": f"public.{LATENCY_VIEW}", "schedule": None},
        ],
    }
    (folder / "matviews.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def task_instances(api: ApiClient, dag_ids: list[str], since: str) -> list[dict[str, Any]]:
    """Every ``refresh`` task instance of runs scheduled after ``since``, in pages of 100."""
    found: list[dict[str, Any]] = []
    offset = 0
    body = {"dag_ids": dag_ids, "task_ids": ["refresh"], "run_after_gte": since}
    while True:
        page = api.post("/dags/~/dagRuns/~/taskInstances/list", {**body, "page_offset": offset, "page_limit": 100})
        found += page["task_instances"]
        offset += 100
        if offset >= int(page["total_entries"]):
            return found


def run_afters(api: ApiClient, dag_ids: list[str], since: str) -> dict[tuple[str, str], float]:
    """``(dag_id, run_id) -> run_after`` of the runs scheduled after ``since``."""
    found: dict[tuple[str, str], float] = {}
    offset = 0
    while True:
        body = {"dag_ids": dag_ids, "run_after_gte": since, "page_offset": offset, "page_limit": 100}
        page = api.post("/dags/~/dagRuns/list", body)
        for run in page["dag_runs"]:
            found[(run["dag_id"], run["dag_run_id"])] = stamp(run["run_after"])
        offset += 100
        if offset >= int(page["total_entries"]):
            return found


def set_paused(api: ApiClient, paused: bool) -> None:
    """Pause or unpause every view's DAG, 100 at a time (the API's most per call); a call that fails (the
    scheduler holds the DAGs' rows under load) is tried again, up to 10 times."""
    state = str(not paused).lower()
    failures = 0
    while True:
        try:
            if not api.patch(f"/dags?dag_id_pattern=matview.&paused={state}&limit=100", {"is_paused": paused})["dags"]:
                return
        except RuntimeError as error:
            failures += 1
            if failures >= 10:
                raise
            print(f"  (pausing failed, trying again: {str(error)[:200]})", flush=True)
            time.sleep(2)


def scheduler_seconds(stack: AirflowStack) -> float:
    """The CPU time of the scheduler's own process (its loop), without the LocalExecutor's task processes."""
    fields = Path(f"/proc/{stack.processes['scheduler'].pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:13]) / os.sysconf("SC_CLK_TCK")


def component_seconds(stack: AirflowStack) -> dict[str, float]:
    """The CPU time of each component's session (the scheduler's with the LocalExecutor's task processes), ended
    children included."""
    from devtools.harness.airflow_stack import session_pids

    seconds = {}
    for name, process in stack.processes.items():
        ticks = 0
        for pid in session_pids(process.pid):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += sum(int(value) for value in fields[11:15])
        seconds[name] = ticks / os.sysconf("SC_CLK_TCK")
    return seconds


def measure_path(
    path: str, views: int, minutes: int, scheduler: dict[str, str], logs: Path | None = None
) -> PathResult:
    print(f"{path}: {views} views on * * * * *, {minutes} minute(s) ...", flush=True)
    cluster = embedded_cluster()
    stack: AirflowStack | None = None
    dags = Path(tempfile.mkdtemp(prefix=f"matview-bench-paths-{path}-"))
    try:
        cluster.start()
        cluster.create_database("app")
        create_views(cluster.dsn("app"), views)
        write_dags(dags, views, path)
        stack = AirflowStack(cluster, dags, {"postgres_default": cluster.uri("app")}, triggerer=True)
        stack.env["AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"] = "600"
        stack.env.update({f"AIRFLOW__SCHEDULER__{key.upper()}": value for key, value in scheduler.items()})
        stack.start()
        api = ApiClient(stack)
        wait_for_dags(api, views + 1, timeout=900)
        one_at_a_time = single_runs(api)
        dag_ids = [f"matview.public.{name}" for name in view_names(views)]
        set_paused(api, False)
        start = time.time()
        cpu, machine = StackCpu(stack, cluster.data_dir / "postmaster.pid"), CpuMeter()
        cpu.start()
        machine.start()
        scheduler_before, components_before = scheduler_seconds(stack), component_seconds(stack)
        time.sleep(minutes * 60)
        used, busy = cpu.stop(), machine.stop()
        scheduler_used = scheduler_seconds(stack) - scheduler_before
        components = component_seconds(stack)
        split = ", ".join(f"{name} {components[name] - components_before.get(name, 0):.0f} s" for name in components)
        print(
            f"  {path}: CPU by component over the window (sessions; the scheduler's holds its task processes): {split}",
            flush=True,
        )
        set_paused(api, True)
        result = summarize(path, views, api, dag_ids, start, minutes * 60, used, scheduler_used, busy)
        result.single = one_at_a_time
        return result
    finally:
        if stack is not None:
            if logs is not None:
                shutil.copytree(stack.logs, logs / path, dirs_exist_ok=True)
            stack.stop()
        cluster.destroy()
        shutil.rmtree(dags, ignore_errors=True)


def single_runs(api: ApiClient) -> list[float]:
    """Trigger to success of one view's runs, one at a time on the otherwise idle stack (the first is a warm-up)."""
    dag_id = f"matview.public.{LATENCY_VIEW}"
    api.patch(f"/dags/{dag_id}", {"is_paused": False})
    seconds = []
    for _ in range(LATENCY_RUNS + 1):
        started = time.time()
        run_id = api.post(f"/dags/{dag_id}/dagRuns", {"logical_date": None})["dag_run_id"]
        api.wait_for_run(dag_id, run_id, timeout=300)
        ti = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/refresh")
        if ti["state"] == "success":
            seconds.append(stamp(ti["end_date"]) - started)
    api.patch(f"/dags/{dag_id}", {"is_paused": True})
    return seconds[1:]


def summarize(
    path: str,
    views: int,
    api: ApiClient,
    dag_ids: list[str],
    start: float,
    window: float,
    cpu: float,
    scheduler_cpu: float,
    machine: float,
) -> PathResult:
    since = datetime.fromtimestamp(start - 86400, timezone.utc).isoformat()
    tis = task_instances(api, dag_ids, since)
    afters = run_afters(api, dag_ids, since)
    done = [
        ti for ti in tis if ti["state"] == "success" and ti.get("end_date") and stamp(ti["end_date"]) <= start + window
    ]
    due = {key: max(after, start) for key, after in afters.items()}
    latencies = [
        stamp(ti["end_date"]) - due[(ti["dag_id"], ti["dag_run_id"])]
        for ti in done
        if (ti["dag_id"], ti["dag_run_id"]) in due
    ]
    first = [ti for ti in done if afters.get((ti["dag_id"], ti["dag_run_id"]), start) < start]
    if len(first) == views:
        first_batch = f"all {views} in {max(stamp(ti['end_date']) for ti in first) - start:.1f} s"
    else:
        first_batch = f"{len(first)} of {views} within the window"
    states: dict[str, int] = {}
    for ti in tis:
        states[str(ti["state"])] = states.get(str(ti["state"]), 0) + 1
    if failed := [ti for ti in tis if ti["state"] == "failed"]:
        print(f"  {path}: {len(failed)} failed; the last log lines of one of them:\n{failure_log(api, failed[0])}")
    result = PathResult(
        path, views, window, len(done), first_batch, cpu, scheduler_cpu, machine, latencies, states, load_average()
    )
    print(f"  {path}: {row(result)}", flush=True)
    return result


def failure_log(api: ApiClient, ti: dict[str, Any]) -> str:
    path = f"/dags/{ti['dag_id']}/dagRuns/{ti['dag_run_id']}/taskInstances/refresh/logs/{ti['try_number']}"
    try:
        content = api.get(path)["content"]
    except RuntimeError as error:
        return f"    (no log: {error})"
    return "\n".join(f"    {entry.get('event')}" for entry in content[-12:] if isinstance(entry, dict))


def row(result: PathResult) -> str:
    latency = (
        f"p50 {statistics.median(result.latencies):.2f} s, p95 {percentile(result.latencies, 0.95):.2f} s"
        if result.latencies
        else "none"
    )
    if result.single:
        latency += f"; one at a time: p50 {statistics.median(result.single):.2f} s ({len(result.single)} runs)"
    return (
        f"| {result.path} | {result.per_minute:.0f} | {result.cpu_per_refresh:.3f} | {latency} | {result.first_batch} "
        f"| {result.cpu / result.window:.2f} cores (scheduler {result.scheduler_cpu / result.window:.2f}); machine "
        f"busy {result.machine:.0%}; task states at the end: "
        + ", ".join(f"{state} {count}" for state, count in sorted(result.states.items()))
        + f"; load {result.load} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 60 views, 2 minutes per path")
    parser.add_argument("--views", type=int, help="tiny views per path (default 1000; --quick 60)")
    parser.add_argument("--minutes", type=int, help="minutes watched per path (default 3; --quick 2)")
    parser.add_argument("--paths", nargs="*", choices=list(PATHS), default=list(PATHS))
    parser.add_argument(
        "--scheduler", action="append", default=[], metavar="KEY=VALUE", help="an [scheduler] setting, repeatable"
    )
    parser.add_argument("--logs", type=Path, help="keep the Airflow processes' logs in this folder, one per path")
    args = parser.parse_args(argv)
    views = args.views or (60 if args.quick else 1000)
    minutes = args.minutes or (2 if args.quick else 3)
    scheduler = dict(item.split("=", 1) for item in args.scheduler)
    started = time.monotonic()
    probe = embedded_cluster()
    try:
        probe.start()
        about = header(probe)
    finally:
        probe.destroy()
    about.append(f"load average before: {load_average()}")
    about.append(
        f"{views} tiny views (10 rows, unique index) per path, each its own DAG on * * * * *, watched {minutes} "
        "minute(s) from when they were unpaused (all due at once); LocalExecutor, parallelism 2, one triggerer; "
        "[scheduler] " + (", ".join(f"{key} = {value}" for key, value in scheduler.items()) or "defaults")
    )
    results = [measure_path(path, views, minutes, scheduler, args.logs) for path in args.paths]
    print()
    print("\n".join(about))
    print()
    print(
        "| path | refreshes per minute | CPU-seconds per refresh (Airflow + PostgreSQL) | trigger-to-success "
        "(due to task success) | all due at once (the first runs) | what it used |"
    )
    print("|---|---:|---:|---|---|---|")
    for result in results:
        print(row(result))
    base = next((result for result in results if result.path == "worker" and result.refreshes), None)
    if base is not None:
        for result in results:
            if result is not base:
                print(f"{result.path} vs worker: {result.per_minute / base.per_minute:.1f}x the refreshes per minute")
    print(f"\nTotal wall time: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
