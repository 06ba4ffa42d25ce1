"""The on_change watcher's event names the sources that changed by name, also one that left the view's sources
(a partition DETACHed, a table dropped from a plain view in between) or joined them (a partition ATTACHed): not by
its oid. Real polls of a real server feed the trigger's own event logic."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import psycopg

from airflow_matview.triggers.source_changes import SourceChangesTrigger, ViewState, poll_views

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from devtools.harness.databases import Database

VIEW = "public.totals"


async def _events(database: Database, change: str) -> list[dict[str, Any]]:
    """The trigger's events for: a poll (the baseline), ``change``, a poll."""

    async def polls() -> AsyncIterator[dict[str, ViewState]]:
        async with await psycopg.AsyncConnection.connect(database.dsn, autocommit=True) as conn:
            yield await poll_views(conn, [VIEW])
            await conn.execute(change)
            yield await poll_views(conn, [VIEW])

    # A connection id of its own: the trigger keeps, per connection and view, when it last fired in this process.
    trigger = SourceChangesTrigger(database.name, VIEW, poll_interval=1, min_interval=0)
    return [event.payload async for event in trigger._fire_on_change(polls())]


def _partitions(pg: psycopg.Connection) -> None:
    pg.execute("CREATE TABLE public.sales (day date, amount int) PARTITION BY RANGE (day)")
    pg.execute(
        "CREATE TABLE public.sales_2025 PARTITION OF public.sales FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')"
    )
    pg.execute(
        "CREATE TABLE public.\"Sales 2026\" PARTITION OF public.sales FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"
    )
    pg.execute("CREATE TABLE public.sales_2027 (day date, amount int)")
    pg.execute(f"CREATE MATERIALIZED VIEW {VIEW} AS SELECT sum(amount) AS total FROM public.sales")


def test_a_detached_partition_is_named(database: Database, pg: psycopg.Connection) -> None:
    _partitions(pg)
    events = asyncio.run(_events(database, 'ALTER TABLE public.sales DETACH PARTITION public."Sales 2026"'))
    assert [event["changed"] for event in events] == [['public."Sales 2026" (no longer read)']]


def test_an_attached_partition_is_named(database: Database, pg: psycopg.Connection) -> None:
    _partitions(pg)
    attach = (
        "ALTER TABLE public.sales ATTACH PARTITION public.sales_2027 FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')"
    )
    events = asyncio.run(_events(database, attach))
    assert [event["changed"] for event in events] == [["public.sales_2027 (newly read)"]]


def test_a_dropped_partition_is_named(database: Database, pg: psycopg.Connection) -> None:
    _partitions(pg)
    events = asyncio.run(_events(database, "DROP TABLE public.sales_2025"))
    assert [event["changed"] for event in events] == [["public.sales_2025 (no longer read)"]]
