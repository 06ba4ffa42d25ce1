"""``airflow-matview check`` reports views that validate but cannot work: an on_change-only view whose sources
cannot be watched, a target_lag shorter than the view's last recorded refresh (and says how a target is kept), a
read-only connection (a standby, default_transaction_read_only), a deferrable view in a pool that does not count
deferred tasks. A refresh on a read-only connection says so and is retried."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import yaml
from psycopg import sql

from airflow_matview.database.identifiers import QualifiedName
from airflow_matview.database.refresh import refresh_materialized_view
from airflow_matview.exceptions import MatviewRefreshError
from devtools.harness.paths import AIRFLOW_BIN
from devtools.harness.scenario import create_reference_scenario
from devtools.harness.triggerer_jobs import live_triggerer

if TYPE_CHECKING:
    from collections.abc import Iterator

    from devtools.harness.databases import Database
    from devtools.harness.pgcluster import PostgresCluster

CLI = Path(sys.executable).parent / "airflow-matview"
VIEW = "public.polls_user_matt_view"


def check(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "check", str(config), *args], capture_output=True, text=True, env=os.environ, timeout=120
    )


def write_config(tmp_path: Path, *views: dict[str, Any]) -> Path:
    path = tmp_path / "matviews.yaml"
    path.write_text(yaml.safe_dump({"views": list(views)}))
    return path


def _report(done: subprocess.CompletedProcess[str], view: str) -> str:
    """The lines ``check`` printed about ``view``."""
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith(f" {view}"))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return "\n".join(lines[start:end])


UNWATCHABLE = {  # what the view's query needs, the query, and why its sources cannot be watched
    "now": ("SELECT 1", "SELECT now() AS at", "it reads no table whose changes could be seen"),
    "sequence": (
        "CREATE SEQUENCE public.ticket",
        "SELECT last_value FROM public.ticket",
        "ticket cannot be tracked (a foreign table or a sequence)",
    ),
    "foreign_table": (
        "CREATE FOREIGN DATA WRAPPER nowhere; CREATE SERVER remote FOREIGN DATA WRAPPER nowhere; "
        "CREATE FOREIGN TABLE public.remote_rows (id int) SERVER remote",
        "SELECT id FROM public.remote_rows",
        "remote_rows cannot be tracked (a foreign table or a sequence)",
    ),
    "function": (
        "CREATE FUNCTION public.user_count() RETURNS bigint LANGUAGE sql STABLE "
        "AS 'SELECT count(*) FROM public.polls_user'",
        "SELECT public.user_count() AS n",
        "it uses function user_count(), which may read tables the catalog does not show",
    ),
}


@pytest.mark.parametrize("kind", UNWATCHABLE)
def test_an_on_change_only_view_that_cannot_be_watched_is_a_problem(
    pg: psycopg.Connection, postgres_default: Database, airflow_db: Path, tmp_path: Path, kind: str
) -> None:
    create_reference_scenario(pg)
    setup, query, why = UNWATCHABLE[kind]
    pg.execute(setup)
    for name in ("clock", "clock_hourly", "clock_after"):
        pg.execute(f"CREATE MATERIALIZED VIEW public.{name} AS {query} WITH NO DATA")
    config = write_config(
        tmp_path,
        {"name": "public.clock", "on_change": True},
        {"name": "public.clock_hourly", "on_change": True, "schedule": "@hourly"},
        {"name": "public.clock_after", "on_change": True, "after": [VIEW]},
        {"name": VIEW, "on_change": True},
    )

    with live_triggerer():  # on_change needs one; that check is another test's
        done = check(config)

    assert done.returncode == 1, done.stdout + done.stderr
    never = _report(done, "public.clock")
    assert never.startswith("PROBLEM public.clock"), done.stdout
    assert (
        f"on_change: its sources cannot be watched ({why}), and it has no schedule and no after:, so it never "
        "refreshes; give it a schedule (e.g. schedule: '@hourly') or drop on_change"
    ) in never, never
    for other, when in (("public.clock_hourly", "on its schedule"), ("public.clock_after", "after its upstream views")):
        report = _report(done, other)
        assert report.startswith(f"OK      {other}"), report
        assert f"on_change: its sources cannot be watched ({why}); it refreshes {when} only" in report, report
    assert "on_change: watches public.polls_user" in _report(done, VIEW)
    assert done.stdout.splitlines()[-1] == "3 of 4 view(s) can be refreshed as configured."


READ_ONLY = {
    "database": (
        "ALTER DATABASE {database} SET default_transaction_read_only = on",
        "default_transaction_read_only is on (set for the database), so every transaction is read-only: "
        "ALTER DATABASE {database} SET default_transaction_read_only = off",
    ),
    "role_in_database": (
        "ALTER ROLE postgres IN DATABASE {database} SET default_transaction_read_only = on",
        "default_transaction_read_only is on (set for the database user), so every transaction is read-only: "
        "ALTER ROLE postgres IN DATABASE {database} SET default_transaction_read_only = off",
    ),
}


@pytest.mark.parametrize("where", READ_ONLY)
def test_a_read_only_connection_is_reported_and_its_refresh_retried(
    pg: psycopg.Connection, database: Database, tmp_path: Path, where: str
) -> None:
    create_reference_scenario(pg)
    statement, fix = READ_ONLY[where]
    pg.execute(sql.SQL(statement.replace("{database}", "{}")).format(sql.Identifier(database.name)))
    fix = fix.replace("{database}", database.name)

    done = check(write_config(tmp_path, {"name": VIEW}), "--dsn", database.dsn)

    assert done.returncode == 1, done.stdout + done.stderr
    assert f"PROBLEM {VIEW}" in done.stdout
    assert f"read-only: {fix}" in done.stdout, done.stdout
    with psycopg.connect(database.dsn) as conn, pytest.raises(MatviewRefreshError) as error:
        refresh_materialized_view(conn, QualifiedName("public", "polls_user_matt_view"))
    assert "cannot execute REFRESH MATERIALIZED VIEW in a read-only transaction: " + fix in str(error.value)
    assert "Airflow will retry" in str(error.value) and "Fix the view's query" not in str(error.value)


def test_read_only_connection_options_are_reported(pg: psycopg.Connection, database: Database, tmp_path: Path) -> None:
    create_reference_scenario(pg)
    dsn = f"{database.dsn} options='-c default_transaction_read_only=on'"
    done = check(write_config(tmp_path, {"name": VIEW}), "--dsn", dsn)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        "read-only: default_transaction_read_only is on (set for the client), so every transaction is read-only: "
        "remove default_transaction_read_only from the connection's options"
    ) in done.stdout


@pytest.fixture
def standby(pg_server: PostgresCluster, database: Database) -> Iterator[PostgresCluster]:
    """A hot standby of the test's server, with the test's database (set up before the fixture)."""
    with database.connect() as conn:
        create_reference_scenario(conn)
    replica = pg_server.standby()
    replica.start()
    try:
        yield replica
    finally:
        replica.destroy()


def test_a_standby_is_reported_and_its_refresh_retried(
    standby: PostgresCluster, database: Database, tmp_path: Path
) -> None:
    dsn = standby.dsn(database.name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)

    done = check(write_config(tmp_path, {"name": VIEW}), "--dsn", dsn)

    assert done.returncode == 1, done.stdout + done.stderr
    standby_line = (
        "the server is a read-only standby (pg_is_in_recovery() is true): point the connection at the primary"
    )
    assert f"read-only: {standby_line}" in done.stdout, done.stdout
    with psycopg.connect(dsn) as conn, pytest.raises(MatviewRefreshError) as error:
        refresh_materialized_view(conn, QualifiedName("public", "polls_user_matt_view"))
    assert standby_line in str(error.value) and "Airflow will retry" in str(error.value), str(error.value)


def _pool(name: str, slots: int, *, include_deferred: bool) -> None:
    args = [str(AIRFLOW_BIN), "pools", "set", name, str(slots), "matview refreshes"]
    done = subprocess.run(
        [*args, *(["--include-deferred"] if include_deferred else [])], capture_output=True, text=True, env=os.environ
    )
    assert done.returncode == 0, done.stderr


def test_a_deferrable_view_in_a_pool_without_include_deferred_is_a_problem(
    pg: psycopg.Connection, postgres_default: Database, airflow_db: Path, tmp_path: Path
) -> None:
    create_reference_scenario(pg)
    pg.execute("CREATE MATERIALIZED VIEW public.counted AS SELECT * FROM polls_user")
    pg.execute("CREATE MATERIALIZED VIEW public.not_deferred AS SELECT * FROM polls_user")
    _pool("matview_plain", 2, include_deferred=False)
    _pool("matview_counting", 2, include_deferred=True)
    config = write_config(
        tmp_path,
        {"name": VIEW, "deferrable": True, "pool": "matview_plain"},
        {"name": "public.counted", "deferrable": True, "pool": "matview_counting"},
        {"name": "public.not_deferred", "pool": "matview_plain"},
    )

    with live_triggerer():  # deferrable needs one; that check is another test's
        done = check(config)

    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.count("PROBLEM") == 1, done.stdout
    assert (
        "pool: 'matview_plain' does not count deferred tasks (include_deferred is off): while this deferrable "
        "refresh runs in the triggerer it holds no slot, so more than 2 refreshes can run at once; fix: "
        "airflow pools set matview_plain 2 'matview refreshes' --include-deferred (or tick Include Deferred "
        "in Admin -> Pools)"
    ) in done.stdout, done.stdout
    assert done.stdout.splitlines()[-1] == "2 of 3 view(s) can be refreshed as configured."


def test_check_says_how_a_target_is_kept_and_refuses_one_shorter_than_the_refresh(
    pg: psycopg.Connection, postgres_default: Database, airflow_db: Path, tmp_path: Path
) -> None:
    import json

    from airflow.models.variable import Variable

    from airflow_matview.refresh_task import RefreshRecord

    create_reference_scenario(pg)
    pg.execute("CREATE MATERIALIZED VIEW public.clock AS SELECT now() AS at WITH NO DATA")
    pg.execute("CREATE MATERIALIZED VIEW public.nightly AS SELECT * FROM polls_user")
    notify = [{"notifier": "airflow.providers.smtp.notifications.smtp.SmtpNotifier", "to": "ops@example.com"}]
    config = write_config(
        tmp_path,
        {"name": VIEW, "target_lag": "30s"},
        {"name": "public.clock", "target_lag": "2m"},
        {"name": "public.nightly", "schedule": "@daily", "max_staleness": "40s", "on_stale": notify},
    )
    slow = {"fingerprint": None, "signals_read_at": 1000.0, "committed_at": 1045.0}  # a 45 s refresh
    keys = [
        RefreshRecord("postgres_default", QualifiedName("public", name)).key
        for name in ("polls_user_matt_view", "nightly")
    ]
    for key in keys:
        Variable.set(key, json.dumps(slow))
    try:
        with live_triggerer():
            done = check(config)
    finally:
        for key in keys:
            Variable.delete(key)

    assert done.returncode == 1, done.stdout + done.stderr
    report = _report(done, VIEW)
    assert report.startswith(f"PROBLEM {VIEW}"), done.stdout
    assert "target_lag 30s: watches public.polls_user" in report, report
    assert (
        "target_lag: 30s is shorter than its last measured refresh (45s): no refresh can keep it within; lengthen "
        "target_lag or make the refresh faster"
    ) in report, report
    nightly = _report(done, "public.nightly")
    assert (
        "max_staleness: 40s is shorter than its last measured refresh (45s): no refresh can keep it within; lengthen "
        "max_staleness or make the refresh faster"
    ) in nightly, nightly
    clock = _report(done, "public.clock")
    assert clock.startswith("OK      public.clock"), clock
    assert (
        "target_lag 2m: its sources cannot be watched (it reads no table whose changes could be seen); it refreshes "
        "every 1m50s instead, and its lag is the age of its last refresh"
    ) in clock, clock
