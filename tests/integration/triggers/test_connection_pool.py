"""The triggerer's connection pool on a real server: bounded, reused, errors as a fresh connection's, and a refresh
on a pooled connection leaves nothing of itself on the session."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest

from airflow_matview.connections import aconnect
from airflow_matview.database.refresh_settings import RefreshSettings
from airflow_matview.exceptions import MatviewRefreshError, MatviewSetupError
from airflow_matview.triggers import connection_pool
from airflow_matview.triggers.connection_pool import ConnectionPool, close_pools, pool_for
from airflow_matview.triggers.deferred_refresh import RefreshTrigger

if TYPE_CHECKING:
    import psycopg

    from devtools.harness.databases import Database


def backends(pg: psycopg.Connection) -> list[tuple[int, str, str]]:
    rows = pg.execute(
        "SELECT pid, state, application_name FROM pg_stat_activity WHERE datname = current_database() "
        "AND backend_type = 'client backend' AND pid <> pg_backend_pid() ORDER BY pid"
    ).fetchall()
    return [(int(pid), str(state), str(name)) for pid, state, name in rows]


def test_at_most_size_connections_are_lent_and_the_rest_wait(
    pg: psycopg.Connection, postgres_default: Database
) -> None:
    async def borrowers() -> tuple[int, int, int]:
        pool = ConnectionPool("postgres_default", 2)
        most = 0

        async def borrow() -> None:
            nonlocal most
            async with pool.connection("test") as conn:
                await conn.execute("SELECT pg_sleep(0.2)")
                most = max(most, len(backends(pg)))

        await asyncio.gather(*(borrow() for _ in range(6)))
        await pool.close()
        return most, pool.stats.opened, pool.stats.most_in_use

    most, opened, in_use = asyncio.run(borrowers())
    assert (most, opened, in_use) == (2, 2, 2)
    deadline = time.monotonic() + 5
    while backends(pg) and time.monotonic() < deadline:  # a closed connection's server process ends a moment later
        time.sleep(0.05)
    assert backends(pg) == []


def test_a_connection_is_reused_and_one_left_in_a_transaction_is_not(
    pg: psycopg.Connection, postgres_default: Database
) -> None:
    async def borrow_three() -> tuple[list[int], int, int]:
        pool = ConnectionPool("postgres_default", 4)
        pids = []
        for number in range(3):
            async with pool.connection("test") as conn:
                pids.append(conn.info.backend_pid)
                if number == 1:
                    await conn.execute("BEGIN")  # given back in a transaction: dropped
        await pool.close()
        return pids, pool.stats.opened, pool.stats.reused

    pids, opened, reused = asyncio.run(borrow_three())
    assert pids[0] == pids[1] != pids[2]
    assert (opened, reused) == (2, 1)


@pytest.mark.parametrize(
    ("uri", "error"),
    [
        ("postgresql://postgres@127.0.0.1:{port}/no_such_db", MatviewSetupError),
        ("postgresql://no_such_role@127.0.0.1:{port}/postgres", MatviewSetupError),
        ("postgresql://postgres@127.0.0.1:1/postgres", MatviewRefreshError),
    ],
)
def test_a_failed_connection_fails_at_once_with_the_error_of_a_fresh_one(
    database: Database, monkeypatch: pytest.MonkeyPatch, uri: str, error: type[Exception]
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_TARGET", uri.format(port=database.server.port))

    async def both() -> tuple[BaseException, BaseException]:
        with pytest.raises(error) as fresh:
            await aconnect("target", "refresh public.v")
        with pytest.raises(error) as pooled:
            async with ConnectionPool("target", 2).connection("refresh public.v"):
                pass
        return fresh.value, pooled.value

    fresh, pooled = asyncio.run(both())
    assert str(pooled) == str(fresh)


def test_a_refresh_leaves_no_name_or_timeout_on_the_pooled_session(
    pg: psycopg.Connection, postgres_default: Database
) -> None:
    pg.execute("CREATE TABLE t (id integer PRIMARY KEY)")
    pg.execute("CREATE MATERIALIZED VIEW v AS SELECT id FROM t")

    async def refresh_and_look() -> tuple[dict[str, Any], list[Any]]:
        settings = RefreshSettings(application_name="airflow-matview d.refresh try 1", statement_timeout=60)
        outcome = await RefreshTrigger("public.v", "postgres_default", {}).refresh(
            "public.v", "postgres_default", settings
        )
        async with pool_for("postgres_default").connection("look") as conn:
            cursor = await conn.execute(
                "SELECT current_setting('application_name'), current_setting('statement_timeout')"
            )
            seen = list(await cursor.fetchall())
        await close_pools()
        return outcome, seen

    outcome, seen = asyncio.run(refresh_and_look())
    assert outcome["status"] == "success", outcome
    assert seen == [("", "0")], "the next borrower sees the refresh's name or timeout"


def test_a_changed_connection_closes_the_connections_to_the_old_one(
    pg: psycopg.Connection, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_TARGET", database.uri)
    monkeypatch.setattr(connection_pool, "LOOKUP_SECONDS", 0.0)

    async def switch() -> tuple[int, int]:
        pool = ConnectionPool("target", 2)
        async with pool.connection("test") as conn:
            first = conn.info.backend_pid
        monkeypatch.setenv("AIRFLOW_CONN_TARGET", database.uri + "?application_name=changed")
        async with pool.connection("test") as conn:
            second = conn.info.backend_pid
        await pool.close()
        return first, second

    first, second = asyncio.run(switch())
    assert first != second
    assert first not in [pid for pid, _, _ in backends(pg)], "the connection to the old definition stayed open"
