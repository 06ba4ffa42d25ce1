"""Writes that roll back change no view: skip_if_unchanged still skips and on_change does not fire, on every server.

A committed change of every kind must still count, also when VACUUM, ANALYZE or autovacuum ran in between.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from airflow_matview.database.change_signals import ChangeSignals, describe_changes, read_change_signals
from airflow_matview.database.identifiers import QualifiedName
from airflow_matview.database.refresh import refresh_materialized_view
from airflow_matview.database.refresh_settings import RefreshSettings
from airflow_matview.triggers.source_changes import SourceChangesTrigger, ViewState, poll_views
from airflow_matview.version_compat import AirflowSkipException
from devtools.harness.pgcluster import PostgresCluster

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from devtools.harness.databases import Database

SETUP = (
    "CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)",
    "INSERT INTO items SELECT g, g FROM generate_series(1, 5) g",
    "CREATE TABLE events (id int, region text) PARTITION BY LIST (region)",
    "CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu')",
    "CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us')",
    "INSERT INTO events VALUES (1, 'eu'), (2, 'us')",
    "CREATE MATERIALIZED VIEW upstream AS SELECT id, v FROM items",
    "CREATE UNIQUE INDEX ON upstream (id)",
    "CREATE MATERIALIZED VIEW watched AS "
    "SELECT (SELECT count(*) FROM items) AS items, (SELECT sum(v) FROM items) AS total, "
    "(SELECT count(*) FROM events) AS events, (SELECT count(*) FROM upstream) AS upstream",
)
VIEW = QualifiedName("public", "watched")
# A step of a write that reads the view's signals, as the baseline to compare with.
RECORD = "RECORD"


class Fails(str):
    """A statement that fails (the session is in autocommit: the failed statement rolls back)."""


def _copy(rows: range) -> Callable[[psycopg.Connection], None]:
    def copy_rows(conn: psycopg.Connection) -> None:
        with conn.cursor().copy("COPY items (id, v) FROM STDIN") as copy:
            for row in rows:
                copy.write_row((row, row))

    return copy_rows


Write = tuple["str | Callable[[psycopg.Connection], None]", ...]

ABORTED: dict[str, Write] = {
    "insert_rollback": ("BEGIN", "INSERT INTO items VALUES (6, 6)", "ROLLBACK"),
    "delete_rollback": ("BEGIN", "DELETE FROM items", "ROLLBACK"),
    "update_rollback": ("BEGIN", "UPDATE items SET v = v + 1", "ROLLBACK"),
    "duplicate_key": (Fails("INSERT INTO items VALUES (1, 1)"),),
    "update_failing_midway": (Fails("UPDATE items SET v = 10 / (5 - id)"),),
    "copy_rollback": ("BEGIN", _copy(range(100, 150)), "ROLLBACK"),
    "savepoint_rolled_back_in_a_commit": (
        "BEGIN",
        "SAVEPOINT s",
        "INSERT INTO items VALUES (6, 6)",
        "DELETE FROM items",
        "ROLLBACK TO s",
        "COMMIT",
    ),
    "on_conflict_failing": (
        Fails("INSERT INTO items VALUES (7, 7), (1, 1) ON CONFLICT (id) DO UPDATE SET v = 1 / (EXCLUDED.v - 1)"),
    ),
    "truncate_rollback": ("BEGIN", "INSERT INTO items VALUES (6, 6)", "TRUNCATE items", "ROLLBACK"),
    "partition_rollback": ("BEGIN", "INSERT INTO events VALUES (3, 'us')", "ROLLBACK"),
    "upstream_refresh_rollback": (
        "INSERT INTO items VALUES (6, 6)",
        RECORD,
        "BEGIN",
        "REFRESH MATERIALIZED VIEW CONCURRENTLY upstream",
        "ROLLBACK",
    ),
}

COMMITTED: dict[str, Write] = {
    "insert": ("INSERT INTO items VALUES (6, 6)",),
    "update": ("UPDATE items SET v = v + 1 WHERE id = 1",),
    "delete": ("DELETE FROM items WHERE id = 1",),
    "truncate": ("TRUNCATE items",),
    "copy": (_copy(range(100, 101)),),
    "savepoint_released": ("BEGIN", "SAVEPOINT s", "INSERT INTO items VALUES (6, 6)", "RELEASE s", "COMMIT"),
    "after_a_rolled_back_savepoint": (
        "BEGIN",
        "SAVEPOINT s",
        "DELETE FROM items",
        "ROLLBACK TO s",
        "UPDATE items SET v = 0 WHERE id = 2",
        "COMMIT",
    ),
    "on_conflict_update": ("INSERT INTO items VALUES (1, 100) ON CONFLICT (id) DO UPDATE SET v = 100",),
    "partition": ("INSERT INTO events VALUES (3, 'us')",),
    "upstream_refresh": ("INSERT INTO items VALUES (6, 6)", RECORD, "REFRESH MATERIALIZED VIEW CONCURRENTLY upstream"),
    "insert_then_analyze": ("INSERT INTO items VALUES (6, 6)", "ANALYZE items"),
    "insert_then_vacuum_analyze": ("INSERT INTO items VALUES (6, 6)", "VACUUM ANALYZE items"),
    "delete_then_vacuum": ("DELETE FROM items WHERE id = 5", "VACUUM items"),
}


@pytest.fixture
def db(database: Database) -> Database:
    _write(database, SETUP)
    return database


def _publish(conn: psycopg.Connection) -> None:
    """Hand the session's counters to the statistics system now, not when it has been idle for a while."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT 1")


def _signals(database: Database) -> ChangeSignals:
    with database.connect() as conn:
        oid = conn.execute("SELECT 'public.watched'::regclass::oid").fetchone()[0]  # type: ignore[index]
        signals = read_change_signals(conn, [oid])[oid]
    assert signals.fingerprint is not None, signals.untracked_because
    return signals


def _fingerprint(database: Database) -> dict[str, Any]:
    return _signals(database).fingerprint or {}


def _changed_since(database: Database, before: dict[str, Any]) -> list[str]:
    """The sources that changed since ``before`` (or why all count as changed)."""
    now = _signals(database)
    return describe_changes(before, now.fingerprint or {}, now.source_names)


def _write(database: Database, write: Write) -> dict[str, Any] | None:
    """Run ``write`` in a session of its own that publishes its counters and ends; the signals read at ``RECORD``."""
    recorded = None
    with database.connect() as conn:
        for step in write:
            if step == RECORD:
                _publish(conn)
                recorded = _fingerprint(database)
            elif isinstance(step, Fails):
                with pytest.raises(psycopg.Error):
                    conn.execute(step)
            elif isinstance(step, str):
                conn.execute(step)
            else:
                step(conn)
        _publish(conn)
    return recorded


def _changes(database: Database, write: Write) -> list[str]:
    before = _fingerprint(database)
    before = _write(database, write) or before
    return _changed_since(database, before)


@pytest.mark.parametrize("kind", ABORTED)
def test_a_write_that_rolled_back_changes_nothing(db: Database, kind: str) -> None:
    assert _changes(db, ABORTED[kind]) == []


@pytest.mark.parametrize("kind", COMMITTED)
def test_every_committed_write_counts(db: Database, kind: str) -> None:
    changes = _changes(db, COMMITTED[kind])
    assert changes and set(changes) <= {"public.items", "public.events_us", "public.upstream"}, changes


@pytest.mark.parametrize(
    ("maintenance", "changes"),
    [
        ("VACUUM items", []),
        ("ANALYZE items", []),
        ("VACUUM ANALYZE items", []),
        ("ANALYZE items (v)", []),
        ("VACUUM FULL items", ["public.items"]),  # a new file: counted as a change (a false one)
    ],
)
def test_maintenance_alone_is_no_change(db: Database, maintenance: str, changes: list[str]) -> None:
    _write(db, ABORTED["insert_rollback"])  # dead tuples for VACUUM
    assert _changes(db, (maintenance,)) == changes


def test_a_rollback_then_vacuum_is_no_change(db: Database) -> None:
    before = _fingerprint(db)
    _write(db, ABORTED["insert_rollback"])
    _write(db, ("VACUUM items",))
    assert _changed_since(db, before) == []


def test_a_rollback_and_an_analyze_in_one_interval_count_as_a_change(db: Database) -> None:
    """The one case told apart too late: ANALYZE resets the committed-change counter, so attempted changes between
    the two readings count (a refresh too many, never one too few)."""
    before = _fingerprint(db)
    _write(db, ABORTED["insert_rollback"])
    _write(db, ("ANALYZE items",))
    assert _changed_since(db, before) == ["public.items"]


def test_skip_if_unchanged_skips_after_a_rolled_back_write(db: Database) -> None:
    with psycopg.connect(db.dsn) as conn:
        recorded = refresh_materialized_view(conn, VIEW, RefreshSettings(skip_if_unchanged=True)).fingerprint
        skipping = RefreshSettings(skip_if_unchanged=True, previous_fingerprint=recorded)
        _write(db, ABORTED["duplicate_key"])
        _write(db, ABORTED["insert_rollback"])
        started = time.monotonic()
        with pytest.raises(AirflowSkipException):
            refresh_materialized_view(conn, VIEW, skipping)
        assert time.monotonic() - started < 5, "no session of the database went idle: nothing to wait for"
        _write(db, COMMITTED["insert"])
        result = refresh_materialized_view(conn, VIEW, skipping)
    assert result.fingerprint != recorded
    with db.connect() as check:
        assert check.execute("SELECT items FROM watched").fetchone() == (6,)


def test_on_change_does_not_fire_for_rolled_back_writes_even_after_an_analyze(db: Database) -> None:
    """The watcher moves its baseline past writes that rolled back, so that a later ANALYZE does not fire it."""

    async def polls() -> AsyncIterator[dict[str, ViewState]]:
        async with await psycopg.AsyncConnection.connect(db.dsn, autocommit=True) as conn:
            writes: list[Write | None] = [
                None,  # the baseline
                ABORTED["insert_rollback"],
                ABORTED["delete_rollback"],
                ("ANALYZE items",),
                COMMITTED["update"],
            ]
            for write in writes:
                if write is not None:
                    await asyncio.to_thread(_write, db, write)
                yield await poll_views(conn, ["public.watched"])

    async def fired() -> list[list[str]]:
        trigger = SourceChangesTrigger(f"aborted_{db.name}", "public.watched", poll_interval=1, min_interval=0)
        return [event.payload["changed"] async for event in trigger._fire_on_change(polls())]

    assert asyncio.run(fired()) == [["public.items"]]  # the committed update only


@pytest.fixture
def own_server(pg_server: PostgresCluster) -> Iterator[PostgresCluster]:
    """A server of the same major whose autovacuum wakes up every second, and that allows prepared transactions."""
    cluster = PostgresCluster(pg_server.bin_dir, settings={"autovacuum_naptime": "1", "max_prepared_transactions": "2"})
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


def _wait_for_autovacuum(cluster: PostgresCluster, column: str, above: int) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            row = conn.execute(f"SELECT {column} FROM pg_stat_user_tables WHERE relname = 'items'").fetchone()
        if row and row[0] > above:
            return int(row[0])
        time.sleep(0.5)
    raise AssertionError(f"autovacuum did not raise {column} above {above} within 30 s")


def test_autovacuum_neither_hides_a_commit_nor_invents_one(own_server: PostgresCluster) -> None:
    from devtools.harness.databases import Database

    database = Database(own_server, "postgres")
    thresholds = (
        "ALTER TABLE items SET (autovacuum_vacuum_threshold = 1, autovacuum_vacuum_scale_factor = 0, "
        "autovacuum_vacuum_insert_threshold = 1, autovacuum_vacuum_insert_scale_factor = 0, "
        "autovacuum_analyze_threshold = 1, autovacuum_analyze_scale_factor = 0)"
    )
    _write(database, (*SETUP, thresholds))
    analyzed = _wait_for_autovacuum(own_server, "autoanalyze_count", 0)  # after the committed setup
    before = _fingerprint(database)
    vacuumed = _wait_for_autovacuum(own_server, "autovacuum_count", -1)
    _write(database, ("BEGIN", "INSERT INTO items SELECT g, g FROM generate_series(10, 500) g", "ROLLBACK"))
    _wait_for_autovacuum(own_server, "autovacuum_count", vacuumed)  # the dead tuples of the rollback
    assert _changed_since(database, before) == []

    _write(database, ("INSERT INTO items VALUES (6, 6)", "UPDATE items SET v = 0 WHERE id = 1"))
    _wait_for_autovacuum(own_server, "autoanalyze_count", analyzed)  # ANALYZE sets n_mod_since_analyze to 0
    assert _changed_since(database, before) == ["public.items"]


def test_a_prepared_transaction_counts_when_committed_only(own_server: PostgresCluster) -> None:
    from devtools.harness.databases import Database

    database = Database(own_server, "postgres")
    _write(database, SETUP)
    before = _fingerprint(database)
    _write(database, ("BEGIN", "INSERT INTO items VALUES (6, 6)", "PREPARE TRANSACTION 'rolled_back'"))
    _write(database, ("ROLLBACK PREPARED 'rolled_back'",))
    assert _changed_since(database, before) == []
    _write(database, ("BEGIN", "INSERT INTO items VALUES (6, 6)", "PREPARE TRANSACTION 'committed'"))
    _write(database, ("COMMIT PREPARED 'committed'",))
    assert _changed_since(database, before) == ["public.items"]
