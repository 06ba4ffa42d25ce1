"""What changed in PostgreSQL 17: the MAINTAIN privilege and the restricted search_path of REFRESH."""

from __future__ import annotations

import os
import subprocess
import uuid
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import yaml

from airflow_matview import RefreshMaterializedViewOperator
from airflow_matview.exceptions import MatviewSetupError
from devtools.harness.paths import CLI
from devtools.harness.scenario import add_new_users, create_reference_scenario

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from devtools.harness.databases import Database

VIEW = "public.polls_user_matt_view"


def check(config: Path, dsn: str) -> subprocess.CompletedProcess[str]:
    command = [str(CLI), "check", str(config), "--dsn", dsn]
    return subprocess.run(command, capture_output=True, text=True, env=os.environ, timeout=120)


def refresh(conn_id: str, view: str = VIEW) -> dict[str, Any]:
    return RefreshMaterializedViewOperator(task_id="refresh", view=view, postgres_conn_id=conn_id).execute({})  # type: ignore[arg-type]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "matviews.yaml"
    path.write_text(yaml.safe_dump({"views": [{"name": VIEW}, {"name": "public.user_orders"}]}))
    return path


@pytest.fixture
def role(pg: psycopg.Connection, database: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A login role that does not own the views, as connection ``refresher``; it may read them."""
    if pg.info.server_version < 170000:
        pytest.skip("MAINTAIN and pg_maintain are PostgreSQL 17+")
    name = f"refresher_{uuid.uuid4().hex[:8]}"
    create_reference_scenario(pg)
    pg.execute(f"CREATE ROLE {name} LOGIN")
    pg.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {name}")
    monkeypatch.setenv("AIRFLOW_CONN_REFRESHER", database.uri.replace("postgres@", f"{name}@", 1))
    yield name
    pg.execute(f"DROP OWNED BY {name}")
    pg.execute(f"DROP ROLE {name}")


@pytest.mark.parametrize(
    "grant", ["GRANT MAINTAIN ON public.polls_user_matt_view TO {role}", "GRANT pg_maintain TO {role}"]
)
def test_a_non_owner_with_maintain_is_told_so_and_refreshes(
    pg: psycopg.Connection, database: Database, config: Path, role: str, grant: str
) -> None:
    pg.execute(grant.format(role=role))
    done = check(config, database.dsn.replace("user=postgres", f"user={role}"))
    assert f"OK      {VIEW}\n        refresh: concurrently" in done.stdout, done.stdout + done.stderr
    assert f"permission: role {role} holds MAINTAIN on the view\n" in done.stdout
    add_new_users(pg)
    assert refresh("refresher")["mode"] == "concurrently"
    assert pg.execute(f"SELECT count(*) FROM {VIEW}").fetchone() == (7,)


def test_a_role_with_neither_is_refused_by_check_and_refresh(
    pg: psycopg.Connection, database: Database, config: Path, role: str
) -> None:
    done = check(config, database.dsn.replace("user=postgres", f"user={role}"))
    assert f"PROBLEM {VIEW}" in done.stdout, done.stdout + done.stderr
    assert f"permission: role {role} may not refresh it: only the owner (postgres) may" in done.stdout
    add_new_users(pg)
    with pytest.raises(MatviewSetupError, match=f"GRANT MAINTAIN ON {VIEW} TO {role}, or GRANT pg_maintain"):
        refresh("refresher")
    assert pg.execute(f"SELECT count(*) FROM {VIEW}").fetchone() == (5,)


def test_the_owner_is_told_it_owns_the_view_not_that_it_holds_maintain(
    pg: psycopg.Connection, database: Database, config: Path
) -> None:
    create_reference_scenario(pg)
    done = check(config, database.dsn)
    assert "permission: role postgres owns the view\n" in done.stdout, done.stdout + done.stderr
    assert "holds MAINTAIN" not in done.stdout


def _function_view(pg: psycopg.Connection, body_names: str) -> None:
    """A view over a function whose body names ``body_names``, as it stands after an upgrade from 16: it was
    created when the function still worked (PostgreSQL 17 creates a view with the restricted path too)."""
    create_reference_scenario(pg)
    pg.execute("CREATE TABLE orders (user_id int)")
    function = "CREATE OR REPLACE FUNCTION order_count(int) RETURNS bigint LANGUAGE sql STABLE AS '{}'"
    pg.execute(function.format("SELECT count(*) FROM public.orders WHERE user_id = $1"))
    pg.execute("CREATE MATERIALIZED VIEW user_orders AS SELECT id, order_count(id) AS n FROM polls_user")
    pg.execute(function.format(f"SELECT count(*) FROM {body_names} WHERE user_id = $1"))


def test_check_finds_a_view_whose_function_names_a_table_without_its_schema(
    pg: psycopg.Connection, database: Database, config: Path
) -> None:
    _function_view(pg, "orders")
    major = pg.info.server_version // 10000
    refresh_fails = major >= 17
    if refresh_fails:  # the breakage itself, as a user upgrading meets it
        with pytest.raises(psycopg.errors.UndefinedTable, match='relation "orders" does not exist'):
            pg.execute("REFRESH MATERIALIZED VIEW user_orders")

    done = check(config, database.dsn)

    out = done.stdout
    assert ("PROBLEM public.user_orders" in out) is refresh_fails, out + done.stderr
    assert done.returncode == (1 if refresh_fails else 0)
    expected = (
        "search_path: REFRESH fails: PostgreSQL 17+ refreshes with search_path = pg_catalog, pg_temp, and then: "
        if refresh_fails
        else f"search_path: refreshes on PostgreSQL {major}, but will fail after an upgrade to 17+, which "
        "refreshes with search_path = pg_catalog, pg_temp, and then: "
    )
    assert (
        expected + 'relation "orders" does not exist (SQL function "order_count" during inlining). Fix: '
        "schema-qualify the names in the function's body (public.orders, not orders), or give it its own: "
        "ALTER FUNCTION public.order_count(integer) SET search_path = public\n"
    ) in out
    # Following the advice fixes it.
    pg.execute("ALTER FUNCTION order_count(int) SET search_path = public")
    pg.execute("REFRESH MATERIALIZED VIEW user_orders")
    done = check(config, database.dsn)
    assert "search_path" not in done.stdout
    assert done.returncode == 0, done.stdout


def test_a_plpgsql_function_without_search_path_gets_a_note(
    pg: psycopg.Connection, database: Database, config: Path
) -> None:
    create_reference_scenario(pg)
    pg.execute("CREATE FUNCTION label(int) RETURNS text LANGUAGE plpgsql STABLE AS $$BEGIN RETURN 'u' || $1; END$$")
    pg.execute("CREATE VIEW labelled AS SELECT id, label(id) FROM polls_user")
    pg.execute("CREATE MATERIALIZED VIEW user_orders AS SELECT * FROM labelled")
    done = check(config, database.dsn)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "search_path: note: public.label(integer) set no search_path; on PostgreSQL 17+ they run with pg_catalog, "
        "pg_temp during the refresh"
    ) in done.stdout
