"""Benchmark of ``on_change`` against a ``* * * * *`` schedule, in a real Airflow. Run with ``make bench-onchange``.

A throwaway PostgreSQL 16 and a real Airflow on loopback (api-server, scheduler, dag-processor, triggerer,
LocalExecutor) with three views over copies of one table:

- ``onchange_mv``: ``on_change: true`` (``poll_interval`` 10 s, ``min_interval`` 10 s), no schedule;
- ``cron_mv``: ``schedule: "* * * * *"``, the same query over the same table;
- ``storm_mv``: ``on_change: true`` with the default ``min_interval: 1m``, over a table of its own.

It measures, side by side: the latency from a committed insert to each view showing it (one insert every
``--spacing`` seconds); the refreshes of both during an idle window (no insert into their table; the write storm on
``storm_mv``'s own table runs inside that window: one commit a second); and the database cost of one poll for 1 and
1,000 watched views on one connection, outside Airflow. ``--quick`` polls every 2 s and idles for 4 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
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

from devtools.benchmarks.bench import header, percentile
from devtools.harness.airflow_stack import AirflowStack, ApiClient
from devtools.harness.pgcluster import embedded_cluster

REPO = Path(__file__).resolve().parents[2]
DAGS = {name: f"matview.public.{name}" for name in ("onchange_mv", "cron_mv", "storm_mv")}


@dataclass(frozen=True)
class Plan:
    poll_interval: int
    min_interval: int
    changes: int
    spacing: float
    idle: int
    storm: int
    watched_views: int


FULL = Plan(poll_interval=10, min_interval=10, changes=20, spacing=25, idle=600, storm=180, watched_views=1000)
QUICK = Plan(poll_interval=2, min_interval=5, changes=20, spacing=12, idle=240, storm=180, watched_views=1000)


class Sampler(threading.Thread):
    """Reads ``max(id)`` of each view every 0.2 s and records when each id first shows up."""

    def __init__(self, dsn: str, views: list[str]) -> None:
        super().__init__(daemon=True)
        self.dsn, self.views = dsn, views
        self.seen: dict[str, dict[int, float]] = {view: {} for view in views}
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            shown = dict.fromkeys(self.views, 0)
            while not self.stop.is_set():
                for view in self.views:
                    row = conn.execute(f"SELECT coalesce(max(id), 0) FROM {view}").fetchone()
                    top = int(row[0]) if row else 0
                    now = time.time()
                    for ident in range(shown[view] + 1, top + 1):
                        self.seen[view][ident] = now
                    shown[view] = max(shown[view], top)
                time.sleep(0.2)


def create_schema(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table, view in (("events", "onchange_mv"), ("events_copy", "cron_mv"), ("storm", "storm_mv")):
            conn.execute(f"CREATE TABLE {table} (id integer PRIMARY KEY, payload text)")
            conn.execute(f"CREATE MATERIALIZED VIEW {view} AS SELECT * FROM {table}")
            conn.execute(f"CREATE UNIQUE INDEX ON {view} (id)")


def write_config(dags: Path, plan: Plan) -> None:
    shutil.copy(REPO / "dags" / "matviews.py", dags / "matviews.py")
    on_change = {"on_change": True, "poll_interval": f"{plan.poll_interval}s", "concurrently": False}
    config = {
        "defaults": {"retries": 0},
        "views": [
            {"name": "public.onchange_mv", **on_change, "min_interval": f"{plan.min_interval}s"},
            {"name": "public.cron_mv", "schedule": "* * * * *", "concurrently": False},
            {"name": "public.storm_mv", **on_change},
        ],
    }
    (dags / "matviews.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def runs(api: ApiClient, dag_id: str) -> list[dict[str, Any]]:
    return list(api.get(f"/dags/{dag_id}/dagRuns?limit=1000&order_by=run_after")["dag_runs"])


def _timestamp(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def started_between(api: ApiClient, dag_id: str, start: float, end: float) -> int:
    return sum(
        start <= _timestamp(run.get("start_date") or run.get("queued_at") or run["run_after"]) < end
        for run in runs(api, dag_id)
    )


def latency_and_storm(plan: Plan, lines: list[str], logs: Path | None = None) -> None:
    cluster = embedded_cluster()
    stack: AirflowStack | None = None
    try:
        cluster.start()
        cluster.create_database("app")
        dsn = cluster.dsn("app")
        create_schema(dsn)
        dags = Path(tempfile.mkdtemp(prefix="matview-bench-dags-"))
        write_config(dags, plan)
        stack = AirflowStack(cluster, dags, {"postgres_default": cluster.uri("app")}, triggerer=True)
        stack.start()
        api = ApiClient(stack)
        for dag_id in DAGS.values():
            api.wait_for_dag(dag_id)
            api.patch(f"/dags/{dag_id}", {"is_paused": False})
        deadline = time.monotonic() + 300
        while stack.log("triggerer", 10**7).count("as its baseline") < 2:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the watchers did not start:\n{stack.log('triggerer')}")
            time.sleep(1)
        print("watchers started; measuring latency", flush=True)
        sampler = Sampler(dsn, ["onchange_mv", "cron_mv"])
        sampler.start()
        committed: dict[int, float] = {}
        with psycopg.connect(dsn, autocommit=True) as conn:
            for ident in range(1, plan.changes + 1):
                with conn.transaction():
                    conn.execute("INSERT INTO events VALUES (%s, 'x')", (ident,))
                    conn.execute("INSERT INTO events_copy VALUES (%s, 'x')", (ident,))
                committed[ident] = time.time()
                print(f"  change {ident}/{plan.changes}", flush=True)
                time.sleep(plan.spacing)
        wait_until = time.monotonic() + 150
        while time.monotonic() < wait_until and any(
            len(sampler.seen[view]) < plan.changes for view in ("onchange_mv", "cron_mv")
        ):
            time.sleep(1)
        sampler.stop.set()
        sampler.join()
        for view in ("onchange_mv", "cron_mv"):
            latencies = [sampler.seen[view][i] - committed[i] for i in committed if i in sampler.seen[view]]
            missing = plan.changes - len(latencies)
            target = f" (target p95 <= {plan.poll_interval + 10} s)" if view == "onchange_mv" else ""
            lines.append(
                f"| latency, commit -> {view} shows it ({plan.changes} changes, one per {plan.spacing:.0f} s"
                f"{', poll_interval ' + str(plan.poll_interval) + ' s' if view == 'onchange_mv' else ', * * * * *'})"
                f" | p50 {statistics.median(latencies):.1f} s, p95 {percentile(latencies, 0.95):.1f} s, "
                f"max {max(latencies):.1f} s{f', {missing} never shown' if missing else ''}{target} |"
            )
            print(lines[-1], flush=True)

        # The idle window for onchange_mv and cron_mv (nothing writes to events or events_copy); the storm on
        # storm_mv's own table runs inside it.
        idle_start = time.time()
        storm_runs_before = len(runs(api, DAGS["storm_mv"]))
        print(f"idle window of {plan.idle} s, with a write storm of {plan.storm} s on storm_mv", flush=True)
        last = 0
        with psycopg.connect(dsn, autocommit=True) as conn:
            storm_end = time.monotonic() + plan.storm
            while time.monotonic() < storm_end:
                last += 1
                conn.execute("INSERT INTO storm VALUES (%s, 'storm')", (last,))
                time.sleep(1)
        storm_stopped = time.time()
        time.sleep(max(0.0, idle_start + plan.idle - time.time()))
        idle_end = time.time()
        for dag_id in ("onchange_mv", "cron_mv"):
            count = started_between(api, DAGS[dag_id], idle_start, idle_end)
            lines.append(f"| refreshes of {dag_id} in {plan.idle / 60:.0f} idle minutes | {count} |")
            print(lines[-1], flush=True)
        # Let the storm's last change through: at most min_interval (1 min) after the storm, plus a run.
        settle = time.monotonic() + 180
        with psycopg.connect(dsn, autocommit=True) as conn:
            while time.monotonic() < settle:
                row = conn.execute("SELECT coalesce(max(id), 0) FROM storm_mv").fetchone()
                done = all(run["state"] in ("success", "failed") for run in runs(api, DAGS["storm_mv"]))
                if row == (last,) and done:
                    break
                time.sleep(2)
            shows = conn.execute("SELECT coalesce(max(id), 0), count(*) FROM storm_mv").fetchone()
        storm = runs(api, DAGS["storm_mv"])[storm_runs_before:]
        for run in storm:
            events = api.get(f"/dags/{DAGS['storm_mv']}/dagRuns/{run['dag_run_id']}/upstreamAssetEvents")
            print(f"  storm run queued {run['queued_at']}: {[e['extra'] for e in events['asset_events']]}")
        ends = [_timestamp(run["end_date"]) for run in storm if run.get("end_date")]
        lines.append(
            f"| write storm: {last} commits, one a second for {plan.storm / 60:.0f} min, min_interval 1m | "
            f"{len(storm)} refreshes (target <= 4); the view ends with commit {shows[0] if shows else '?'} of {last} "
            f"({'met' if shows and shows[0] == last else 'MISSED'}), the last refresh ended "
            f"{max(ends, default=storm_stopped) - storm_stopped:.0f} s after the last commit |"
        )
        print(lines[-1], flush=True)
    finally:
        try:
            if stack is not None:
                if logs is not None:
                    shutil.copytree(stack.logs, logs, dirs_exist_ok=True)
                stack.stop()
        finally:
            cluster.destroy()


def watching_cost(plan: Plan, lines: list[str]) -> None:
    """One poll of 1 and of ``plan.watched_views`` views (each over a table of its own) on one connection."""
    from airflow_matview.triggers.source_changes import poll_views

    cluster = embedded_cluster()
    try:
        cluster.start()
        cluster.create_database("app")
        dsn = cluster.dsn("app")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                f"DO $$ BEGIN FOR i IN 1..{int(plan.watched_views)} LOOP "
                "EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY)', i); "
                "EXECUTE format('CREATE MATERIALIZED VIEW v%s AS SELECT * FROM t%s', i, i); "
                "END LOOP; END $$"
            )

        class Counting(psycopg.AsyncConnection[Any]):
            statements = 0

            async def execute(self, *args: Any, **kwargs: Any) -> Any:
                type(self).statements += 1
                return await super().execute(*args, **kwargs)

        async def measure(count: int) -> tuple[int, float, float]:
            names = [f"public.v{i}" for i in range(1, count + 1)]
            async with await Counting.connect(dsn, autocommit=True) as conn:
                await poll_views(conn, names)  # warm-up
                Counting.statements = 0
                durations = []
                for _ in range(20):
                    started = time.perf_counter()
                    states = await poll_views(conn, names)
                    durations.append(time.perf_counter() - started)
                assert all(state.fingerprint is not None for state in states.values())
                return Counting.statements // 20, statistics.median(durations), max(durations)

        async def one_by_one() -> float:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                started = time.perf_counter()
                for i in range(1, plan.watched_views + 1):
                    await poll_views(conn, [f"public.v{i}"])
                return time.perf_counter() - started

        for count in (1, plan.watched_views):
            queries, typical, worst = asyncio.run(measure(count))
            lines.append(
                f"| one poll watching {count:,} view(s) on one connection | {queries} queries, "
                f"median {typical * 1000:.1f} ms, max {worst * 1000:.1f} ms (20 polls) |"
            )
            print(lines[-1], flush=True)
        separately = asyncio.run(one_by_one())
        lines.append(
            f"| the same {plan.watched_views:,} views polled one by one (a poll loop per view, as without shared "
            f"streams) | {2 * plan.watched_views:,} queries, {separately * 1000:.0f} ms |"
        )
        print(lines[-1], flush=True)
    finally:
        cluster.destroy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="poll every 2 s, idle 4 minutes")
    parser.add_argument("--cost-only", action="store_true", help="only the database cost of watching")
    parser.add_argument("--logs", type=Path, help="keep the Airflow processes' logs in this folder")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    started = time.monotonic()
    lines = ["| measurement | result |", "|---|---|"]
    cluster = embedded_cluster()
    cluster.start()
    try:
        about = header(cluster)
    finally:
        cluster.destroy()
    watching_cost(plan, lines)
    if not args.cost_only:
        latency_and_storm(plan, lines, args.logs)
    print()
    print("\n".join(about))
    print()
    print("\n".join(lines))
    print(f"\nTotal wall time: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
