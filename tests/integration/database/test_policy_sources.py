"""Row-level security: the tables a policy reads are sources of every view whose query the policy filters.

PostgreSQL runs a view's query as the view's owner: a policy applies when the owner is not the table's owner (or
the table forces row-level security), and is neither a superuser nor BYPASSRLS.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg import sql

from airflow_matview.database import catalog
from airflow_matview.database.change_signals import ChangeSignals, describe_changes, read_change_signals
from airflow_matview.database.identifiers import QualifiedName
from airflow_matview.database.refresh import refresh_materialized_view
from airflow_matview.database.refresh_settings import RefreshSettings
from airflow_matview.triggers.source_changes import poll_views
from airflow_matview.version_compat import AirflowSkipException

if TYPE_CHECKING:
    from collections.abc import Iterator

    from devtools.harness.databases import Database

VIEW = QualifiedName("public", "visible_orders")


@pytest.fixture
def owner(database: Database) -> Iterator[str]:
    """A role that is no superuser (superusers bypass row-level security), dropped with what it owns."""
    role = f"owner_{database.name}"
    with database.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOSUPERUSER").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT ALL ON SCHEMA public TO {}").format(sql.Identifier(role)))
    yield role
    with database.connect() as conn:
        conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _run(database: Database, *statements: str, role: str = "") -> None:
    """Run ``statements`` (``{role}`` stands for the role) in a session that publishes its counters and ends."""
    with database.connect() as conn:
        for statement in statements:
            conn.execute(statement.replace("{role}", f'"{role}"'))
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT 1")


def _orders(database: Database, role: str, *, force: bool, view_query: str = "SELECT * FROM orders") -> None:
    """``orders``, whose policy shows the rows of the regions in ``allowed_regions``, and the view over it."""
    _run(
        database,
        "CREATE TABLE allowed_regions (region text)",
        "INSERT INTO allowed_regions VALUES ('eu')",
        "CREATE TABLE orders (id int PRIMARY KEY, region text)",
        "INSERT INTO orders VALUES (1, 'eu'), (2, 'us'), (3, 'us')",
        "ALTER TABLE orders ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY by_region ON orders USING (region IN (SELECT region FROM allowed_regions))",
        *(["ALTER TABLE orders FORCE ROW LEVEL SECURITY", "ALTER TABLE orders OWNER TO {role}"] if force else []),
        "GRANT SELECT ON orders, allowed_regions TO {role}",
        f"CREATE MATERIALIZED VIEW visible_orders AS {view_query} WITH NO DATA",
        "ALTER MATERIALIZED VIEW visible_orders OWNER TO {role}",
        "REFRESH MATERIALIZED VIEW visible_orders",
        role=role,
    )


def _signals(database: Database, view: str = "public.visible_orders") -> ChangeSignals:
    with database.connect() as conn:
        oid = conn.execute("SELECT %s::regclass::oid", [view]).fetchone()[0]  # type: ignore[index]
        return read_change_signals(conn, [oid])[oid]


def _changes(database: Database, before: dict[str, Any], *statements: str) -> list[str]:
    _run(database, *statements)
    after = _signals(database)
    assert after.fingerprint is not None, after.untracked_because
    return describe_changes(before, after.fingerprint, after.source_names)


def _rows(database: Database) -> int:
    with database.connect() as conn:
        return int(conn.execute("SELECT count(*) FROM visible_orders").fetchone()[0])  # type: ignore[index]


@pytest.mark.parametrize("force", [True, False], ids=["forced_on_the_owner", "view_owned_by_another_role"])
def test_a_policy_lookup_table_is_a_source(database: Database, owner: str, force: bool) -> None:
    _orders(database, owner, force=force)
    assert _rows(database) == 1
    before = _signals(database)
    assert before.fingerprint is not None, before.untracked_because
    assert sorted(before.source_names.values()) == ["public.allowed_regions", "public.orders"]

    with psycopg.connect(database.dsn) as conn:
        recorded = refresh_materialized_view(conn, VIEW, RefreshSettings(skip_if_unchanged=True))
        assert recorded.sources == ["public.allowed_regions", "public.orders"]
        _run(database, "INSERT INTO allowed_regions VALUES ('us')")
        settings = RefreshSettings(skip_if_unchanged=True, previous_fingerprint=recorded.fingerprint)
        refreshed = refresh_materialized_view(conn, VIEW, settings)
        assert _rows(database) == 3
        with pytest.raises(AirflowSkipException):
            refresh_materialized_view(
                conn, VIEW, RefreshSettings(skip_if_unchanged=True, previous_fingerprint=refreshed.fingerprint)
            )


def test_on_change_sees_a_policy_lookup_table_change(database: Database, owner: str) -> None:
    _orders(database, owner, force=True)

    async def poll() -> dict[str, Any]:
        async with await psycopg.AsyncConnection.connect(database.dsn, autocommit=True) as conn:
            state = (await poll_views(conn, ["public.visible_orders"]))["public.visible_orders"]
        assert state.problem is None and state.fingerprint is not None
        return state.fingerprint

    before = asyncio.run(poll())
    _run(database, "DELETE FROM allowed_regions")
    assert describe_changes(before, asyncio.run(poll())) != []


@pytest.mark.parametrize(
    "view_query",
    [
        "SELECT * FROM orders_view",
        "SELECT * FROM barrier_view",
        "SELECT * FROM invoker_view",
        "SELECT * FROM spelled_invoker_view",
    ],
    ids=["plain_view", "security_barrier_view", "security_invoker_view", "security_invoker_t_view"],
)
def test_a_policy_reached_through_a_view_counts(database: Database, owner: str, view_query: str) -> None:
    _run(
        database,
        "CREATE TABLE allowed_regions (region text)",
        "CREATE TABLE orders (id int PRIMARY KEY, region text)",
        "INSERT INTO orders VALUES (1, 'eu'), (2, 'us')",
        "ALTER TABLE orders ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE orders FORCE ROW LEVEL SECURITY",
        "CREATE POLICY by_region ON orders USING (region IN (SELECT region FROM allowed_regions))",
        "ALTER TABLE orders OWNER TO {role}",
        "GRANT SELECT ON allowed_regions TO {role}",
        "CREATE VIEW orders_view AS SELECT * FROM orders",
        "CREATE VIEW barrier_view WITH (security_barrier) AS SELECT * FROM orders WHERE id > 0",
        "CREATE VIEW invoker_view WITH (security_invoker) AS SELECT * FROM orders",
        "CREATE VIEW spelled_invoker_view WITH (security_invoker = 't') AS SELECT * FROM orders",
        "ALTER VIEW orders_view OWNER TO {role}",
        "ALTER VIEW barrier_view OWNER TO {role}",
        f"CREATE MATERIALIZED VIEW visible_orders AS {view_query} WITH NO DATA",
        "ALTER MATERIALIZED VIEW visible_orders OWNER TO {role}",
        "GRANT SELECT ON invoker_view, spelled_invoker_view TO {role}",
        "REFRESH MATERIALIZED VIEW visible_orders",
        role=owner,
    )
    assert _rows(database) == 0
    before = _signals(database).fingerprint
    assert before is not None
    assert _changes(database, before, "INSERT INTO allowed_regions VALUES ('us')") == ["public.allowed_regions"]


def test_policies_of_partitioned_tables_and_lookups(database: Database, owner: str) -> None:
    """A policy on the partitioned table applies, and its partitioned lookup's partitions count; a policy on a
    partition does not apply to a query of the partitioned table, so its lookup is no source."""
    _run(
        database,
        "CREATE TABLE allowed_regions (region text) PARTITION BY LIST (region)",
        "CREATE TABLE allowed_eu PARTITION OF allowed_regions FOR VALUES IN ('eu')",
        "CREATE TABLE allowed_us PARTITION OF allowed_regions FOR VALUES IN ('us')",
        "CREATE TABLE partition_lookup (id int)",
        "CREATE TABLE orders (id int, region text) PARTITION BY LIST (region)",
        "CREATE TABLE orders_eu PARTITION OF orders FOR VALUES IN ('eu')",
        "CREATE TABLE orders_us PARTITION OF orders FOR VALUES IN ('us')",
        "INSERT INTO orders VALUES (1, 'eu'), (2, 'us')",
        "ALTER TABLE orders ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY by_region ON orders USING (region IN (SELECT region FROM allowed_regions))",
        "ALTER TABLE orders_us ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE orders_us FORCE ROW LEVEL SECURITY",
        "CREATE POLICY by_id ON orders_us USING (id IN (SELECT id FROM partition_lookup))",
        "GRANT SELECT ON orders, allowed_regions TO {role}",
        "CREATE MATERIALIZED VIEW visible_orders AS SELECT * FROM orders WITH NO DATA",
        "ALTER MATERIALIZED VIEW visible_orders OWNER TO {role}",
        "REFRESH MATERIALIZED VIEW visible_orders",
        role=owner,
    )
    signals = _signals(database)
    assert signals.fingerprint is not None, signals.untracked_because
    assert "public.partition_lookup" not in signals.source_names.values()
    assert _changes(database, signals.fingerprint, "INSERT INTO allowed_regions VALUES ('us')") == ["public.allowed_us"]


def test_a_policy_chain_and_a_lookup_through_a_view(database: Database, owner: str) -> None:
    """A lookup table that has a policy of its own, which reads a third table through a plain view."""
    _run(
        database,
        "CREATE TABLE teams (region text, active boolean)",
        "INSERT INTO teams VALUES ('eu', true), ('us', false)",
        "CREATE VIEW active_teams AS SELECT region FROM teams WHERE active",
        "CREATE TABLE allowed_regions (region text)",
        "INSERT INTO allowed_regions VALUES ('eu'), ('us')",
        "ALTER TABLE allowed_regions ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY active_only ON allowed_regions USING (region IN (SELECT region FROM active_teams))",
        "CREATE TABLE orders (id int, region text)",
        "INSERT INTO orders VALUES (1, 'eu'), (2, 'us')",
        "ALTER TABLE orders ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY by_region ON orders USING (region IN (SELECT region FROM allowed_regions))",
        "GRANT SELECT ON orders, allowed_regions, active_teams TO {role}",
        "CREATE MATERIALIZED VIEW visible_orders AS SELECT * FROM orders WITH NO DATA",
        "ALTER MATERIALIZED VIEW visible_orders OWNER TO {role}",
        "REFRESH MATERIALIZED VIEW visible_orders",
        role=owner,
    )
    assert _rows(database) == 1
    signals = _signals(database)
    assert signals.fingerprint is not None, signals.untracked_because
    assert _changes(database, signals.fingerprint, "UPDATE teams SET active = true") == ["public.teams"]


@pytest.mark.parametrize(
    "setup",
    [
        ("ALTER TABLE orders OWNER TO {role}",),
        (
            "ALTER TABLE orders OWNER TO {role}",
            "ALTER ROLE {role} BYPASSRLS",
            "ALTER TABLE orders FORCE ROW LEVEL SECURITY",
        ),
        ("ALTER POLICY by_region ON orders TO pg_monitor", "ALTER POLICY other ON orders TO pg_monitor"),
        (
            "DROP POLICY by_region ON orders",
            "DROP POLICY other ON orders",
            "CREATE POLICY by_region ON orders FOR INSERT WITH CHECK (region IN (SELECT region FROM allowed_regions))",
            "CREATE POLICY other ON orders FOR UPDATE USING (slow_check(region))",
        ),
    ],
    ids=["owner_not_forced", "bypassrls", "policies_for_another_role", "policies_for_writes_only"],
)
def test_a_policy_that_does_not_apply_adds_no_source(database: Database, owner: str, setup: tuple[str, ...]) -> None:
    _run(
        database,
        "CREATE TABLE allowed_regions (region text)",
        "CREATE TABLE orders (id int, region text)",
        "ALTER TABLE orders ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY by_region ON orders USING (region IN (SELECT region FROM allowed_regions))",
        "CREATE FUNCTION slow_check(text) RETURNS boolean LANGUAGE sql STABLE AS 'SELECT true'",
        "CREATE POLICY other ON orders USING (slow_check(region))",
        "GRANT SELECT ON orders, allowed_regions TO {role}",
        *setup,
        "CREATE MATERIALIZED VIEW visible_orders AS SELECT * FROM orders WITH NO DATA",
        "ALTER MATERIALIZED VIEW visible_orders OWNER TO {role}",
        role=owner,
    )
    signals = _signals(database)
    assert signals.untracked_because is None
    assert list(signals.source_names.values()) == ["public.orders"]


def test_a_policy_calling_a_function_makes_the_view_unwatchable(database: Database, owner: str) -> None:
    _run(
        database,
        "CREATE TABLE allowed_regions (region text)",
        "CREATE FUNCTION allowed(text) RETURNS boolean LANGUAGE sql STABLE "
        "AS 'SELECT EXISTS (SELECT FROM public.allowed_regions WHERE region = $1)'",
        "CREATE TABLE orders (id int, region text)",
        "ALTER TABLE orders ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY by_region ON orders USING (allowed(region))",
        "GRANT SELECT ON orders, allowed_regions TO {role}",
        "CREATE MATERIALIZED VIEW visible_orders AS SELECT * FROM orders WITH NO DATA",
        "ALTER MATERIALIZED VIEW visible_orders OWNER TO {role}",
        role=owner,
    )
    signals = _signals(database)
    assert signals.fingerprint is None
    assert signals.untracked_because == (
        "it uses function allowed(text) in policy by_region on table orders, which may read tables the catalog "
        "does not show"
    )


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER POLICY by_region ON orders USING (region IN (SELECT region FROM allowed_regions) OR id = 2)",
        "DROP POLICY by_region ON orders",
        "CREATE POLICY everything ON orders USING (true)",
        "ALTER TABLE orders DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE orders NO FORCE ROW LEVEL SECURITY",
    ],
    ids=["alter_policy", "drop_policy", "create_policy", "disable", "no_force"],
)
def test_a_changed_policy_or_setting_counts(database: Database, owner: str, statement: str) -> None:
    _orders(database, owner, force=True)
    before = _signals(database).fingerprint
    assert before is not None
    assert "a row-level security policy or setting of a source changed" in _changes(database, before, statement)


@pytest.mark.parametrize("spelling", ["true", "'t'", "'yes'", "'on'"])
def test_a_security_invoker_view_is_checked_as_its_reader_however_spelled(
    database: Database, owner: str, spelling: str
) -> None:
    _run(
        database,
        "CREATE TABLE orders (id int)",
        f"CREATE VIEW invoker_view WITH (security_invoker = {spelling}) AS SELECT * FROM orders",
        "GRANT SELECT ON invoker_view TO {role}",
        "CREATE MATERIALIZED VIEW visible_orders AS SELECT * FROM invoker_view WITH NO DATA",
        "ALTER MATERIALIZED VIEW visible_orders OWNER TO {role}",
        role=owner,
    )
    with database.connect() as conn:
        oid = conn.execute("SELECT 'visible_orders'::regclass::oid").fetchone()[0]  # type: ignore[index]
        missing = catalog.missing_privileges(conn, oid)
    assert [m.grant for m in missing] == [f'GRANT SELECT ON TABLE public.orders TO "{owner}"'.replace('"', "")]
