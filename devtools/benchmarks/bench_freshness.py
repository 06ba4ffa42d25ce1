"""Benchmark of ``target_lag`` in a real Airflow (``make bench-freshness``).

A throwaway PostgreSQL 16 and a real Airflow on loopback (api-server, scheduler, dag-processor, triggerer,
LocalExecutor) with two views over copies of one table, written by one session:

- ``lag_mv``: ``target_lag`` (30 s by default, ``--target``), ``poll_interval`` 2 s, no schedule;
- ``cron_mv``: ``schedule: "* * * * *"``, the shortest period a cron has (it cannot be tuned to 30 s).

Phases: a steady load (one commit a second), a bursty one (bursts of 200 commits, then idle), then idle. The lag is
measured from outside, stricter than the definition (from each change's *commit*, not from when a poll saw it): a
thread reads each view's ``max(id)`` every 0.5 s; the lag at that moment is the time since the commit of the oldest
row the view does not show. Printed: p50 / p95 / max lag per phase and view, refreshes per hour, refreshes while
idle. Alert latencies (a paused DAG, a broken refresh, a broken watcher: the views' server stopped, the catalog
locked) are measured and printed by ``tests/system/test_lag_alerts_stack.py``, whose stack keeps Airflow's metadata
database on a server of its own (this one's server holds both).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import yaml

from devtools.benchmarks.bench import header, percentile
from devtools.harness.airflow_stack import AirflowStack, ApiClient
from devtools.harness.pgcluster import embedded_cluster

REPO = Path(__file__).resolve().parents[2]
VIEWS = ("lag_mv", "cron_mv")
DAGS = {name: f"matview.public.{name}" for name in VIEWS}
POLL = 2


class Load:
    """The writer's commit times by id, and what each view showed when (one sampler thread)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.committed: dict[int, float] = {}
        self.samples: dict[str, list[tuple[float, int]]] = {view: [] for view in VIEWS}
        self.stop = threading.Event()
        self.last = 0

    def sample(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                for view in VIEWS:
                    row = conn.execute(f"SELECT coalesce(max(id), 0) FROM {view}").fetchone()
                    self.samples[view].append((time.time(), int(row[0]) if row else 0))
                time.sleep(0.5)

    def commit(self, conn: psycopg.Connection, count: int, spacing: float) -> None:
        for _ in range(count):
            self.last += 1
            with conn.transaction():
                conn.execute("INSERT INTO events VALUES (%s)", (self.last,))
                conn.execute("INSERT INTO events_copy VALUES (%s)", (self.last,))
            self.committed[self.last] = time.time()
            if spacing:
                time.sleep(spacing)

    def lags(self, view: str, start: float, end: float) -> list[float]:
        """The lag at each sample of ``view`` between ``start`` and ``end``."""
        lags = []
        for at, shown in self.samples[view]:
            if start <= at < end:
                oldest = self.committed.get(shown + 1)
                lags.append(max(0.0, at - oldest) if oldest is not None and oldest <= at else 0.0)
        return lags


def _timestamp(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def refreshes(api: ApiClient, dag_id: str, start: float, end: float) -> int:
    found = api.get(f"/dags/{dag_id}/dagRuns?limit=1000&order_by=run_after")["dag_runs"]
    return sum(start <= _timestamp(run.get("start_date") or run["queued_at"]) < end for run in found)


def start_stack(target: int) -> tuple[Any, AirflowStack, ApiClient, str]:
    cluster = embedded_cluster()
    cluster.start()
    cluster.create_database("app")
    dsn = cluster.dsn("app")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table, view in (("events", "lag_mv"), ("events_copy", "cron_mv")):
            conn.execute(f"CREATE TABLE {table} (id integer PRIMARY KEY)")
            conn.execute(f"CREATE MATERIALIZED VIEW {view} AS SELECT * FROM {table}")
            conn.execute(f"CREATE UNIQUE INDEX ON {view} (id)")
    dags = Path(tempfile.mkdtemp(prefix="matview-bench-dags-"))
    shutil.copy(REPO / "dags" / "matviews.py", dags / "matviews.py")
    config = {
        "defaults": {"retries": 0, "concurrently": False},
        "views": [
            {"name": "public.lag_mv", "target_lag": f"{target}s", "poll_interval": f"{POLL}s"},
            {"name": "public.cron_mv", "schedule": "* * * * *"},
        ],
    }
    (dags / "matviews.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    stack = AirflowStack(cluster, dags, {"postgres_default": cluster.uri("app")}, triggerer=True)
    stack.start()
    api = ApiClient(stack)
    for dag_id in DAGS.values():
        api.wait_for_dag(dag_id)
        api.patch(f"/dags/{dag_id}", {"is_paused": False})
    return cluster, stack, api, dsn


def run(target: int, steady: int, bursts: int, pause: int, idle: int) -> list[str]:
    cluster, stack, api, dsn = start_stack(target)
    lines = [*header(cluster), f"target_lag {target} s, poll_interval {POLL} s; cron_mv on * * * * *", ""]
    try:
        deadline = time.monotonic() + 300
        while refreshes(api, DAGS["lag_mv"], 0, time.time() + 1) < 1:  # the first poll's recording refresh
            if time.monotonic() > deadline:
                raise TimeoutError(stack.log("triggerer"))
            time.sleep(1)
        time.sleep(20)
        load = Load(dsn)
        sampler = threading.Thread(target=load.sample, daemon=True)
        sampler.start()
        phases: list[tuple[str, float, float]] = []
        with psycopg.connect(dsn, autocommit=True) as conn:
            start = time.time()
            load.commit(conn, steady, 1.0)
            phases.append((f"steady, one commit a second for {steady} s", start, time.time()))
            start = time.time()
            for _ in range(bursts):
                load.commit(conn, 200, 0.0)
                time.sleep(pause)
            phases.append((f"bursty, {bursts} bursts of 200 commits, {pause} s apart", start, time.time()))
        start = time.time()
        time.sleep(idle)
        phases.append((f"idle for {idle} s", start, time.time()))
        load.stop.set()
        sampler.join()
        lines += ["| phase | view | lag p50 / p95 / max | refreshes | per hour |", "|---|---|---|---|---|"]
        for name, begin, end in phases:
            for view in VIEWS:
                lags = load.lags(view, begin, end)
                count = refreshes(api, DAGS[view], begin, end)
                lines.append(
                    f"| {name} | {view} | {statistics.median(lags):.1f} / {percentile(lags, 0.95):.1f} / "
                    f"{max(lags):.1f} s | {count} | {count * 3600 / (end - begin):.0f} |"
                )
                print(lines[-1], flush=True)
    finally:
        stack.stop()
        cluster.destroy()
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=int, default=30, help="target_lag in seconds (default 30)")
    parser.add_argument("--steady", type=int, default=240, help="seconds of one commit a second (default 240)")
    parser.add_argument("--bursts", type=int, default=2, help="bursts of 200 commits (default 2)")
    parser.add_argument("--pause", type=int, default=90, help="seconds after each burst (default 90)")
    parser.add_argument("--idle", type=int, default=120, help="seconds with no commit (default 120)")
    args = parser.parse_args(argv)
    print("\n".join(run(args.target, args.steady, args.bursts, args.pause, args.idle)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
