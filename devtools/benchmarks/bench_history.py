"""What refresh history costs a refresh: the refresh core on an open connection, without history, with a history
row, and with a row and ``history_retention`` (a pruning pass after it), on a 10-row view. Run with
``python -m devtools.benchmarks.bench_history`` (about a minute).

The alternatives are interleaved within each repetition (rotating order); times are medians.
"""

from __future__ import annotations

import logging
import sys
import time

import psycopg

from devtools.benchmarks.bench_stats import interleaved, median, ms
from devtools.harness.pgcluster import PostgresCluster, available_bin_dirs

REPEATS = 400


def main() -> int:
    from airflow_matview.database import history
    from airflow_matview.database.identifiers import parse_qualified_name
    from airflow_matview.database.refresh import refresh_materialized_view
    from airflow_matview.database.refresh_settings import RefreshSettings

    logging.getLogger("airflow_matview").setLevel(logging.WARNING)  # one line per refresh otherwise
    bin_dirs = available_bin_dirs()
    label = next(label for label in bin_dirs if label.endswith("pgserver"))
    cluster = PostgresCluster(bin_dirs[label], settings={"autovacuum": "off"})
    try:
        cluster.start()
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id integer PRIMARY KEY, v integer)")
            conn.execute("INSERT INTO t SELECT g, g FROM generate_series(1, 10) g")
            conn.execute("CREATE MATERIALIZED VIEW tiny_mv AS SELECT * FROM t")
            conn.execute("CREATE UNIQUE INDEX ON tiny_mv (id)")
            conn.execute("CREATE SCHEMA ops")
            for statement in history.create_statements(parse_qualified_name("ops.matview_history")):
                conn.execute(statement)
            view = parse_qualified_name("public.tiny_mv")
            plain = RefreshSettings(concurrently=False)
            row = RefreshSettings(concurrently=False, history=history.HistoryTarget("ops.matview_history"))
            pruned = RefreshSettings(
                concurrently=False, history=history.HistoryTarget("ops.matview_history", retention_seconds=86400)
            )

            def timed(settings: RefreshSettings) -> float:
                started = time.perf_counter()
                refresh_materialized_view(conn, view, settings)
                return time.perf_counter() - started

            samples = interleaved(
                {
                    "no history": lambda: timed(plain),
                    "history row": lambda: timed(row),
                    "history row + retention": lambda: timed(pruned),
                },
                REPEATS,
            )
            rows = conn.execute("SELECT count(*) FROM ops.matview_history").fetchone()
            version = conn.info.server_version
        base = median(samples["no history"])
        print(f"PostgreSQL {version // 10000}.{version % 100} ({label}), {REPEATS} refreshes each, plain, 10 rows")
        for name, values in samples.items():
            print(f"{name}: median {ms(median(values))} (+{ms(median(values) - base)})")
        print(f"history rows written: {rows[0] if rows else 0}")
        return 0
    finally:
        cluster.destroy()


if __name__ == "__main__":
    sys.exit(main())
