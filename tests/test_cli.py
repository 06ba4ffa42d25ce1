"""The ``airflow-matview`` console script: validate, check and discover, against a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from airflow_matview.config import load_config
from devtools.scenario import create_reference_scenario
from tests.conftest import REPO

if TYPE_CHECKING:
    import psycopg

    from tests.conftest import Database

CLI = Path(sys.executable).parent / "airflow-matview"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, env=os.environ, timeout=120)


def test_validate_lists_the_dags_it_would_build() -> None:
    done = cli("validate", str(REPO / "dags" / "matviews.yaml"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith("matviews.yaml: OK, 1 DAG(s)")
    assert lines[1].split() == ["DAG", "ID", "VIEW", "SCHEDULE", "AFTER", "CONNECTION"]
    assert lines[2].split() == [
        "matview.public.polls_user_matt_view",
        "public.polls_user_matt_view",
        "@daily",
        "-",
        "postgres_default",
    ]


def test_validate_reports_every_problem_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("views:\n  - name: public.a\n    schedule: often\n  - name: b\n    retry_delay: soon\n")
    done = cli("validate", str(bad))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"Invalid matview config {bad}: 3 problem(s):",
        "  - views[0] (public.a): schedule: 'often' is not a cron expression or preset; use 5 cron fields such as "
        "'*/5 * * * *', one of @once, @continuous, @hourly, @daily, @weekly, @monthly, @quarterly, @yearly, or null "
        "for manual runs only",
        "  - views[1] (b): retry_delay: 'soon' is not a duration; use 500ms, 30s, 5m, 1h, 1d or a number of seconds",
        "  - views[1] (b): name: 'b' has no schema; write schema.name, e.g. public.b",
    ]


def write_config(tmp_path: Path, names: list[str]) -> Path:
    path = tmp_path / "matviews.yaml"
    path.write_text(yaml.safe_dump({"views": [{"name": name} for name in names]}))
    return path


def test_check_reports_missing_index_missing_view_and_ownership(
    pg: psycopg.Connection, postgres_default: Database, tmp_path: Path
) -> None:
    create_reference_scenario(pg)
    pg.execute("CREATE MATERIALIZED VIEW public.no_index AS SELECT * FROM polls_user")
    config = write_config(tmp_path, ["public.polls_user_matt_view", "public.no_index", "public.ghost"])

    done = cli("check", str(config))

    assert done.returncode == 1
    out = done.stdout
    assert "OK      public.polls_user_matt_view\n        refresh: concurrently (unique index" in out
    assert "role postgres owns the view" in out
    assert (
        "OK      public.no_index\n        refresh: blocking (plain refresh (blocks readers) because it has no " in out
    )
    assert "CREATE UNIQUE INDEX ON public.no_index (<key columns>)" in out
    assert "PROBLEM public.ghost\n        Materialized view public.ghost does not exist" in out
    assert out.splitlines()[-1] == "2 of 3 view(s) can be refreshed as configured."


def test_check_reports_a_role_that_does_not_own_the_view(pg: psycopg.Connection, tmp_path: Path) -> None:
    create_reference_scenario(pg)
    pg.execute("DROP ROLE IF EXISTS matview_reader")
    pg.execute("CREATE ROLE matview_reader LOGIN")
    try:
        pg.execute("GRANT SELECT ON polls_user_matt_view TO matview_reader")
        dsn = pg.info.dsn.replace("user=postgres", "user=matview_reader")
        done = cli("check", str(write_config(tmp_path, ["public.polls_user_matt_view"])), "--dsn", dsn)
    finally:
        pg.execute("DROP OWNED BY matview_reader")
        pg.execute("DROP ROLE matview_reader")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "PROBLEM public.polls_user_matt_view" in done.stdout
    assert "permission: role matview_reader may not refresh it: only the owner (postgres) may" in done.stdout
    assert "GRANT MAINTAIN ON public.polls_user_matt_view TO matview_reader" in done.stdout


def test_discover_writes_a_valid_config_in_dependency_order(
    pg: psycopg.Connection, postgres_default: Database, tmp_path: Path
) -> None:
    create_reference_scenario(pg)
    pg.execute("CREATE SCHEMA reporting")
    # z_rollup reads polls_user_matt_view directly; a_summary reads z_rollup through a plain view:
    # alphabetical order would put them the wrong way round.
    pg.execute("CREATE MATERIALIZED VIEW reporting.z_rollup AS SELECT count(*) AS n FROM polls_user_matt_view")
    pg.execute("CREATE VIEW reporting.rollup_view AS SELECT n FROM reporting.z_rollup")
    pg.execute("CREATE MATERIALIZED VIEW reporting.a_summary AS SELECT n * 2 AS twice FROM reporting.rollup_view")
    pg.execute('CREATE MATERIALIZED VIEW reporting."Odd Name" AS SELECT 1 AS one')

    done = cli("discover", "--conn-id", "postgres_default")

    assert done.returncode == 0, done.stderr
    generated = tmp_path / "discovered.yaml"
    generated.write_text(done.stdout)
    config = load_config(generated)
    order = [view.name for view in config.views]
    assert sorted(order) == sorted(
        ['reporting."Odd Name"', "public.polls_user_matt_view", "reporting.z_rollup", "reporting.a_summary"]
    )
    assert order.index("public.polls_user_matt_view") < order.index("reporting.z_rollup")
    assert order.index("reporting.z_rollup") < order.index("reporting.a_summary")
    after = {view.name: view.after for view in config.views}
    assert after["reporting.z_rollup"] == ["public.polls_user_matt_view"]
    assert after["reporting.a_summary"] == ["reporting.z_rollup"]
    assert after["public.polls_user_matt_view"] == []

    only_reporting = cli("discover", "--conn-id", "postgres_default", "--schema", "reporting")
    names = [view["name"] for view in yaml.safe_load(only_reporting.stdout)["views"]]
    assert "public.polls_user_matt_view" not in names
    assert len(names) == 3
