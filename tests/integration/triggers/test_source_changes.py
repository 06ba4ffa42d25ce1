"""The on_change trigger's polls against real PostgreSQL servers: which sources changed, views that cannot be
watched, two queries per poll, one event per min_interval, and a database that goes away and comes back."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import psycopg

from airflow_matview.database.change_signals import describe_changes
from airflow_matview.triggers.source_changes import SourceChangesTrigger, ViewState, poll_views
from devtools.harness.pgcluster import embedded_cluster
from devtools.harness.scenario import VIEW, add_new_users, create_reference_scenario

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import pytest
    from airflow.triggers.base import TriggerEvent

    from devtools.harness.databases import Database


async def _poll(database: Database, names: list[str]) -> dict[str, ViewState]:
    async with await psycopg.AsyncConnection.connect(database.dsn, autocommit=True) as conn:
        return await poll_views(conn, names)


def test_a_poll_names_the_sources_that_changed(database: Database, pg: psycopg.Connection) -> None:
    create_reference_scenario(pg)
    before = asyncio.run(_poll(database, [VIEW]))[VIEW]
    assert before.problem is None and before.fingerprint is not None
    assert asyncio.run(_poll(database, [VIEW]))[VIEW].fingerprint == before.fingerprint
    with database.connect() as writer:  # the writer's counters reach the statistics when its session ends
        add_new_users(writer)
    after = asyncio.run(_poll(database, [VIEW]))[VIEW]
    assert describe_changes(before.fingerprint, after.fingerprint, after.source_names) == ["public.polls_user"]


def test_a_view_dropped_and_created_again(database: Database, pg: psycopg.Connection) -> None:
    create_reference_scenario(pg)
    before = asyncio.run(_poll(database, [VIEW]))[VIEW]
    assert before.fingerprint is not None
    pg.execute("DROP MATERIALIZED VIEW polls_user_matt_view")
    gone = asyncio.run(_poll(database, [VIEW]))[VIEW]
    assert gone.fingerprint is None and gone.problem is not None and "does not exist" in gone.problem
    pg.execute("CREATE MATERIALIZED VIEW polls_user_matt_view AS SELECT * FROM polls_user WHERE age >= 30")
    again = asyncio.run(_poll(database, [VIEW]))[VIEW]
    assert describe_changes(before.fingerprint, again.fingerprint, again.source_names) == [
        "the view was dropped and created again"
    ]


def test_unwatchable_sources_say_why(database: Database, pg: psycopg.Connection) -> None:
    pg.execute("CREATE TABLE t (id int)")
    pg.execute("CREATE FUNCTION n() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM public.t'")
    pg.execute("CREATE MATERIALIZED VIEW by_function AS SELECT n() AS n")
    pg.execute("CREATE SEQUENCE s")
    pg.execute("CREATE MATERIALIZED VIEW by_sequence AS SELECT last_value FROM s")
    pg.execute("CREATE TABLE plain (id int)")
    states = asyncio.run(_poll(database, ["public.by_function", "public.by_sequence", "public.plain"]))
    assert "uses function n()" in str(states["public.by_function"].problem)
    assert "refreshes on its schedule only" in str(states["public.by_function"].problem)
    assert "s cannot be tracked (a foreign table or a sequence)" in str(states["public.by_sequence"].problem)
    assert states["public.plain"].problem == "it is not a materialized view"


class _CountingConnection(psycopg.AsyncConnection[Any]):
    statements = 0

    async def execute(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        type(self).statements += 1
        return await super().execute(*args, **kwargs)


def test_one_poll_is_two_queries_for_any_number_of_views(database: Database, pg: psycopg.Connection) -> None:
    create_reference_scenario(pg)
    pg.execute(
        "DO $$ BEGIN FOR i IN 1..200 LOOP "
        "EXECUTE format('CREATE MATERIALIZED VIEW v%s AS SELECT * FROM polls_user WHERE id > %s', i, i); "
        "END LOOP; END $$"
    )
    names = [f"public.v{i}" for i in range(1, 201)]

    async def poll() -> dict[str, ViewState]:
        async with await _CountingConnection.connect(database.dsn, autocommit=True) as conn:
            return await poll_views(conn, names)

    _CountingConnection.statements = 0
    states = asyncio.run(poll())
    assert _CountingConnection.statements == 2
    assert all(state.fingerprint is not None for state in states.values())
    assert {source for state in states.values() for source in state.source_names.values()} == {"public.polls_user"}


async def _events(trigger: SourceChangesTrigger, seconds: float) -> list[TriggerEvent]:
    events: list[TriggerEvent] = []

    async def collect(stream: AsyncIterator[TriggerEvent]) -> None:
        async for event in stream:
            events.append(event)

    task = asyncio.ensure_future(collect(trigger.run()))
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return events


def test_the_trigger_fires_once_per_min_interval_and_survives_the_database_going_away(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = embedded_cluster()
    cluster.start()
    try:
        cluster.create_database("app")
        monkeypatch.setenv("AIRFLOW_CONN_POSTGRES_DEFAULT", cluster.uri("app"))
        with psycopg.connect(cluster.dsn("app"), autocommit=True) as conn:
            create_reference_scenario(conn)
        trigger = SourceChangesTrigger("postgres_default", VIEW, poll_interval=0.2, min_interval=2)

        async def scenario() -> list[tuple[float, TriggerEvent]]:
            fired: list[tuple[float, TriggerEvent]] = []
            start = time.monotonic()

            async def collect() -> None:
                async for event in trigger.run():
                    fired.append((time.monotonic() - start, event))

            task = asyncio.ensure_future(collect())
            await asyncio.sleep(1)  # the baseline
            for user in range(100, 130):  # a storm: a commit every 0.1 s for 3 s
                await asyncio.to_thread(_insert, cluster.dsn("app"), user)
                await asyncio.sleep(0.1)
            await asyncio.sleep(3)
            await asyncio.to_thread(cluster.stop)
            await asyncio.sleep(4)
            await asyncio.to_thread(cluster.start)
            await asyncio.to_thread(_insert, cluster.dsn("app"), 500)
            await asyncio.sleep(10)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return fired

        with caplog.at_level("WARNING"):
            fired = asyncio.run(scenario())
    finally:
        cluster.destroy()
    # The storm: about one event per 2 s; the last commit of the storm is seen by the last of them.
    storm = [event for at, event in fired if at < 8]
    assert 2 <= len(storm) <= 3, fired
    assert all(event.payload["changed"] == ["public.polls_user"] for event in storm)
    # After the outage: the change committed when it came back fires (with the server's statistics restart).
    after = [event for at, event in fired if at >= 8]
    assert len(after) == 1, fired
    assert "public.polls_user" in after[0].payload["changed"]
    outage = [record.getMessage() for record in caplog.records if "postgres_default" in record.getMessage()]
    assert len(outage) == 2, outage  # one line when it went away, one when it came back: no flood
    assert "cannot watch 1 view(s)" in outage[0] and "is back after" in outage[1]


def _insert(dsn: str, user: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO polls_user VALUES (%s, 'storm', 40)", (user,))
