"""Measure skip_if_unchanged's blind window after an ETL commit from a session that stays open.

Each trial: an ETL session commits an INSERT (published at once: its first report), a refresh records the
fingerprint, the same session at once commits another INSERT (within a second of its last report, so PostgreSQL
holds its counters back until it has been idle for PGSTAT_IDLE_INTERVAL) and stays open; then the skip check runs.
A skip there is wrong: the view misses the second row. Run with and without the wait for unpublished statistics
(without = the behaviour before it), on a throwaway PostgreSQL 16 from the pgserver wheel::

    .venv/bin/python -m devtools.benchmarks.skip_window --trials 20
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import TYPE_CHECKING
from unittest import mock

import psycopg

from airflow_matview.database import refresh
from airflow_matview.database.identifiers import QualifiedName
from airflow_matview.database.refresh import refresh_materialized_view
from airflow_matview.database.refresh_settings import RefreshSettings
from airflow_matview.version_compat import AirflowSkipException
from devtools.harness.pgcluster import embedded_cluster

if TYPE_CHECKING:
    from airflow_matview.database.steps import Steps

VIEW = QualifiedName("public", "totals")


def counted(conn: psycopg.Connection) -> int:
    conn.execute("SELECT pg_catalog.pg_stat_clear_snapshot()")
    row = conn.execute("SELECT pg_catalog.pg_stat_get_tuples_inserted('public.facts'::regclass)").fetchone()
    assert row is not None
    return int(row[0])


def trial(dsn: str, conn: psycopg.Connection, key: int, measure_delay: bool) -> tuple[bool, float, float | None]:
    """One trial: (wrongly skipped, seconds the skip check took, seconds until the counters showed the commit)."""
    before = counted(conn)
    with psycopg.connect(dsn, autocommit=True, application_name="etl") as etl:
        etl.execute("INSERT INTO facts VALUES (%s)", [key])
        while counted(conn) < before + 1:  # the first report of a session is immediate; wait for it all the same
            time.sleep(0.01)
        recorded = refresh_materialized_view(conn, VIEW, RefreshSettings(skip_if_unchanged=True)).fingerprint
        etl.execute("INSERT INTO facts VALUES (%s)", [key + 1])
        committed = time.monotonic()
        settings = RefreshSettings(skip_if_unchanged=True, previous_fingerprint=recorded)
        try:
            refresh_materialized_view(conn, VIEW, settings)
            skipped = False
        except AirflowSkipException:
            skipped = True
        check = time.monotonic() - committed
        delay = None
        if measure_delay:
            while counted(conn) < before + 2:
                time.sleep(0.01)
            delay = time.monotonic() - committed
    return skipped, check, delay


def none_unpublished() -> Steps[tuple[float, list[str]]]:
    """The steps of ``unpublished_statistics`` when no session went idle: nothing to wait for."""
    yield from ()
    return 0.0, []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    cluster = embedded_cluster()
    cluster.start()
    try:
        dsn = cluster.dsn()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE facts (id int PRIMARY KEY)")
            conn.execute("CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS n FROM facts")
            version = conn.info.server_version
            key = 0
            for label, waits in (("without the wait (before)", False), ("with the wait (now)", True)):
                results = []
                for _ in range(args.trials):
                    key += 2
                    if waits:
                        results.append(trial(dsn, conn, key, measure_delay=False))
                    else:
                        with mock.patch.object(refresh.unpublished_statistics, "steps", none_unpublished):
                            results.append(trial(dsn, conn, key, measure_delay=True))
                wrong = sum(skipped for skipped, _, _ in results)
                checks = [check for _, check, _ in results]
                line = (
                    f"{label}: wrongly skipped {wrong}/{len(results)}; skip check took median "
                    f"{statistics.median(checks):.2f}s, max {max(checks):.2f}s"
                )
                delays = [delay for _, _, delay in results if delay is not None]
                if delays:
                    line += (
                        f"; counters published {statistics.median(delays):.2f}s (median), "
                        f"{min(delays):.2f}-{max(delays):.2f}s after the commit"
                    )
                print(line, flush=True)
            print(f"PostgreSQL {version // 10000}.{version % 100}, {args.trials} trials per mode")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
