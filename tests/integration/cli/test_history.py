"""``airflow-matview history init`` and ``check``'s history line against real servers: the table and the view beside
it created, the printed GRANTs enough for a reporting role to read it, a missing table or privilege in one line."""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg
import pytest
import yaml

from devtools.harness.console_script import cli
from devtools.harness.scenario import create_reference_scenario

if TYPE_CHECKING:
    from pathlib import Path

    from devtools.harness.databases import Database


def _config(tmp_path: Path, **keys: object) -> Path:
    path = tmp_path / "matviews.yaml"
    views = [{"name": "public.polls_user_matt_view"}]
    path.write_text(yaml.safe_dump({"defaults": {"history": "ops.matview_history", **keys}, "views": views}))
    return path


@pytest.mark.one_server  # the SQL it runs is the same on every major; test_history.py in database/ runs it on each
def test_init_creates_the_table_and_prints_grants_a_reporting_role_can_use(
    pg: psycopg.Connection, postgres_default: Database, tmp_path: Path
) -> None:
    create_reference_scenario(pg)
    reporter = f"reporter_{postgres_default.name}"
    pg.execute(f'CREATE ROLE "{reporter}" LOGIN')
    try:
        config = _config(tmp_path)
        done = cli("history", "init", str(config), "--reporting-role", reporter)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == "OK      ops.matview_history and ops.matview_history_latest (connection 'postgres_default')"
        grants = [line.strip() for line in lines if line.strip().startswith("GRANT")]
        assert grants[-1] == f'GRANT SELECT ON "ops"."matview_history", "ops"."matview_history_latest" TO "{reporter}";'
        assert cli("history", "init", str(config), "--reporting-role", reporter).returncode == 0  # idempotent
        for grant in grants:
            pg.execute(grant)
        pg.execute(
            "INSERT INTO ops.matview_history (view, outcome, started, finished) "
            "VALUES ('public.polls_user_matt_view', 'success', now(), now())"
        )
        with psycopg.connect(pg.info.dsn.replace("user=postgres", f"user={reporter}")) as conn:
            found = conn.execute("SELECT view, last_outcome FROM ops.matview_history_latest").fetchall()
        assert found == [("public.polls_user_matt_view", "success")]
    finally:
        pg.execute(f'DROP OWNED BY "{reporter}"')
        pg.execute(f'DROP ROLE "{reporter}"')


def test_check_reports_a_missing_history_table_then_a_missing_privilege(
    pg: psycopg.Connection, postgres_default: Database, tmp_path: Path
) -> None:
    create_reference_scenario(pg)
    config = _config(tmp_path, history_retention="30d")
    done = cli("check", str(config))
    assert done.returncode == 1
    assert (
        "        history: history table ops.matview_history does not exist: run `airflow-matview history init`\n"
        in done.stdout
    )
    assert cli("history", "init", str(config)).returncode == 0
    done = cli("check", str(config))
    assert done.returncode == 0, done.stdout
    assert "        history: recorded in ops.matview_history\n" in done.stdout
    pg.execute("ALTER TABLE ops.matview_history RENAME TO matview_history_old")
    refresher = f"refresher_{postgres_default.name}"
    pg.execute(f'CREATE ROLE "{refresher}" LOGIN')
    try:
        pg.execute("CREATE TABLE ops.matview_history (LIKE ops.matview_history_old)")
        pg.execute(f'GRANT USAGE ON SCHEMA ops TO "{refresher}"')
        pg.execute(f'GRANT INSERT ON ops.matview_history TO "{refresher}"')
        pg.execute(f'ALTER MATERIALIZED VIEW polls_user_matt_view OWNER TO "{refresher}"')
        dsn = pg.info.dsn.replace("user=postgres", f"user={refresher}")
        done = cli("check", str(config), "--dsn", dsn)
        assert done.returncode == 1
        assert (
            "        history: the role may not DELETE on history table ops.matview_history: "
            "GRANT DELETE ON ops.matview_history\n" in done.stdout
        )
    finally:
        pg.execute(f'DROP OWNED BY "{refresher}"')
        pg.execute(f'DROP ROLE "{refresher}"')
