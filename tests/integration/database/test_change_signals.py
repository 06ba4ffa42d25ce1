"""skip_if_unchanged: a run skips only when no source of the view changed, as the change signals (PostgreSQL's
statistics counters) tell, with real Airflow runs."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import pytest

from airflow_matview.assets import matview_asset_uri
from airflow_matview.database.identifiers import QualifiedName
from airflow_matview.factory import build_dags
from devtools.harness.dag_runs import asset_events, run_dag, task_result
from devtools.harness.databases import Database, publish_statistics, query, write
from devtools.harness.scenario import FIRST_USERS, NEW_USERS, add_new_users, create_reference_scenario, view_rows

if TYPE_CHECKING:
    from pathlib import Path

    import psycopg


VIEW_URI = matview_asset_uri("postgres_default", QualifiedName("public", "polls_user_matt_view"))


@pytest.fixture
def scenario(pg: psycopg.Connection, postgres_default: Database, airflow_db: Path) -> psycopg.Connection:
    create_reference_scenario(pg)
    add_new_users(pg)
    publish_statistics(pg)
    return pg


def relfilenode(pg: psycopg.Connection, relname: str) -> int:
    row = pg.execute("SELECT relfilenode FROM pg_class WHERE relname = %s", [relname]).fetchone()
    assert row is not None
    return int(row[0])


class SkippingDag:
    """A DAG that refreshes ``view`` with ``skip_if_unchanged``, run for real each time."""

    def __init__(self, view: str) -> None:
        config = {"views": [{"name": view, "schedule": None, "skip_if_unchanged": True}]}
        (self.dag,) = build_dags(config).values()

    def run(self) -> tuple[str | None, Any]:
        return task_result(run_dag(self.dag))


def test_skip_if_unchanged_skips_only_when_no_source_changed(scenario: psycopg.Connection, database: Database) -> None:
    scenario.close()  # every statement below runs on a session that ends at once (see query())
    dag = SkippingDag("public.polls_user_matt_view")
    assert dag.run()[0] == "success"  # nothing recorded yet
    with database.connect() as conn:
        assert view_rows(conn) == FIRST_USERS + NEW_USERS
        file_before = relfilenode(conn, "polls_user_matt_view")
    events_before = len(asset_events(VIEW_URI))

    assert dag.run() == ("skipped", None)
    assert len(asset_events(VIEW_URI)) == events_before  # no asset event for a skipped run
    with database.connect() as conn:
        assert relfilenode(conn, "polls_user_matt_view") == file_before

    changes = {
        "insert": ("INSERT INTO polls_user VALUES (8, 'heidi', 70)", 8),
        "update": ("UPDATE polls_user SET age = 20 WHERE id = 8", 7),
        "delete": ("DELETE FROM polls_user WHERE id = 1", 6),
        "truncate": ("TRUNCATE polls_user", 0),
    }
    for kind, (statement, rows) in changes.items():
        write(database, statement)
        state, result = dag.run()
        assert state == "success", kind
        assert query(database, "SELECT count(*) FROM polls_user_matt_view") == [(rows,)], kind
        assert result["view"] == "public.polls_user_matt_view"
        assert dag.run() == ("skipped", None), f"after {kind}, a second run should skip"


def test_never_skips_when_the_server_does_not_count_changes(
    scenario: psycopg.Connection, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    dag = SkippingDag("public.polls_user_matt_view")
    assert dag.run()[0] == "success"
    assert fingerprint_record("public.polls_user_matt_view") is not None
    scenario.execute(f'ALTER DATABASE "{database.name}" SET track_counts = off')
    write(database, "INSERT INTO polls_user VALUES (8, 'heidi', 70)")  # invisible to the counters now

    with caplog.at_level(logging.INFO, logger="airflow_matview.database.refresh"):
        assert dag.run()[0] == "success"
    assert scenario.execute("SELECT count(*) FROM polls_user_matt_view").fetchone() == (8,)
    assert "track_counts is off" in caplog.text
    assert fingerprint_record("public.polls_user_matt_view") is None, "a record taken blind must not survive"

    scenario.execute(f'ALTER DATABASE "{database.name}" RESET track_counts')
    write(database, "INSERT INTO polls_user VALUES (9, 'ivan', 71)")
    assert dag.run()[0] == "success"
    assert scenario.execute("SELECT count(*) FROM polls_user_matt_view").fetchone() == (9,)


def fingerprint_record(view: str) -> str | None:
    from airflow.models.variable import Variable

    from airflow_matview.database.identifiers import parse_qualified_name
    from airflow_matview.operators.materialized_view import fingerprint_key

    return Variable.get(fingerprint_key("postgres_default", parse_qualified_name(view)), default_var=None)


def test_a_statistics_reset_that_brings_the_counters_back_is_not_missed(
    scenario: psycopg.Connection, database: Database
) -> None:
    scenario.execute("SELECT pg_stat_reset()")
    dag = SkippingDag("public.polls_user_matt_view")
    assert dag.run()[0] == "success"  # records counters of zero
    write(database, "INSERT INTO polls_user VALUES (8, 'heidi', 70)")
    scenario.execute("SELECT pg_stat_reset()")  # the counters are zero again, the insert is not counted
    assert dag.run()[0] == "success"
    assert scenario.execute("SELECT count(*) FROM polls_user_matt_view").fetchone() == (8,)


def test_a_redefined_plain_view_in_between_counts(scenario: psycopg.Connection, database: Database) -> None:
    scenario.execute("CREATE VIEW adults AS SELECT * FROM polls_user WHERE age >= 18")
    scenario.execute("CREATE MATERIALIZED VIEW adult_count AS SELECT count(*) AS n FROM adults")
    scenario.close()  # its counters are published as it ends; later statements run on short sessions (query())
    dag = SkippingDag("public.adult_count")
    assert dag.run()[0] == "success"
    assert dag.run()[0] == "skipped"
    query(database, "CREATE OR REPLACE VIEW adults AS SELECT * FROM polls_user WHERE age >= 40")
    assert dag.run()[0] == "success"
    assert query(database, "SELECT n FROM adult_count") == [(2,)]


@pytest.mark.parametrize(
    "uses",
    ["order_count(id)", "id OPERATOR(public.###) 0"],
    ids=["function", "operator"],
)
def test_never_skips_a_view_that_uses_a_user_function(
    scenario: psycopg.Connection, database: Database, uses: str
) -> None:
    scenario.execute("CREATE TABLE orders (user_id int)")
    scenario.execute(
        "CREATE FUNCTION order_count(int) RETURNS bigint LANGUAGE sql STABLE "
        "AS 'SELECT count(*) FROM public.orders WHERE user_id = $1'"
    )
    scenario.execute(
        "CREATE FUNCTION order_count(int, int) RETURNS bigint LANGUAGE sql STABLE AS 'SELECT public.order_count($1)'"
    )
    scenario.execute("CREATE OPERATOR public.### (FUNCTION = order_count, LEFTARG = int, RIGHTARG = int)")
    scenario.execute(f"CREATE MATERIALIZED VIEW user_orders AS SELECT id, {uses} AS n FROM polls_user")
    publish_statistics(scenario)
    dag = SkippingDag("public.user_orders")
    assert dag.run()[0] == "success"
    write(database, "INSERT INTO orders VALUES (1)")  # a table only the function reads: not a source to the catalog
    assert dag.run()[0] == "success"
    assert scenario.execute("SELECT n FROM user_orders WHERE id = 1").fetchone() == (1,)


def test_a_run_that_empties_the_view_is_never_skipped(scenario: psycopg.Connection, database: Database) -> None:
    import psycopg

    from airflow_matview.database.identifiers import parse_qualified_name
    from airflow_matview.database.refresh import RefreshSettings, refresh_materialized_view

    view = parse_qualified_name("public.polls_user_matt_view")
    with psycopg.connect(database.dsn) as conn:
        recorded = refresh_materialized_view(conn, view, RefreshSettings(skip_if_unchanged=True)).fingerprint
        assert recorded is not None
        settings = RefreshSettings(with_data=False, skip_if_unchanged=True, previous_fingerprint=recorded)
        assert refresh_materialized_view(conn, view, settings).mode == "no_data"
    assert scenario.execute(
        "SELECT relispopulated FROM pg_class WHERE relname = 'polls_user_matt_view'"
    ).fetchone() == (False,)


def test_never_skips_while_a_session_is_writing_to_a_source(
    scenario: psycopg.Connection, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    dag = SkippingDag("public.polls_user_matt_view")
    assert dag.run()[0] == "success"
    with database.connect() as etl:
        etl.execute("SET application_name = 'nightly-etl'")
        etl.execute("BEGIN")
        etl.execute("UPDATE polls_user SET age = age WHERE id = 1")  # holds ROW EXCLUSIVE until it ends
        with caplog.at_level(logging.INFO, logger="airflow_matview.database.refresh"):
            assert dag.run()[0] == "success"
        assert "('nightly-etl') on polls_user" in caplog.text
        etl.execute("ROLLBACK")


def test_a_foreign_partition_makes_changes_unseeable(scenario: psycopg.Connection) -> None:
    from airflow_matview.database import catalog
    from airflow_matview.database.change_signals import read_change_signals

    scenario.execute("CREATE FOREIGN DATA WRAPPER nowhere")
    scenario.execute("CREATE SERVER remote FOREIGN DATA WRAPPER nowhere")
    scenario.execute("CREATE TABLE events (id int, region text) PARTITION BY LIST (region)")
    scenario.execute("CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu')")
    scenario.execute("CREATE FOREIGN TABLE events_us PARTITION OF events FOR VALUES IN ('us') SERVER remote")
    scenario.execute("CREATE MATERIALIZED VIEW event_count AS SELECT count(*) AS n FROM events WITH NO DATA")
    oid = scenario.execute("SELECT 'event_count'::regclass::oid").fetchone()[0]  # type: ignore[index]

    facts = catalog.refresh_facts(scenario, oid)
    signals = read_change_signals(scenario, [oid])[oid]

    assert [str(source.name) for source in facts.sources] == ["public.events"]
    assert signals.fingerprint is None
    assert signals.untracked_because == "events_us cannot be tracked (a foreign table or a sequence)"


def test_a_source_reached_through_a_plain_view_counts(scenario: psycopg.Connection, database: Database) -> None:
    scenario.execute("CREATE VIEW adults AS SELECT * FROM polls_user WHERE age >= 18")
    scenario.execute("CREATE MATERIALIZED VIEW adult_count AS SELECT count(*) AS n FROM adults")
    scenario.close()  # its counters are published as it ends; later statements run on short sessions (query())
    dag = SkippingDag("public.adult_count")
    state, result = dag.run()
    assert state == "success"
    assert result["sources"] == ["public.polls_user"]  # the table behind the plain view
    assert dag.run()[0] == "skipped"

    write(database, "INSERT INTO polls_user VALUES (8, 'heidi', 70)")
    assert dag.run()[0] == "success"
    assert query(database, "SELECT n FROM adult_count") == [(8,)]


def test_a_refreshed_upstream_view_counts_as_a_changed_source(scenario: psycopg.Connection, database: Database) -> None:
    scenario.execute("CREATE MATERIALIZED VIEW rollup AS SELECT count(*) AS n FROM polls_user_matt_view")
    scenario.close()  # its counters are published as it ends; later statements run on short sessions (query())
    downstream = SkippingDag("public.rollup")
    assert downstream.run()[0] == "success"
    assert downstream.run()[0] == "skipped"
    write(database, "REFRESH MATERIALIZED VIEW CONCURRENTLY polls_user_matt_view")
    assert downstream.run()[0] == "success"
    assert query(database, "SELECT n FROM rollup") == [(7,)]


def test_waits_for_the_counters_of_an_etl_session_that_stays_open(
    scenario: psycopg.Connection, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A commit within a second of the session's last report reaches the counters only ~10 s later: no skip then."""
    from airflow_matview.database.identifiers import QualifiedName
    from airflow_matview.database.refresh import refresh_materialized_view
    from airflow_matview.database.refresh_settings import RefreshSettings

    view = QualifiedName("public", "polls_user_matt_view")
    with database.connect(application_name="nightly-etl") as etl, database.connect() as conn:
        etl.execute("UPDATE polls_user SET age = age + 1 WHERE id = 1")  # a fresh session reports at once
        publish_statistics(etl)
        recorded = refresh_materialized_view(conn, view, RefreshSettings(skip_if_unchanged=True)).fingerprint
        etl.execute("INSERT INTO polls_user VALUES (8, 'heidi', 70)")  # held back: reported < 1 s ago
        settings = RefreshSettings(skip_if_unchanged=True, previous_fingerprint=recorded)
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="airflow_matview.database.refresh"):
            refresh_materialized_view(conn, view, settings)
        assert scenario.execute("SELECT count(*) FROM polls_user_matt_view").fetchone() == (8,)
        assert time.monotonic() - started < 12
        assert "('nightly-etl') went idle in the last 10s and may not have published" in caplog.text
