"""Benchmarks: the operator against the raw REFRESH and against what users write instead. Run with ``make bench``.

Every figure is measured side by side in one run: the alternatives of a measurement are interleaved within each
repetition (in rotating order), each time is a median over the repetitions, and each ratio (or time added) is
between the medians shown next to it. Nothing is left running: the PostgreSQL server and the temporary
AIRFLOW_HOME are removed at the end.

``--quick`` is a smoke run (about a minute): fewer repetitions, a 100,000-row "large" table, fewer views.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import psycopg

from devtools.benchmarks.bench_parse import bench_parse
from devtools.benchmarks.bench_stats import (
    FULL,
    QUICK,
    Line,
    Plan,
    Report,
    added,
    interleaved,
    median,
    ms,
    percentile,
    ratio_of_medians,
)
from devtools.harness.pgcluster import ClusterUnavailable, PostgresCluster, available_bin_dirs

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.sdk import BaseOperator

REPO = Path(__file__).resolve().parents[2]
TINY, LARGE = "public.tiny_mv", "public.large_mv"


def run_task(operator: BaseOperator) -> object:
    """``operator.execute`` as Airflow's task runner calls it (with the sentinel that marks a real run)."""
    from airflow.sdk.bases.operator import ExecutorSafeguard

    sentinel = {f"{type(operator).__name__}__sentinel": ExecutorSafeguard.sentinel_value}
    return operator.execute({}, **sentinel)


def checkpoint(dsn: str) -> None:
    """Write out the pages the last refresh dirtied, so that the next measurement does not pay for them."""
    execute_on_fresh_connection(dsn, "CHECKPOINT")


def execute_on_fresh_connection(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement)


def timer(action: Callable[[], object]) -> Callable[[], float]:
    return partial(timed, action)


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------------- setup


def header(cluster: PostgresCluster) -> list[str]:
    import airflow

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    pg_version = row[0] if row else "?"
    return [
        f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"machine: {socket.gethostname()}, {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}",
        f"software: PostgreSQL {pg_version} (pgserver wheel, fsync=off), Apache Airflow {airflow.__version__}, "
        f"psycopg {psycopg.__version__}, Python {platform.python_version()}",
    ]


def create_views(dsn: str, large_rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE tiny_src (id integer PRIMARY KEY, val integer NOT NULL)")
        conn.execute("INSERT INTO tiny_src SELECT g, g * 7 FROM generate_series(1, 10) g")
        conn.execute("CREATE MATERIALIZED VIEW tiny_mv AS SELECT id, val FROM tiny_src")
        conn.execute("CREATE UNIQUE INDEX tiny_mv_id ON tiny_mv (id)")
        conn.execute("CREATE TABLE large_src (id integer PRIMARY KEY, grp integer NOT NULL, val integer NOT NULL)")
        conn.execute(
            "INSERT INTO large_src SELECT g, g %% 1000, (g::bigint * 7919) %% 100003 FROM generate_series(1, %s) g",
            [large_rows],
        )
        conn.execute("CREATE MATERIALIZED VIEW large_mv AS SELECT id, grp, val FROM large_src")
        conn.execute("CREATE UNIQUE INDEX large_mv_id ON large_mv (id)")
        conn.execute("VACUUM ANALYZE large_src")
        conn.execute("VACUUM ANALYZE large_mv")
        conn.execute("CHECKPOINT")


# ---------------------------------------------------------------------------------------------------- 1 and 2


def refresh_sql(view: str, concurrently: bool) -> str:
    return f"REFRESH MATERIALIZED VIEW {'CONCURRENTLY ' if concurrently else ''}{view}"


def bench_refresh(report: Report, plan: Plan, dsn: str) -> None:
    from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator

    from airflow_matview import RefreshMaterializedViewOperator

    open_conn = psycopg.connect(dsn, autocommit=True)
    try:
        cases = [
            ("tiny view (10 rows)", TINY, False, plan.tiny_repeats),
            ("tiny view (10 rows)", TINY, True, plan.tiny_repeats),
            (f"large view ({plan.large_rows:,} rows)", LARGE, False, plan.large_repeats),
            (f"large view ({plan.large_rows:,} rows)", LARGE, True, plan.large_repeats),
        ]
        for label, view, concurrently, repeats in cases:
            statement = refresh_sql(view, concurrently)
            operator = RefreshMaterializedViewOperator(task_id="refresh", view=view, concurrently=concurrently)
            sql_operator = SQLExecuteQueryOperator(task_id="refresh_sql", conn_id="postgres_default", sql=statement)

            samples = interleaved(
                {
                    "raw_open": timer(partial(open_conn.execute, statement)),
                    "raw_fresh": timer(partial(execute_on_fresh_connection, dsn, statement)),
                    "operator": timer(partial(run_task, operator)),
                    "sql_operator": timer(partial(run_task, sql_operator)),
                },
                repeats,
                settle=partial(checkpoint, dsn) if view == LARGE else None,
            )
            mode = "CONCURRENTLY" if concurrently else "plain"
            report_refresh(report, f"{label}, {mode}", samples, large=view == LARGE)
        bench_triggerer(report, plan, dsn, open_conn)
        for view, label, repeats in ((TINY, "tiny view", plan.tiny_repeats), (LARGE, "large view", plan.large_repeats)):
            phases = profile_operator(view, repeats)
            total = phases.pop("total")
            report.add(
                Line(
                    "1",
                    f"profile of one operator run, {label}, plain (medians): "
                    + ", ".join(f"{name} {ms(seconds)}" for name, seconds in phases.items()),
                    ms(total),
                    "",
                    "",
                )
            )
        catalog_reads = [catalog_reads_on_fresh_connection(dsn, TINY) for _ in range(plan.tiny_repeats)]
        report.add(
            Line(
                "1",
                "of which: the catalog reads of one run (resolve, permission, then sources + unique indexes + "
                "row counters in one query), on a fresh connection",
                ms(median(catalog_reads)),
                "",
                "",
            )
        )
    finally:
        open_conn.close()


def bench_triggerer(report: Report, plan: Plan, dsn: str, open_conn: psycopg.Connection) -> None:
    """A tiny refresh as the triggerer runs it (deferred or ``start_from_trigger``): the same steps on a connection
    of the triggerer's pool, in an event loop, against the raw REFRESH on an open connection."""
    import asyncio

    from airflow_matview.database.refresh_settings import RefreshSettings
    from airflow_matview.triggers.connection_pool import close_pools
    from airflow_matview.triggers.deferred_refresh import RefreshTrigger

    loop = asyncio.new_event_loop()
    trigger = RefreshTrigger(TINY, "postgres_default", {})
    try:
        for concurrently in (False, True):
            settings = RefreshSettings(concurrently=concurrently, application_name="airflow-matview bench")

            def in_triggerer(settings: RefreshSettings = settings) -> None:
                outcome = loop.run_until_complete(trigger.refresh(TINY, "postgres_default", settings))
                assert outcome["status"] == "success", outcome

            samples = interleaved(
                {
                    "raw_open": timer(partial(open_conn.execute, refresh_sql(TINY, concurrently))),
                    "triggerer": timer(in_triggerer),
                },
                plan.tiny_repeats,
            )
            mode = "CONCURRENTLY" if concurrently else "plain"
            extra = added(samples["triggerer"], samples["raw_open"])
            report.add(
                Line(
                    "1",
                    f"tiny view (10 rows), {mode}: the refresh in the triggerer (pooled connection) vs raw REFRESH on "
                    "an open connection",
                    ms(median(samples["triggerer"])),
                    ms(median(samples["raw_open"])),
                    compare(samples["triggerer"], samples["raw_open"]),
                    "<= 3 ms added",
                    "met" if extra <= 0.003 else "MISSED",
                )
            )
    finally:
        loop.run_until_complete(close_pools())
        loop.close()


PHASES = {  # a piece of each statement the operator sends, and the phase it belongs to (first match wins)
    "LEFT JOIN LATERAL": "session setup + resolve view + permission + refresh lock (one statement)",
    "WITH RECURSIVE": "sources+indexes",
    "advisory": "waiting for the refresh lock",
    "REFRESH": "REFRESH",
    "reltuples": "row count",
}


def profile_operator(view: str, repeats: int) -> dict[str, float]:
    """Median seconds per phase of a plain refresh by the operator: the connection, each statement, the rest."""
    import airflow_matview.connections as connection_module
    from airflow_matview import RefreshMaterializedViewOperator

    operator = RefreshMaterializedViewOperator(task_id="refresh", view=view, concurrently=False)
    runs: list[dict[str, float]] = []
    run: dict[str, float] = {}
    original_execute = psycopg.Connection.execute
    original_connect = connection_module.connect

    def execute(conn: psycopg.Connection, query: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original_execute(conn, query, *args, **kwargs)
        finally:
            text = query if isinstance(query, str) else query.as_string(conn)
            phase = next((name for piece, name in PHASES.items() if piece in text), "other statements")
            run[phase] = run.get(phase, 0.0) + time.perf_counter() - started

    def connect(conn_id: str, purpose: str) -> psycopg.Connection:
        started = time.perf_counter()
        try:
            return original_connect(conn_id, purpose)
        finally:
            run["connect"] = time.perf_counter() - started

    with (
        mock.patch.object(psycopg.Connection, "execute", execute),
        mock.patch.object(connection_module, "connect", connect),
    ):
        for repetition in range(repeats + 1):
            run = {}
            started = time.perf_counter()
            run_task(operator)
            run["total"] = time.perf_counter() - started
            if repetition:  # the first run warms up
                runs.append(run)
    in_order = [
        "session setup + resolve view + permission + refresh lock (one statement)",
        "waiting for the refresh lock",
        "sources+indexes",
        "REFRESH",
        "row count",
    ]
    assert set(in_order) == set(PHASES.values())
    names = ["connect", *in_order]
    phases = {name: median([r.get(name, 0.0) for r in runs]) for name in names}
    phases["other (Python, BEGIN/COMMIT, close)"] = median(
        [r["total"] - sum(value for key, value in r.items() if key != "total") for r in runs]
    )
    phases["total"] = median([r["total"] for r in runs])
    return phases


def catalog_reads_on_fresh_connection(dsn: str, view: str) -> float:
    """What the operator reads from the catalog before a refresh, timed on a new session (as every task has)."""
    from airflow_matview.database import catalog
    from airflow_matview.database.identifiers import parse_qualified_name

    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        relation = catalog.find_relation(conn, parse_qualified_name(view))
        assert relation is not None
        catalog.refresh_permission(conn, relation.oid)
        catalog.refresh_facts(conn, relation.oid)
        seconds = time.perf_counter() - started
        conn.rollback()
    return seconds


def compare(ours: list[float], theirs: list[float]) -> str:
    return f"{ratio_of_medians(ours, theirs):.3f} ({added(ours, theirs) * 1000:+.1f} ms)"


# What the operator is compared with: the table's item number, how the row names it, and its samples' key.
ALTERNATIVES = (
    ("1", "raw REFRESH on an open connection", "raw_open"),
    ("1", "raw REFRESH on a fresh connection", "raw_fresh"),
    ("2", "SQLExecuteQueryOperator", "sql_operator"),
)


def report_refresh(report: Report, case: str, samples: dict[str, list[float]], large: bool) -> None:
    ours = samples["operator"]
    med = {name: median(values) for name, values in samples.items()}
    extra = added(ours, samples["raw_open"])
    ratio = ratio_of_medians(ours, samples["raw_open"])
    if large:
        target, met = "ratio <= 1.02", ratio <= 1.02
    else:
        target, met = "< 5 ms added", extra < 0.005
    for number, against, key in ALTERNATIVES:
        verdict = (target, "met" if met else "MISSED") if key == "raw_open" else ("", "")
        report.add(
            Line(
                number,
                f"{case}: operator vs {against}",
                ms(med["operator"]),
                ms(med[key]),
                compare(ours, samples[key]),
                *verdict,
            )
        )


# ---------------------------------------------------------------------------------------------------- 4 readers


def bench_readers(report: Report, plan: Plan, dsn: str) -> None:
    from airflow_matview import RefreshMaterializedViewOperator

    results: dict[bool, list[float]] = {}
    for concurrently in (False, True):
        operator = RefreshMaterializedViewOperator(task_id="refresh", view=LARGE, concurrently=concurrently)
        during: list[float] = []
        for _ in range(plan.reader_repeats):
            reads: list[tuple[float, float]] = []
            stop = threading.Event()
            ready = threading.Event()
            reader = threading.Thread(target=read_stream, args=(dsn, plan.large_rows, stop, ready, reads))
            reader.start()
            ready.wait()
            checkpoint(dsn)
            time.sleep(0.3)
            started = time.perf_counter()
            run_task(operator)
            finished = time.perf_counter()
            time.sleep(0.3)
            stop.set()
            reader.join()
            during.extend(latency for due, latency in reads if started <= due < finished)
        results[concurrently] = during
    plain, concurrent = results[False], results[True]
    for concurrently, latencies in results.items():
        mode = "CONCURRENTLY" if concurrently else "plain"
        report.add(
            Line(
                "4",
                f"readers (a SELECT by id every {READ_INTERVAL * 1000:g} ms) during a {mode} refresh of the large "
                f"view: p50 / p99 / max ({len(latencies):,} reads)",
                f"{ms(percentile(latencies, 0.5))} / {ms(percentile(latencies, 0.99))} / {ms(max(latencies))}",
                "",
                "",
            )
        )
    report.add(
        Line(
            "4",
            "reader p99: CONCURRENTLY vs plain refresh",
            ms(percentile(concurrent, 0.99)),
            ms(percentile(plain, 0.99)),
            f"{percentile(concurrent, 0.99) / percentile(plain, 0.99):.4f}",
        )
    )


READ_INTERVAL = 0.002  # the readers' schedule: one read every 2 ms


def read_stream(
    dsn: str, rows: int, stop: threading.Event, ready: threading.Event, reads: list[tuple[float, float]]
) -> None:
    """Cheap reads of the view on their own connection, one every READ_INTERVAL, until told to stop.

    Records (due time, latency from the due time) of each: a read that falls due while an earlier one is blocked
    waits too, as it would for a client that does not stop sending requests when the database is slow.
    """
    rng = random.Random(7)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT 1")
        ready.set()
        due = time.perf_counter()
        while not stop.is_set():
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            conn.execute("SELECT val FROM public.large_mv WHERE id = %s", [rng.randint(1, rows)]).fetchone()
            reads.append((due, time.perf_counter() - due))
            due += READ_INTERVAL


# ---------------------------------------------------------------------------------------------------- 5 skip


def bench_skip(report: Report, plan: Plan, dsn: str) -> None:
    from airflow_matview.database.identifiers import parse_qualified_name
    from airflow_matview.database.refresh import RefreshSettings, refresh_materialized_view
    from airflow_matview.version_compat import AirflowSkipException

    view = parse_qualified_name(LARGE)
    label = "benchmark connection"
    fingerprint: dict[str, Any] | None = None

    def relfilenode(conn: psycopg.Connection) -> int:
        row = conn.execute("SELECT relfilenode FROM pg_class WHERE oid = 'public.large_mv'::regclass").fetchone()
        assert row is not None
        return int(row[0])

    def full() -> float:
        nonlocal fingerprint
        with psycopg.connect(dsn) as conn:
            before = relfilenode(conn)
            conn.commit()
            started = time.perf_counter()
            # skip_if_unchanged with nothing recorded: a full refresh that also records the sources' signals
            settings = RefreshSettings(concurrently=False, skip_if_unchanged=True)
            result = refresh_materialized_view(conn, view, settings, label)
            seconds = time.perf_counter() - started
            assert relfilenode(conn) != before, "the full refresh did not rewrite the view"
            conn.commit()
        fingerprint = result.fingerprint
        return seconds

    def skipped() -> float:
        settings = RefreshSettings(concurrently=False, skip_if_unchanged=True, previous_fingerprint=fingerprint)
        with psycopg.connect(dsn) as conn:
            before = relfilenode(conn)
            conn.commit()
            started = time.perf_counter()
            try:
                refresh_materialized_view(conn, view, settings, label)
            except AirflowSkipException:
                seconds = time.perf_counter() - started
            else:
                raise AssertionError("the unchanged run was not skipped")
            assert relfilenode(conn) == before, "the skipped run modified the view"
            conn.commit()
        return seconds

    # Table statistics reach the counters the fingerprint reads at most once a second: let the load settle.
    for _ in range(20):
        full()
        first = fingerprint
        time.sleep(1.1)
        full()
        if fingerprint == first:
            break
    else:
        raise RuntimeError("the sources' statistics never settled")
    samples = interleaved({"skip": skipped, "full": full}, plan.skip_repeats, warmup=0, settle=partial(checkpoint, dsn))
    ratio = ratio_of_medians(samples["skip"], samples["full"])
    report.add(
        Line(
            "5",
            "unchanged run (skip_if_unchanged, skipped) vs full plain refresh of the large view",
            ms(median(samples["skip"])),
            ms(median(samples["full"])),
            f"{ratio:.4f}",
            "view not modified",
            "met",
        )
    )


# ---------------------------------------------------------------------------------------------------- main


def print_table(title: list[str], report: Report) -> None:
    print()
    for text in title:
        print(text)
    print()
    print("| # | measurement | ours | alternative | ratio (added) | target | |")
    print("|---|---|---:|---:|---:|---|---|")
    for line in report.lines:
        print(
            f"| {line.number} | {line.measurement} | {line.ours} | {line.theirs} | {line.ratio} | {line.target} "
            f"| {line.verdict} |"
        )
    for note in report.notes:
        print(note)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smoke run of about a minute")
    parser.add_argument(
        "--only", nargs="*", choices=["refresh", "parse", "readers", "skip"], help="run only these sections"
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    sections = set(args.only or ["refresh", "parse", "readers", "skip"])
    wall = time.perf_counter()

    bin_dirs = available_bin_dirs()
    label = next(label for label in bin_dirs if label.endswith("pgserver"))
    # No autovacuum: its ANALYZE of the freshly refreshed view would land on random measurements.
    try:
        cluster = PostgresCluster(bin_dirs[label], settings={"autovacuum": "off"})
    except ClusterUnavailable as error:
        print(f"Cannot start PostgreSQL: {error}", file=sys.stderr)
        return 2
    airflow_home = Path(tempfile.mkdtemp(prefix="matview-bench-airflow-"))
    try:
        cluster.start()
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench")
        dsn = cluster.dsn("bench")
        env = {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "True",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "AIRFLOW_CONN_POSTGRES_DEFAULT": cluster.uri("bench"),
        }
        os.environ.update(env)  # before Airflow is first imported, which reads its configuration then
        title = [
            "airflow-matview benchmarks (`make bench`" + (" --quick" if args.quick else "") + ")",
            *header(cluster),
        ]
        for line in title:
            print(line, flush=True)
        report = Report()
        print(f"creating the views ({plan.large_rows:,} rows) ...", flush=True)
        create_views(dsn, plan.large_rows)
        if "refresh" in sections:
            print("1-2. refresh: operator vs raw REFRESH vs SQLExecuteQueryOperator ...", flush=True)
            bench_refresh(report, plan, dsn)
        if "parse" in sections:
            print("3. parse time ...", flush=True)
            bench_parse(report, plan, {**os.environ, **env}, airflow_home)
        if "readers" in sections:
            print("4. readers during a refresh ...", flush=True)
            bench_readers(report, plan, dsn)
        if "skip" in sections:
            print("5. skip when unchanged ...", flush=True)
            bench_skip(report, plan, dsn)
        report.notes.append(
            "\nAlternatives interleaved in rotating order within each repetition; times are medians, ratios and "
            f"added times are between those medians (repetitions: {plan.tiny_repeats} tiny, {plan.large_repeats} "
            f"large, {plan.parse_repeats} parse ({plan.parse_repeats_largest} for {max(plan.view_counts):,} views), "
            f"{plan.reader_repeats} reader, {plan.skip_repeats} skip). "
            f"Total wall time: {time.perf_counter() - wall:.0f} s."
        )
        print_table(title, report)
        return 0
    finally:
        cluster.destroy()
        shutil.rmtree(airflow_home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
