"""Failures a run can meet, as the user sees them: missing privileges, PostgreSQL's DETAIL and HINT, connection
failures, and which of them Airflow retries (real server, real Airflow runs)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from airflow_matview import RefreshMaterializedViewOperator
from airflow_matview.cli.check import check_view
from airflow_matview.config import load_config
from airflow_matview.database.locks import advisory_key
from airflow_matview.exceptions import (
    MatviewOverlapError,
    MatviewQueryError,
    MatviewRefreshError,
    MatviewSetupError,
)
from airflow_matview.factory import build_dags
from airflow_matview.version_compat import AirflowFailException
from devtools.harness.dag_runs import run_dag
from devtools.harness.scenario import add_new_users, create_reference_scenario

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from devtools.harness.databases import Database


def refresh(view: str = "polls_user_matt_view", **kwargs: Any) -> dict[str, Any]:
    return RefreshMaterializedViewOperator(task_id="refresh", view=view, **kwargs).execute({})  # type: ignore[arg-type]


def count(pg: psycopg.Connection, relation: str) -> int:
    row = pg.execute(f"SELECT count(*) FROM {relation}").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def scenario(pg: psycopg.Connection, postgres_default: Database) -> psycopg.Connection:
    create_reference_scenario(pg)
    add_new_users(pg)
    return pg


class Roles:
    """The README's least-privilege set-up: ``owner`` (NOLOGIN) owns the view, ``refresher`` logs in as its member,
    through the Airflow connection ``refresher``."""

    def __init__(self, pg: psycopg.Connection, database: Database) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.owner, self.refresher = f"matview_owner_{suffix}", f"airflow_refresher_{suffix}"
        self.database = database.name
        pg.execute(f"CREATE ROLE {self.owner} NOLOGIN")
        pg.execute(f"GRANT SELECT ON polls_user TO {self.owner}")
        pg.execute(f"ALTER MATERIALIZED VIEW polls_user_matt_view OWNER TO {self.owner}")
        pg.execute(f"CREATE ROLE {self.refresher} LOGIN IN ROLE {self.owner}")
        self.uri = database.uri.replace("postgres@", f"{self.refresher}@", 1)


@pytest.fixture
def roles(scenario: psycopg.Connection, database: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[Roles]:
    roles = Roles(scenario, database)
    monkeypatch.setenv("AIRFLOW_CONN_REFRESHER", roles.uri)
    yield roles
    scenario.execute(f"DROP OWNED BY {roles.owner}, {roles.refresher} CASCADE")
    scenario.execute(f"DROP ROLE {roles.refresher}")
    scenario.execute(f"DROP ROLE {roles.owner}")


def check(conn_uri: str, **view: Any) -> tuple[bool, list[str]]:
    config = load_config({"views": [{"name": "public.polls_user_matt_view", **view}]})
    with psycopg.connect(conn_uri, autocommit=True) as conn:
        return check_view(conn, config.views[0], "connection 'refresher'")


# --- privileges other than the right to refresh ------------------------------------------------------------


def test_an_owner_without_temporary_falls_back_to_a_plain_refresh_with_auto_and_fails_with_true(
    scenario: psycopg.Connection, roles: Roles
) -> None:
    scenario.execute(f"REVOKE TEMPORARY ON DATABASE {roles.database} FROM PUBLIC")
    grant = f"GRANT TEMPORARY ON DATABASE {roles.database} TO {roles.owner}"

    ok, lines = check(roles.uri)
    assert ok, lines
    assert lines[0] == (
        "refresh: blocking (plain refresh (blocks readers) because its owner may not create temporary tables in the "
        "database (no TEMPORARY privilege), and CONCURRENTLY builds the new data in one. Fix: " + grant + ")"
    )
    ok, lines = check(roles.uri, concurrently=True)
    assert not ok
    assert grant in lines[0]

    result = refresh(postgres_conn_id="refresher")
    assert result["mode"] == "blocking"
    assert grant in result["reason"]
    assert count(scenario, "polls_user_matt_view") == 7

    with pytest.raises(MatviewSetupError) as raised:
        refresh(postgres_conn_id="refresher", concurrently=True)
    assert str(raised.value) == (
        f"Cannot refresh public.polls_user_matt_view (connection 'refresher') CONCURRENTLY: its owner may not create "
        f"temporary tables in the database (no TEMPORARY privilege), and CONCURRENTLY builds the new data in one. "
        f"Fix: {grant}, or use concurrently='auto' to fall back to a plain refresh."
    )

    scenario.execute(grant)
    assert check(roles.uri, concurrently=True)[0]
    assert refresh(postgres_conn_id="refresher", concurrently=True)["mode"] == "concurrently"


def test_an_owner_without_select_on_a_source_is_named_with_the_grant_that_fixes_it(
    scenario: psycopg.Connection, roles: Roles
) -> None:
    scenario.execute('CREATE SCHEMA "Sales Data"')
    scenario.execute('CREATE TABLE "Sales Data"."Q1 Totals" (id int PRIMARY KEY)')
    scenario.execute(f'GRANT USAGE ON SCHEMA "Sales Data" TO {roles.owner}')
    scenario.execute(f'GRANT SELECT ON "Sales Data"."Q1 Totals" TO {roles.owner}')
    scenario.execute(
        'CREATE MATERIALIZED VIEW mixed AS SELECT id FROM polls_user UNION ALL SELECT id FROM "Sales Data"."Q1 Totals"'
    )
    scenario.execute(f"ALTER MATERIALIZED VIEW mixed OWNER TO {roles.owner}")
    scenario.execute(f'REVOKE SELECT ON "Sales Data"."Q1 Totals" FROM {roles.owner}')
    grant = f'GRANT SELECT ON TABLE "Sales Data"."Q1 Totals" TO {roles.owner}'
    missing = (
        f'the view\'s owner {roles.owner} lacks SELECT on table "Sales Data"."Q1 Totals" (PostgreSQL runs the '
        f"view's query as its owner); fix: {grant}"
    )

    config = load_config({"views": [{"name": "public.mixed"}]})
    with psycopg.connect(roles.uri, autocommit=True) as conn:
        ok, lines = check_view(conn, config.views[0], "connection 'refresher'")
    assert not ok
    assert lines[-1] == f"privilege: {missing}"

    with pytest.raises(MatviewSetupError) as raised:
        refresh("mixed", postgres_conn_id="refresher")
    assert str(raised.value) == (
        "Cannot refresh mixed (connection 'refresher'): permission denied for table Q1 Totals. "
        f"Missing: {missing}. Not retried: grant the privilege, then clear the task (`airflow-matview check` lists "
        "what is missing)."
    )
    assert "only the view's owner" not in str(raised.value)

    scenario.execute(grant)
    assert refresh("mixed", postgres_conn_id="refresher")["mode"] == "blocking"
    assert count(scenario, "mixed") == 7


def test_usage_on_a_source_schema_is_not_needed_and_not_reported(scenario: psycopg.Connection, roles: Roles) -> None:
    """PostgreSQL checks the stored query's tables, not their schemas: reporting USAGE would be a false alarm."""
    scenario.execute("CREATE SCHEMA hidden")
    scenario.execute("CREATE TABLE hidden.t AS SELECT 1 AS id")
    scenario.execute(f"GRANT USAGE ON SCHEMA hidden TO {roles.owner}")
    scenario.execute(f"GRANT SELECT ON hidden.t TO {roles.owner}")
    scenario.execute("CREATE MATERIALIZED VIEW from_hidden AS SELECT id FROM hidden.t")
    scenario.execute(f"ALTER MATERIALIZED VIEW from_hidden OWNER TO {roles.owner}")
    scenario.execute(f"REVOKE USAGE ON SCHEMA hidden FROM {roles.owner}")
    config = load_config({"views": [{"name": "public.from_hidden"}]})
    with psycopg.connect(roles.uri, autocommit=True) as conn:
        assert check_view(conn, config.views[0], "connection 'refresher'")[0]
    assert refresh("from_hidden", postgres_conn_id="refresher")["mode"] == "blocking"


# --- what PostgreSQL says, and which failures are retried ------------------------------------------------------


def test_a_duplicate_key_in_the_new_data_names_the_key_and_is_not_retried(scenario: psycopg.Connection) -> None:
    scenario.execute("CREATE TABLE events (id int, kind text)")
    scenario.execute("INSERT INTO events VALUES (1, 'a')")
    scenario.execute("CREATE MATERIALIZED VIEW latest AS SELECT id, kind FROM events")
    scenario.execute("CREATE UNIQUE INDEX latest_id ON latest (id)")
    scenario.execute("INSERT INTO events VALUES (1, 'b')")
    with pytest.raises(MatviewQueryError) as raised:
        refresh("latest", concurrently=True)
    assert isinstance(raised.value, AirflowFailException)
    assert str(raised.value).startswith(
        "REFRESH MATERIALIZED VIEW latest failed (connection 'postgres_default'): duplicate key value violates "
        'unique constraint "latest_id" (DETAIL: Key (id)=(1) already exists.). The view keeps its previous contents. '
        "Not retried"
    )
    with pytest.raises(MatviewQueryError, match=r"\(DETAIL: Key \(id\)=\(1\) is duplicated\.\)"):
        refresh("latest", concurrently=False)
    assert scenario.execute("SELECT kind FROM latest").fetchall() == [("a",)]


def test_a_hint_from_postgresql_reaches_the_message(scenario: psycopg.Connection) -> None:
    scenario.execute("CREATE TABLE texts (id int, v text)")
    scenario.execute("INSERT INTO texts VALUES (1, '1')")
    scenario.execute("CREATE MATERIALIZED VIEW casted AS SELECT id, v::int AS n FROM texts")
    scenario.execute("INSERT INTO texts VALUES (2, 'two')")
    with pytest.raises(MatviewQueryError) as raised:
        refresh("casted")
    assert 'invalid input syntax for type integer: "two"' in str(raised.value)
    scenario.execute(
        "CREATE FUNCTION explain_me() RETURNS int LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'not yet' USING DETAIL = 'the feed is late', HINT = 'wait for the feed'; END $$"
    )
    scenario.execute("CREATE MATERIALIZED VIEW hinted AS SELECT explain_me() AS one WITH NO DATA")
    with pytest.raises(MatviewQueryError) as raised:
        refresh("hinted")
    assert "not yet (DETAIL: the feed is late HINT: wait for the feed)" in str(raised.value)


@pytest.fixture
def password_role(pg: psycopg.Connection, database: Database, pg_server: Any) -> Iterator[str]:
    """A role that must log in with a password (scram), though the test server trusts everyone else."""
    role = f"pw_{uuid.uuid4().hex[:8]}"
    pg.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'right-secret'")
    hba = pg_server.data_dir / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n{original}")
    pg.execute("SELECT pg_reload_conf()")
    yield role
    hba.write_text(original)
    pg.execute("SELECT pg_reload_conf()")
    pg.execute(f"DROP ROLE {role}")


def test_a_wrong_password_fails_at_once_and_never_shows_the_password(
    scenario: psycopg.Connection, database: Database, password_role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = database.server.port
    monkeypatch.setenv(
        "AIRFLOW_CONN_WRONG", f"postgresql://{password_role}:wrong-secret-42@127.0.0.1:{port}/{database.name}"
    )
    with pytest.raises(MatviewSetupError) as raised:
        refresh(postgres_conn_id="wrong")
    message = str(raised.value)
    assert message.startswith(
        f"Cannot connect to PostgreSQL at 127.0.0.1:{port} to refresh polls_user_matt_view (connection 'wrong'): "
        f'connection to server at "127.0.0.1", port {port} failed: FATAL: password authentication failed for user '
        f"\"{password_role}\". The connection's login or password is wrong: fix the Airflow connection 'wrong'"
    )
    assert "wrong-secret-42" not in message
    assert "Not retried" in message


@pytest.mark.parametrize(
    ("case", "uri", "fix"),
    [
        ("no such database", "postgresql://postgres@127.0.0.1:{port}/no_such_db", "names a database that does not"),
        ("no such role", "postgresql://nobody_here@127.0.0.1:{port}/postgres", "names a role that does not exist"),
    ],
)
def test_a_connection_that_can_never_work_fails_at_once(
    scenario: psycopg.Connection, database: Database, monkeypatch: pytest.MonkeyPatch, case: str, uri: str, fix: str
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BROKEN", uri.format(port=database.server.port))
    with pytest.raises(MatviewSetupError) as raised:
        refresh(postgres_conn_id="broken")
    assert f"127.0.0.1:{database.server.port}" in str(raised.value)
    assert fix in str(raised.value)


@pytest.mark.parametrize("uri", ["mysql://root:pw@127.0.0.1:3306/shop", "http://user:pw@example.invalid/api"])
def test_a_connection_of_another_type_is_refused_before_connecting(
    scenario: psycopg.Connection, monkeypatch: pytest.MonkeyPatch, uri: str
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_OTHER", uri)
    with pytest.raises(MatviewSetupError) as raised:
        refresh(postgres_conn_id="other")
    kind = uri.split(":", 1)[0]
    assert str(raised.value).startswith(
        f"Cannot refresh polls_user_matt_view: Airflow connection 'other' is of type '{kind}', not a PostgreSQL "
        "connection."
    )
    assert "pw" not in str(raised.value).replace("PostgreSQL", "")


def test_an_unreachable_server_keeps_host_port_and_every_line_of_the_cause(
    scenario: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_NOWHERE", "postgresql://postgres:s3cret@127.0.0.1:1/postgres")
    with pytest.raises(MatviewRefreshError) as raised:
        refresh(postgres_conn_id="nowhere")
    assert str(raised.value) == (
        "Cannot connect to PostgreSQL at 127.0.0.1:1 to refresh polls_user_matt_view (connection 'nowhere'): "
        'connection to server at "127.0.0.1", port 1 failed: Connection refused Is the server running on that host '
        "and accepting TCP/IP connections? Check that the server is up and reachable from the worker; Airflow will "
        "retry."
    )


def tries(run: Any) -> tuple[str | None, int]:
    ti = run.get_task_instance("refresh")
    return (str(ti.state) if ti.state else None), int(ti.try_number)


def test_what_airflow_retries(scenario: psycopg.Connection, database: Database, airflow_db: Path) -> None:
    """retries=2: a failure a retry cannot cure ends after one try; one that may pass is tried three times."""
    scenario.execute("CREATE TABLE ratios (id int PRIMARY KEY, d int)")
    scenario.execute("INSERT INTO ratios VALUES (1, 1)")
    scenario.execute("CREATE MATERIALIZED VIEW inverse AS SELECT id, 1 / d AS q FROM ratios")
    scenario.execute("INSERT INTO ratios VALUES (2, 0)")
    base = {"schedule": None, "retries": 2, "retry_delay": 0}

    def dag(name: str, **settings: Any) -> Any:
        dag_id = f"{name.split('.')[1]}_{uuid.uuid4().hex[:8]}"
        return build_dags({"views": [{**base, "name": name, "dag_id": dag_id, **settings}]})[dag_id]

    assert tries(run_dag(dag("public.inverse"))) == ("failed", 1)  # division by zero
    assert tries(run_dag(dag("public.polls_user"))) == ("failed", 1)  # a table, not a view
    oid = scenario.execute("SELECT 'polls_user_matt_view'::regclass::oid").fetchone()[0]  # type: ignore[index]
    with psycopg.connect(database.dsn) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_key(oid)])  # another refresh is running
        assert tries(run_dag(dag("public.polls_user_matt_view", on_overlap="fail"))) == ("failed", 1)
        assert tries(run_dag(dag("public.polls_user_matt_view", lock_timeout="100ms"))) == ("failed", 3)
    assert count(scenario, "polls_user_matt_view") == 5


def test_on_overlap_fail_is_not_retried(scenario: psycopg.Connection, database: Database) -> None:
    oid = scenario.execute("SELECT 'polls_user_matt_view'::regclass::oid").fetchone()[0]  # type: ignore[index]
    with psycopg.connect(database.dsn) as holder:
        holder.execute("SET application_name = 'other-refresh'")
        holder.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_key(oid)])
        with pytest.raises(MatviewOverlapError) as raised:
            refresh(on_overlap="fail", lock_timeout=timedelta(seconds=1))
    assert isinstance(raised.value, AirflowFailException)
    assert "holding the refresh lock (an advisory lock) of polls_user_matt_view" in str(raised.value)
