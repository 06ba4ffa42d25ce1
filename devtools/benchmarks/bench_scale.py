"""Scale-out benchmark on the CeleryExecutor. Run with ``make bench-scale`` (``BENCH_ARGS=--quick`` for a smoke run).

A throwaway PostgreSQL (a wheel's server, ``fsync=off``) holds the views and Airflow's metadata database; a real
Airflow on loopback runs the CeleryExecutor (``devtools/harness/airflow_stack.py``: Redis, two Celery workers
``worker1`` and ``worker2`` of concurrency 2 each, api-server, scheduler, dag-processor). Every DAG comes from the
real factory: copies of ``dags/matviews.py`` reading two config files. Measured, in one run of this tool:

1. Throughput: ``tput_views`` tiny views (one DAG each) triggered at once through the REST API, refreshed by one
   worker (each view has ``queue: worker1``, which only ``worker1`` consumes; ``worker2`` stays up, idle) and by two
   workers (the default queue, which both consume): two separate sets of identical views, in rounds of the order
   1, 2, 2, 1 workers on the same stack, so both see the same machine load over the run.
2. Latency: one tiny view triggered through the REST API, one run after another, from the trigger to its task's
   success and to the run's success; each split by the run's, the task instance's and the task log's timestamps
   into the API, the scheduler, the executor and queue, the task's start-up, our operator and the task's wrap-up.
3. Many views from ONE config file with ``pool:`` (``--views``, 200 by default; 0 skips it): an Airflow pool of
   ``--pool`` slots created through the REST API, every DAG triggered at once, ``pg_stat_activity`` of the views'
   database sampled every 0.2 s. Each view's refresh sleeps ``--refresh-seconds`` so that the sampling can see
   the refreshes overlap.

For what bounds them it also reads how long each Celery task held its worker slot (the workers' logs) and the CPU
time of the stack's and PostgreSQL's processes (``/proc``). ``--min-heartbeat-interval`` sets the workers'
``[workers] min_heartbeat_interval``, which bounds how long a slot stays held after its task ends.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import yaml

from devtools.benchmarks.bench import header
from devtools.benchmarks.bench_stats import percentile
from devtools.harness.airflow_stack import AirflowStack, ApiClient, celery_unavailable
from devtools.harness.pgcluster import embedded_cluster

REPO = Path(__file__).resolve().parents[2]
SCALE_POOL = "matview_scale"
LATENCY_VIEW = "tiny_latency"
DONE = ("success", "failed", "upstream_failed", "skipped", "removed")


@dataclass(frozen=True)
class Plan:
    latency_runs: int
    warmup_runs: int
    tput_views: int
    rounds: tuple[int, ...]
    scale_views: int


FULL = Plan(latency_runs=20, warmup_runs=2, tput_views=40, rounds=(1, 2, 2, 1), scale_views=200)
QUICK = Plan(latency_runs=5, warmup_runs=1, tput_views=10, rounds=(1, 2), scale_views=20)


def tput_views(workers: int, count: int) -> list[str]:
    return [f"tput_w{workers}_{i:03d}" for i in range(count)]


def scale_views(count: int) -> list[str]:
    return [f"scale_{i:03d}" for i in range(count)]


def dag_id(view: str) -> str:
    return f"matview.public.{view}"


def stamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# ------------------------------------------------------------------------------------------------- machine load


class CpuMeter:
    """The machine's busy share of CPU time between :meth:`start` and :meth:`stop`, from ``/proc/stat``."""

    @staticmethod
    def _times() -> tuple[int, int]:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    def start(self) -> None:
        self.begin = self._times()

    def stop(self) -> float:
        total, idle = self._times()
        elapsed = total - self.begin[0]
        return 1 - (idle - self.begin[1]) / elapsed if elapsed else 0.0


class StackCpu:
    """CPU seconds used by the Airflow stack (every process of its sessions, Celery's task processes included) and
    the PostgreSQL server between :meth:`start` and :meth:`stop`. A process that ended in between is counted in its
    parent's ``cutime``/``cstime`` (the Celery pool process, the postmaster), which live through the measurement."""

    def __init__(self, stack: AirflowStack, postmaster_pid_file: Path) -> None:
        self.stack = stack
        self.postmaster_pid_file = postmaster_pid_file

    def _pids(self) -> set[int]:
        pids = set(self.stack.surviving_processes())
        with contextlib.suppress(OSError, ValueError, IndexError):
            postmaster = int(self.postmaster_pid_file.read_text().split()[0])
            pids.add(postmaster)
            for stat in Path("/proc").glob("[0-9]*/stat"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                        pids.add(int(stat.parent.name))
        return pids

    def _seconds(self) -> float:
        ticks = 0
        for pid in self._pids():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += sum(int(value) for value in fields[11:15])
        return ticks / os.sysconf("SC_CLK_TCK")

    def start(self) -> None:
        self.begin = self._seconds()

    def stop(self) -> float:
        return self._seconds() - self.begin


CELERY_DONE = re.compile(r"^(\S+Z) \[info\s*\] Task execute_workload\[[^\]]+\] succeeded in ([0-9.]+)s")


def celery_task_seconds(stack: AirflowStack, since: float, until: float) -> list[float]:
    """How long each Celery task (``execute_workload``: one task instance, from the Celery worker's receiving it to
    its end) that ended between ``since`` and ``until`` held its worker slot, from the workers' logs."""
    found = []
    for worker in stack.workers:
        for line in stack.log(f"celery-{worker}", tail=10**9).splitlines():
            if (match := CELERY_DONE.match(line)) and since <= stamp(match[1]) <= until:
                found.append(float(match[2]))
    return found


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


class BackendSampler(threading.Thread):
    """Every 0.2 s, the connections to the views' database (all of them are refreshes: nothing else connects there)
    and how many of them run a ``REFRESH MATERIALIZED VIEW`` at that moment."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.samples: list[tuple[int, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                row = conn.execute(
                    "SELECT count(*), count(*) FILTER (WHERE state = 'active' "
                    "AND query LIKE 'REFRESH MATERIALIZED VIEW%%') FROM pg_stat_activity "
                    "WHERE datname = current_database() AND backend_type = 'client backend' "
                    "AND pid <> pg_backend_pid()"
                ).fetchone()
                if row is not None:
                    self.samples.append((int(row[0]), int(row[1])))
                time.sleep(0.2)


# ---------------------------------------------------------------------------------------------------- the setup


def create_views(dsn: str, plan: Plan, views: int) -> None:
    names = [LATENCY_VIEW, *tput_views(1, plan.tput_views), *tput_views(2, plan.tput_views)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE tiny_src (id integer PRIMARY KEY, val integer NOT NULL)")
        conn.execute("INSERT INTO tiny_src SELECT g, g * 7 FROM generate_series(1, 10) g")
        for name in names:
            conn.execute(f"CREATE MATERIALIZED VIEW {name} AS SELECT * FROM tiny_src")
            conn.execute(f"CREATE UNIQUE INDEX ON {name} (id)")
        # The views of the scaling run read the delay when refreshed (0 while they are created).
        conn.execute("CREATE TABLE refresh_delay (seconds float8)")
        conn.execute("INSERT INTO refresh_delay VALUES (0)")
        for name in scale_views(views):
            conn.execute(
                f"CREATE MATERIALIZED VIEW {name} AS SELECT g AS id FROM generate_series(1, 3) g "
                "WHERE (SELECT pg_sleep(seconds)::text FROM refresh_delay) = ''"
            )


def write_dags(folder: Path, plan: Plan, views: int) -> None:
    """``matviews.py`` + ``matviews.yaml``: the scaling run's views in one config with a pool; ``bench_views.py`` (the
    same file, reading ``bench_views.yaml``): the tiny views of the throughput and latency measurements."""
    factory_file = (REPO / "dags" / "matviews.py").read_text()
    (folder / "matviews.py").write_text(factory_file)
    assert factory_file.count('"matviews.yaml"') == 1, "dags/matviews.py no longer names matviews.yaml once"
    (folder / "bench_views.py").write_text(factory_file.replace('"matviews.yaml"', '"bench_views.yaml"'))
    manual = {"schedule": None, "retries": 0}
    scale = {
        "defaults": {**manual, "pool": SCALE_POOL},
        "views": [{"name": f"public.{name}"} for name in scale_views(views)],
    }
    tiny = {
        "defaults": manual,
        "views": [
            {"name": f"public.{LATENCY_VIEW}"},
            *({"name": f"public.{name}", "queue": "worker1"} for name in tput_views(1, plan.tput_views)),
            *({"name": f"public.{name}"} for name in tput_views(2, plan.tput_views)),
        ],
    }
    (folder / "matviews.yaml").write_text(yaml.safe_dump(scale, sort_keys=False))
    (folder / "bench_views.yaml").write_text(yaml.safe_dump(tiny, sort_keys=False))


def wait_for_dags(api: ApiClient, expected: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while (total := int(api.get("/dags?limit=1")["total_entries"])) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {total} of {expected} DAGs parsed after {timeout:.0f}s")
        time.sleep(2)


# ------------------------------------------------------------------------------------------------- runs and TIs


def trigger(api: ApiClient, dag_ids: list[str]) -> dict[str, str]:
    """Trigger one run of each DAG; ``dag_id -> run_id``."""
    return {dag: api.post(f"/dags/{dag}/dagRuns", {"logical_date": None})["dag_run_id"] for dag in dag_ids}


def task_instances(api: ApiClient, runs: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The ``refresh`` task instance of each run, ``dag_id -> task instance``, in pages of 100."""
    found: dict[str, dict[str, Any]] = {}
    offset = 0
    body = {"dag_ids": list(runs), "dag_run_ids": sorted(set(runs.values())), "task_ids": ["refresh"]}
    while True:
        page = api.post("/dags/~/dagRuns/~/taskInstances/list", {**body, "page_offset": offset, "page_limit": 100})
        for ti in page["task_instances"]:
            if runs.get(ti["dag_id"]) == ti["dag_run_id"]:
                found[ti["dag_id"]] = ti
        offset += 100
        if offset >= int(page["total_entries"]):
            return found


def wait_for_tasks(api: ApiClient, runs: dict[str, str], timeout: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        tis = task_instances(api, runs)
        if len(tis) == len(runs) and all(ti["state"] in DONE for ti in tis.values()):
            return tis
        if time.monotonic() > deadline:
            pending = {dag: tis.get(dag, {}).get("state") for dag in runs if tis.get(dag, {}).get("state") not in DONE}
            raise TimeoutError(f"{len(pending)} runs not finished after {timeout:.0f}s: {list(pending.items())[:5]}")
        time.sleep(2)


def most_at_once(tis: list[dict[str, Any]]) -> int:
    """The most task instances running at the same moment, from their start and end dates."""
    events = sorted(
        [(stamp(ti["start_date"]), 1) for ti in tis if ti.get("start_date") and ti.get("end_date")]
        + [(stamp(ti["end_date"]), -1) for ti in tis if ti.get("start_date") and ti.get("end_date")]
    )
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def per_worker(tis: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for ti in tis:
        counts[str(ti.get("hostname"))] = counts.get(str(ti.get("hostname")), 0) + 1
    return ", ".join(f"{host} {count}" for host, count in sorted(counts.items()))


# -------------------------------------------------------------------------------------------------- throughput


@dataclass
class Round:
    workers: int
    refreshes: int
    wall: float
    succeeded: int
    split: str
    at_once: int
    task_mean: float
    slot_mean: float
    stack_cpu: float
    machine_cpu: float
    load: str

    @property
    def per_minute(self) -> float:
        return self.refreshes / self.wall * 60


@dataclass
class Bench:
    """The running stack, its API client and the meter of its CPU time."""

    stack: AirflowStack
    api: ApiClient
    cpu: StackCpu


def measured_batch(bench: Bench, dags: list[str], timeout: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Trigger one run of each DAG at once and wait for every task; the task instances and what was measured."""
    machine, started = CpuMeter(), time.time()
    machine.start()
    bench.cpu.start()
    runs = trigger(bench.api, dags)
    triggered = time.time() - started
    tis = list(wait_for_tasks(bench.api, runs, timeout=timeout).values())
    stack_cpu, machine_cpu = bench.cpu.stop(), machine.stop()
    last = max(stamp(ti["end_date"]) for ti in tis if ti.get("end_date"))
    # A Celery task ends after its task instance: wait for every one's line in the workers' logs.
    deadline = time.monotonic() + 30
    while len(slots := celery_task_seconds(bench.stack, started, time.time())) < len(tis):
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    return tis, {
        "triggered": triggered,
        "wall": last - started,
        "stack_cpu": stack_cpu,
        "machine_cpu": machine_cpu,
        "slot_mean": statistics.mean(slots) if slots else float("nan"),
        "task_mean": statistics.mean(float(ti["duration"] or 0) for ti in tis),
        "load": load_average(),
    }


def throughput_round(bench: Bench, plan: Plan, workers: int) -> Round:
    dags = [dag_id(view) for view in tput_views(workers, plan.tput_views)]
    tis, measured = measured_batch(bench, dags, timeout=60 + 30 * plan.tput_views)
    result = Round(
        workers=workers,
        refreshes=len(tis),
        wall=measured["wall"],
        succeeded=sum(ti["state"] == "success" for ti in tis),
        split=per_worker(tis),
        at_once=most_at_once(tis),
        task_mean=measured["task_mean"],
        slot_mean=measured["slot_mean"],
        stack_cpu=measured["stack_cpu"],
        machine_cpu=measured["machine_cpu"],
        load=measured["load"],
    )
    print(
        f"  {workers} worker(s): {result.refreshes} refreshes in {result.wall:.1f} s from the first trigger "
        f"({result.per_minute:.1f}/min), {result.succeeded} succeeded, {result.split}, at most {result.at_once} "
        f"running at once; Celery slot held {result.slot_mean:.2f} s per refresh (task instance "
        f"{result.task_mean:.2f} s); stack CPU {result.stack_cpu:.1f} s ({result.stack_cpu / result.refreshes:.2f} "
        f"s per refresh, {result.stack_cpu / result.wall:.2f} cores); machine CPU busy {result.machine_cpu:.0%}, "
        f"load {result.load}",
        flush=True,
    )
    return result


def throughput(bench: Bench, plan: Plan, lines: list[str]) -> None:
    print(f"throughput: {plan.tput_views} tiny views triggered at once, rounds of {plan.rounds} workers", flush=True)
    rounds = [throughput_round(bench, plan, workers) for workers in plan.rounds]
    summary: dict[int, float] = {}
    for workers in (1, 2):
        mine = [r for r in rounds if r.workers == workers]
        rates = [r.per_minute for r in mine]
        summary[workers] = statistics.median(rates)

        def each(values: list[str]) -> str:
            return " / ".join(values)

        lines.append(
            f"| refreshes per minute, {plan.tput_views} tiny views triggered at once, {workers} worker(s) "
            f"({2 * workers} Celery slots), {len(mine)} round(s) | {each([f'{rate:.1f}' for rate in rates])}/min "
            f"(trigger to last success {each([f'{r.wall:.1f}' for r in mine])} s); succeeded "
            f"{each([f'{r.succeeded}/{r.refreshes}' for r in mine])}; per worker {each([r.split for r in mine])}; "
            f"at most {max(r.at_once for r in mine)} tasks running at once; a Celery slot held "
            f"{each([f'{r.slot_mean:.2f}' for r in mine])} s per refresh (mean), of which the task instance "
            f"ran {each([f'{r.task_mean:.2f}' for r in mine])} s; CPU of Airflow + PostgreSQL "
            f"{each([f'{r.stack_cpu / r.refreshes:.2f}' for r in mine])} s per refresh, "
            f"{each([f'{r.stack_cpu / r.wall:.2f}' for r in mine])} of 2 cores; machine CPU busy "
            f"{each([f'{r.machine_cpu:.0%}' for r in mine])}; load average after {each([r.load for r in mine])} |"
        )
        print(lines[-1], flush=True)
    lines.append(
        f"| 2 workers vs 1 (median rates) | {summary[2] / summary[1]:.2f}x ({summary[2]:.1f} vs {summary[1]:.1f}/min) |"
    )
    print(lines[-1], flush=True)


# ----------------------------------------------------------------------------------------------------- latency

PHASES = (
    ("api", "API: trigger -> run queued"),
    ("scheduler", "scheduler: run queued -> task queued"),
    ("executor", "executor and queue: task queued -> task running on a worker"),
    ("startup", "task start-up: running -> execute() (fork, bundle, parse the DAG file)"),
    ("ours", "our operator: execute() -> logged 'Refreshed'"),
    (
        "prepare",
        "of which before the REFRESH (imports of psycopg and the postgres hook in the new task process, "
        "connection lookup, connect, session settings, catalog reads, advisory lock)",
    ),
    ("refreshing", "of which the REFRESH and after (row count, asset event, lineage)"),
    ("refresh", "of which the REFRESH statement alone (the XCom's seconds)"),
    ("wrapup", "task wrap-up: execute() returned -> task success (XCom, asset event, state)"),
    ("task", "total: trigger -> task success"),
    ("run", "total: trigger -> DAG run success"),
)


def log_marks(api: ApiClient, dag: str, run_id: str, try_number: int) -> dict[str, float]:
    """From the task log's timestamps: when ``execute()`` began (the task runner closes its *Pre Execute* group
    just before calling it), when our refresh core logged ``Refreshing ...`` (just before the REFRESH statement)
    and when our operator logged ``Refreshed ...`` (the last thing it does)."""
    content = api.get(f"/dags/{dag}/dagRuns/{run_id}/taskInstances/refresh/logs/{try_number}")["content"]
    marks: dict[str, float] = {}
    in_pre_execute = False
    for entry in content:
        event = str(entry.get("event", ""))
        if not (when := entry.get("timestamp")):
            continue
        if event == "::group::Pre Execute":
            in_pre_execute = True
        elif event == "::endgroup::" and in_pre_execute:
            marks.setdefault("execute", stamp(when))
        elif event.startswith("Refreshing "):
            marks.setdefault("refreshing", stamp(when))
        elif event.startswith("Refreshed "):
            marks["refreshed"] = stamp(when)
    return marks


def xcom_seconds(api: ApiClient, dag: str, run_id: str) -> float | None:
    entry = api.get(f"/dags/{dag}/dagRuns/{run_id}/taskInstances/refresh/xcomEntries/return_value")
    value = entry.get("value")
    if isinstance(value, str):
        value = yaml.safe_load(value)  # a JSON or Python repr of the dict, depending on the API's serialisation
    return float(value["seconds"]) if isinstance(value, dict) and "seconds" in value else None


def one_latency(api: ApiClient) -> dict[str, float]:
    dag = dag_id(LATENCY_VIEW)
    started = time.time()
    run_id = api.post(f"/dags/{dag}/dagRuns", {"logical_date": None})["dag_run_id"]
    run = api.wait_for_run(dag, run_id, timeout=300)
    ti = api.get(f"/dags/{dag}/dagRuns/{run_id}/taskInstances/refresh")
    if run["state"] != "success":
        raise RuntimeError(f"{dag} run {run_id} ended {run['state']}")
    marks = log_marks(api, dag, run_id, int(ti["try_number"]))
    phases = {
        "api": stamp(run["queued_at"]) - started,
        "scheduler": stamp(ti["queued_when"]) - stamp(run["queued_at"]),
        "executor": stamp(ti["start_date"]) - stamp(ti["queued_when"]),
        "task": stamp(ti["end_date"]) - started,
        "run": stamp(run["end_date"]) - started,
    }
    if {"execute", "refreshing", "refreshed"} <= set(marks):
        phases["startup"] = marks["execute"] - stamp(ti["start_date"])
        phases["ours"] = marks["refreshed"] - marks["execute"]
        phases["prepare"] = marks["refreshing"] - marks["execute"]
        phases["refreshing"] = marks["refreshed"] - marks["refreshing"]
        phases["wrapup"] = stamp(ti["end_date"]) - marks["refreshed"]
    if (seconds := xcom_seconds(api, dag, run_id)) is not None:
        phases["refresh"] = seconds
    return phases


def latency(api: ApiClient, plan: Plan, lines: list[str]) -> None:
    print(
        f"latency: {plan.warmup_runs} warm-up + {plan.latency_runs} runs of {LATENCY_VIEW}, one at a time", flush=True
    )
    for _ in range(plan.warmup_runs):
        one_latency(api)
    samples: list[dict[str, float]] = []
    for number in range(plan.latency_runs):
        samples.append(one_latency(api))
        print(f"  run {number + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in samples[-1].items()), flush=True)
    for key, label in PHASES:
        values = [sample[key] for sample in samples if key in sample]
        if not values:
            lines.append(f"| {label} | not found in the task logs |")
            continue
        shown = [f"p50 {fmt(statistics.median(values))}", f"p95 {fmt(percentile(values, 0.95))}"]
        shown.append(f"max {fmt(max(values))}")
        missing = f", {len(samples) - len(values)} run(s) without it" if len(values) < len(samples) else ""
        lines.append(f"| latency, {label} ({len(values)} runs{missing}) | {', '.join(shown)} |")
        print(lines[-1], flush=True)
    lines.append(f"| load average after the latency runs | {load_average()} |")


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


# ------------------------------------------------------------------------------------------------ many views


def many_views(bench: Bench, dsn: str, views: int, pool: int, refresh_seconds: float, lines: list[str]) -> list[str]:
    """The scaling run; returns its problems (empty when every check held)."""
    print(f"{views} views from one config, pool {SCALE_POOL} of {pool} slots, refresh {refresh_seconds} s", flush=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE refresh_delay SET seconds = %s", [refresh_seconds])
    bench.api.post("/pools", {"name": SCALE_POOL, "slots": pool, "include_deferred": True})
    sampler = BackendSampler(dsn)
    sampler.start()
    try:
        dags = [dag_id(view) for view in scale_views(views)]
        tis, measured = measured_batch(bench, dags, timeout=600 + 20 * views)
    finally:
        sampler.stop.set()
        sampler.join()
    succeeded = [ti for ti in tis if ti["state"] == "success"]
    connections = max((sample[0] for sample in sampler.samples), default=0)
    refreshing = max((sample[1] for sample in sampler.samples), default=0)
    at_peak = sum(sample[0] == connections for sample in sampler.samples)
    in_pool = sum(ti["pool"] == SCALE_POOL for ti in tis)
    hosts = {str(ti.get("hostname")) for ti in succeeded}
    problems = []
    if len(succeeded) != views:
        problems.append(f"{views - len(succeeded)} of {views} did not succeed")
    if connections > pool:
        problems.append(f"{connections} connections to the views' database at once, over the pool's {pool}")
    if not {"worker1", "worker2"} <= hosts:
        problems.append(f"not spread over both workers: {sorted(hosts)}")
    if in_pool != views:
        problems.append(f"only {in_pool} of {views} task instances in pool {SCALE_POOL}")
    wall = measured["wall"]
    lines.append(
        f"| {views} views from one config (pool `{SCALE_POOL}` of {pool} slots; each refresh sleeps "
        f"{refresh_seconds:g} s), all triggered at once ({measured['triggered']:.1f} s to trigger them) | succeeded "
        f"{len(succeeded)}/{views}; per worker {per_worker(succeeded)}; peak connections to the views' database "
        f"{connections} (in {at_peak} of {len(sampler.samples)} samples, every 0.2 s), peak REFRESH running "
        f"{refreshing}, pool N = {pool}; at most {most_at_once(tis)} tasks running at once (of 4 Celery slots); "
        f"wall time {wall:.0f} s from the first trigger to the last success ({views / wall * 60:.1f} refreshes/min); "
        f"a Celery slot held {measured['slot_mean']:.2f} s per refresh (mean), of which the task instance ran "
        f"{measured['task_mean']:.2f} s; CPU of Airflow + PostgreSQL {measured['stack_cpu'] / views:.2f} s per "
        f"refresh, {measured['stack_cpu'] / wall:.2f} of 2 cores; machine CPU busy {measured['machine_cpu']:.0%}; "
        f"load average after {measured['load']} |"
    )
    print(lines[-1], flush=True)
    return problems


# ------------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer views and runs")
    parser.add_argument("--views", type=int, help="views in the one-config run (default 200; --quick 20; 0 skips)")
    parser.add_argument("--pool", type=int, default=3, help="slots of that run's pool (default 3)")
    parser.add_argument("--refresh-seconds", type=float, default=1.0, help="each refresh's sleep in that run")
    parser.add_argument(
        "--min-heartbeat-interval",
        type=int,
        help="[workers] min_heartbeat_interval for the workers (Airflow's default: 5 s), which also bounds how long a "
        "worker's supervisor may take to notice that a finished task's process exited",
    )
    parser.add_argument("--logs", type=Path, help="keep the Airflow processes' logs in this folder")
    args = parser.parse_args(argv)
    if reason := celery_unavailable():
        parser.error(f"the CeleryExecutor stack cannot run here: {reason}")
    plan = QUICK if args.quick else FULL
    views = plan.scale_views if args.views is None else args.views
    started = time.monotonic()
    lines = ["| measurement | result |", "|---|---|"]
    problems: list[str] = []
    cluster = embedded_cluster()
    stack: AirflowStack | None = None
    try:
        cluster.start()
        about = header(cluster)
        about.append(f"load average before: {load_average()}")
        cluster.create_database("app")
        dsn = cluster.dsn("app")
        create_views(dsn, plan, views)
        dags = Path(tempfile.mkdtemp(prefix="matview-bench-scale-"))
        write_dags(dags, plan, views)
        stack = AirflowStack(
            cluster, dags, {"postgres_default": cluster.uri("app")}, executor="celery", triggerer=False
        )
        stack.env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "False"
        # Parsed once, then re-parsed every 5 minutes rather than every 10 s: the re-parses of the 200-view file
        # would otherwise take CPU from the runs measured (in production the dag-processor has its own machine).
        stack.env["AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"] = "300"
        if args.min_heartbeat_interval is not None:
            stack.env["AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL"] = str(args.min_heartbeat_interval)
        heartbeat = stack.env.get("AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL", "5 (default)")
        about.append(f"CeleryExecutor, 2 workers x concurrency 2; [workers] min_heartbeat_interval = {heartbeat}")
        stack.start()
        bench = Bench(stack, ApiClient(stack), StackCpu(stack, cluster.data_dir / "postmaster.pid"))
        wait_for_dags(bench.api, 1 + 2 * plan.tput_views + views)
        print(f"Airflow with the CeleryExecutor up at {stack.url}; load average {load_average()}", flush=True)
        latency(bench.api, plan, lines)
        throughput(bench, plan, lines)
        if views:
            problems = many_views(bench, dsn, views, args.pool, args.refresh_seconds, lines)
    finally:
        try:
            if stack is not None:
                if args.logs is not None:
                    shutil.copytree(stack.logs, args.logs, dirs_exist_ok=True)
                stack.stop()
        finally:
            cluster.destroy()
    print()
    print("\n".join(about))
    print()
    print("\n".join(lines))
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print(f"\nTotal wall time: {time.monotonic() - started:.0f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
