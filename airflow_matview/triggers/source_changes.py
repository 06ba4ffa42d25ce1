"""The trigger behind ``on_change``: it watches the change signals of a view's sources from the triggerer.

Every watched view on one Airflow connection (and one poll interval) shares one poll loop and one database
connection (Airflow 3.3's shared streams): each poll is two catalog queries, whatever the number of views: one
resolves the views' names, one reads the change signals of all their sources (the same signals as
``skip_if_unchanged``, see :mod:`airflow_matview.catalog`). Each trigger then compares its own view's signals with
its baseline: the signals when it last fired, kept in Airflow's asset state store, so that a change committed
while the triggerer was down still fires after a restart. Nothing is installed on the user's tables.

This module is imported at DAG-parse time (the DAG's ``AssetWatcher`` holds a trigger instance), so psycopg and
everything that talks to a database are imported only inside the triggerer's coroutines.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_matview.catalog import _READS, Relation, _untracked_because
from airflow_matview.compat import BaseEventTrigger
from airflow_matview.identifiers import QualifiedName, parse_qualified_name

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Hashable

    from airflow.triggers.base import TriggerEvent
    from psycopg import AsyncConnection

log = logging.getLogger(__name__)

CLASSPATH = "airflow_matview.triggers.source_changes.SourceChangesTrigger"
BASELINE_KEY = "airflow_matview.on_change.baseline"
FIRED_AT_KEY = "airflow_matview.on_change.fired_at"
# After a failed poll: wait 1 s, 2 s, 4 s, ... up to this long before trying again.
MAX_BACKOFF_SECONDS = 60.0

# The materialized views among the watched names (a view dropped and recreated gets a new oid: resolved every poll).
_RESOLVE = """
SELECT w.name, c.oid, c.relkind
FROM ROWS FROM (pg_catalog.unnest(%(schemas)s::text[]), pg_catalog.unnest(%(names)s::text[]),
               pg_catalog.unnest(%(labels)s::text[])) AS w(schema, relname, name)
JOIN pg_catalog.pg_namespace n ON n.nspname = w.schema
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = w.relname
"""

# The change signals of every watched view's sources in one statement: catalog._READS walks the views' reads
# (through plain views) for all of them at once, and each row below is one view's signals, as skip_if_unchanged
# reads them for one view: per source and per partition or inheritance child, relfilenode and the cumulative
# insert/update/delete counters; the versions of the plain views in between; what makes the signals blind.
_WATCH_SIGNALS = (
    _READS
    + """,
sources AS (
    SELECT DISTINCT reads.matview, c.oid
    FROM reads JOIN pg_catalog.pg_class c ON c.oid = reads.relation AND c.relkind NOT IN ('v', 'i', 'I')
),
tree(matview, oid) AS (
    SELECT sources.matview, sources.oid FROM sources
  UNION
    SELECT tree.matview, i.inhrelid FROM tree JOIN pg_catalog.pg_inherits i ON i.inhparent = tree.oid
),
rules AS (
    SELECT ruled.matview, r.oid, r.ev_class, r.xmin::text::bigint AS version
    FROM (SELECT m.oid AS matview, m.oid AS relation FROM pg_catalog.unnest(%(oids)s::oid[]) AS m(oid)
          UNION
          SELECT reads.matview, reads.relation FROM reads
          JOIN pg_catalog.pg_class c ON c.oid = reads.relation AND c.relkind = 'v') AS ruled
    JOIN pg_catalog.pg_rewrite r ON r.ev_class = ruled.relation
)
SELECT m.oid,
       signals.sources,
       COALESCE(signals.untrackable, '{}'),
       definitions.versions,
       COALESCE(functions.names, '{}'),
       pg_catalog.json_build_array(pg_catalog.pg_postmaster_start_time()::text,
                                   (SELECT pg_catalog.pg_stat_get_db_stat_reset_time(d.oid)::text
                                    FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())),
       pg_catalog.current_setting('track_counts')::boolean
FROM pg_catalog.unnest(%(oids)s::oid[]) AS m(oid)
LEFT JOIN (
    SELECT tree.matview,
           pg_catalog.json_agg(pg_catalog.json_build_array(c.oid, n.nspname, c.relname, c.relfilenode,
                                                           pg_catalog.pg_stat_get_tuples_inserted(c.oid),
                                                           pg_catalog.pg_stat_get_tuples_updated(c.oid),
                                                           pg_catalog.pg_stat_get_tuples_deleted(c.oid))
                               ORDER BY c.oid) AS sources,
           pg_catalog.array_agg(c.oid::regclass::text ORDER BY c.oid)
               FILTER (WHERE c.relkind NOT IN ('r', 'p', 'm')) AS untrackable
    FROM tree
    JOIN pg_catalog.pg_class c ON c.oid = tree.oid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    GROUP BY tree.matview
) AS signals ON signals.matview = m.oid
LEFT JOIN (
    SELECT rules.matview,
           pg_catalog.json_agg(pg_catalog.json_build_array(rules.ev_class, rules.version) ORDER BY rules.ev_class)
               FILTER (WHERE rules.ev_class <> rules.matview) AS versions
    FROM rules GROUP BY rules.matview
) AS definitions ON definitions.matview = m.oid
LEFT JOIN (
    SELECT rules.matview,
           pg_catalog.array_agg(DISTINCT pg_catalog.pg_describe_object(d.refclassid, d.refobjid, 0)) AS names
    FROM rules
    JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = rules.oid
    WHERE d.refclassid IN ('pg_catalog.pg_proc'::regclass, 'pg_catalog.pg_operator'::regclass,
                           'pg_catalog.pg_cast'::regclass)
      AND d.refobjid >= 16384
    GROUP BY rules.matview
) AS functions ON functions.matview = m.oid
"""
)


@dataclass(frozen=True)
class ViewState:
    """What one poll saw of one watched view.

    :param fingerprint: its sources' change signals (JSON-ready), or ``None`` when they cannot be watched.
    :param names: the display names of its sources by oid (as text), to say which ones changed.
    :param problem: why the view cannot be watched now (missing, not a materialized view, blind signals).
    """

    fingerprint: dict[str, Any] | None
    names: dict[str, str]
    problem: str | None = None


# The views each shared poll watches, registered by the triggers of its group (the triggerer runs them all in
# one event loop, alongside the poll): shared-stream key -> view name -> number of triggers watching it.
_WATCHED: dict[Hashable, Counter[str]] = {}
# When each watched view last fired in this triggerer, and its signals then: min_interval also holds across a
# trigger's restarts within the process and between two instances of one trigger (conn_id, view).
_LAST_FIRED: dict[tuple[str, str], tuple[float, dict[str, Any] | None]] = {}


class SourceChangesTrigger(BaseEventTrigger):  # type: ignore[misc,valid-type,unused-ignore]
    """Fire when the sources of a materialized view change (for an ``AssetWatcher``).

    :param conn_id: the Airflow connection to the view's database.
    :param view: the view, ``schema.name`` as in SQL.
    :param poll_interval: seconds between two polls of the change signals.
    :param min_interval: seconds: at most one event per this long, however many changes.
    """

    def __init__(self, conn_id: str, view: str, poll_interval: float = 10.0, min_interval: float = 60.0) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.view = view
        self.poll_interval = float(poll_interval)
        self.min_interval = float(min_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return CLASSPATH, {
            "conn_id": self.conn_id,
            "view": self.view,
            "poll_interval": self.poll_interval,
            "min_interval": self.min_interval,
        }

    def shared_stream_key(self) -> Hashable:
        return ("airflow_matview.source_changes", self.conn_id, self.poll_interval)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Without shared streams (Airflow before 3.3): a poll loop of this trigger's own."""
        async for event in self._fire_on_change(_poll(self.conn_id, self.poll_interval, Counter([self.view]))):
            yield event

    @classmethod
    async def open_shared_stream(cls, kwargs: dict[str, Any]) -> AsyncIterator[dict[str, ViewState]]:
        """Poll the change signals of every view watched through ``kwargs['conn_id']``, forever.

        Each raw event maps the watched views' names to what the poll saw. When the database cannot be reached,
        it logs once, retries with a backoff doubling up to a minute, and logs once more when it is back.
        """
        conn_id, poll_interval = kwargs["conn_id"], float(kwargs["poll_interval"])
        watched = _WATCHED.setdefault(("airflow_matview.source_changes", conn_id, poll_interval), Counter())
        async for states in _poll(conn_id, poll_interval, watched):
            yield states

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        """Watch this view in the group's poll, and fire when its signals change."""
        key = self.shared_stream_key()
        _WATCHED.setdefault(key, Counter())[self.view] += 1
        try:
            async for event in self._fire_on_change(shared_stream):
                yield event
        finally:
            _WATCHED[key][self.view] -= 1

    async def _fire_on_change(self, stream: AsyncIterator[dict[str, ViewState]]) -> AsyncIterator[TriggerEvent]:
        """Fire when this view's signals differ from the baseline, at most once per ``min_interval``."""
        from airflow.triggers.base import TriggerEvent

        baseline: dict[str, Any] | None = await self._stored(BASELINE_KEY)
        fired_at = float(await self._stored(FIRED_AT_KEY) or 0.0)
        problem: str | None = None
        async for states in stream:
            state = states.get(self.view)
            if state is None:
                continue  # registered after this poll started
            shared_at, shared_baseline = _LAST_FIRED.get((self.conn_id, self.view), (0.0, None))
            if shared_at > fired_at:  # another instance of this trigger in this triggerer fired since
                fired_at, baseline = shared_at, shared_baseline
            if state.problem != problem:
                problem = state.problem
                if problem:
                    self.log.warning("airflow-matview: not watching %s: %s", self.view, problem)
                else:
                    self.log.info("airflow-matview: watching %s", self.view)
            if state.fingerprint is None:
                continue
            if baseline is None:
                baseline = state.fingerprint
                await self._store(BASELINE_KEY, baseline)
                self.log.info("airflow-matview: recorded the change signals of %s as its baseline", self.view)
                continue
            changes = describe_changes(baseline, state)
            if not changes or time.time() - fired_at < self.min_interval:
                continue
            fired_at = time.time()
            _LAST_FIRED[(self.conn_id, self.view)] = (fired_at, state.fingerprint)
            yield TriggerEvent({"view": self.view, "changed": changes, "detected_at": fired_at})
            # Stored after the event left: a crash in between fires again after a restart rather than never.
            baseline = state.fingerprint
            await self._store(BASELINE_KEY, baseline)
            await self._store(FIRED_AT_KEY, fired_at)

    async def _stored(self, key: str) -> Any:
        store = getattr(self, "asset_state_store", None)
        if store is None:
            return None
        try:
            return await store.aget(key)
        except Exception as exc:  # no stored baseline: the first poll records one
            self.log.warning("airflow-matview: cannot read %s of %s: %s", key, self.view, _one_line(exc))
            return None

    async def _store(self, key: str, value: Any) -> None:
        store = getattr(self, "asset_state_store", None)
        if store is None:
            return
        try:
            await store.aset(key, value)
        except Exception as exc:  # the next poll still works; only a restart would not know
            self.log.warning("airflow-matview: cannot store %s of %s: %s", key, self.view, _one_line(exc))


async def _poll(conn_id: str, poll_interval: float, watched: Counter[str]) -> AsyncIterator[dict[str, ViewState]]:
    """Poll the change signals of the views in ``watched``, forever; each item maps their names to what a poll saw.

    When the database cannot be reached it logs once, retries with a backoff doubling up to a minute, and logs
    once more when it is back.
    """
    conn: AsyncConnection | None = None
    failing_since: float | None = None
    backoff = 1.0
    try:
        while True:
            names = sorted(name for name, count in watched.items() if count > 0)
            try:
                if names:
                    if conn is None or conn.closed:
                        conn = await _connect(conn_id)
                    states = await poll_views(conn, names)
                    if failing_since is not None:
                        log.warning(
                            "airflow-matview: connection %r is back after %.0f s; watching %d view(s) again",
                            conn_id,
                            time.monotonic() - failing_since,
                            len(names),
                        )
                        failing_since, backoff = None, 1.0
                    yield states
            except Exception as exc:  # any failure of the database: log, back off, resume
                if conn is not None:
                    await conn.close()
                    conn = None
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning(
                        "airflow-matview: cannot watch %d view(s) on connection %r: %s; retrying with a backoff "
                        "up to %.0f s, and saying nothing more until it works again",
                        len(names),
                        conn_id,
                        _one_line(exc),
                        MAX_BACKOFF_SECONDS,
                    )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            await asyncio.sleep(poll_interval)
    finally:
        if conn is not None:
            await conn.close()


async def poll_views(conn: AsyncConnection, names: list[str]) -> dict[str, ViewState]:
    """One poll: the change signals of the views ``names`` (``schema.name`` as in SQL), in two queries."""
    parsed = {name: parse_qualified_name(name) for name in names}
    cursor = await conn.execute(
        _RESOLVE,
        {
            "schemas": [qualified.schema for qualified in parsed.values()],
            "names": [qualified.name for qualified in parsed.values()],
            "labels": list(parsed),
        },
    )
    found = {name: (int(oid), relkind) for name, oid, relkind in await cursor.fetchall()}
    states: dict[str, ViewState] = {}
    oids: dict[int, str] = {}
    for name in names:
        if name not in found:
            states[name] = ViewState(None, {}, "it does not exist (yet); watching for it to be created")
        elif found[name][1] != "m":
            states[name] = ViewState(None, {}, "it is not a materialized view")
        else:
            oids[found[name][0]] = name
    if not oids:
        return states
    cursor = await conn.execute(_WATCH_SIGNALS, {"oids": list(oids)})
    for oid, sources, untrackable, definitions, functions, epoch, track_counts in await cursor.fetchall():
        relations = [
            Relation(int(source[0]), QualifiedName(source[1], source[2]), "r", True) for source in sources or []
        ]
        why = _untracked_because(relations, list(untrackable), list(functions), bool(track_counts))
        name = oids[int(oid)]
        if why is not None:
            states[name] = ViewState(None, {}, f"{why}; it refreshes on its schedule only")
            continue
        states[name] = ViewState(
            fingerprint={
                "view": int(oid),
                "sources": {str(source[0]): [int(value) for value in source[3:]] for source in sources},
                "definitions": definitions or [],
                "statistics_since": epoch,
            },
            names={str(relation.oid): str(relation.name) for relation in relations},
        )
    return states


def describe_changes(baseline: dict[str, Any], state: ViewState) -> list[str]:
    """What differs between the baseline and this poll: the changed sources by name, or why all count as changed."""
    current = state.fingerprint
    assert current is not None
    if baseline.get("view") != current["view"]:
        return ["the view was dropped and created again"]
    changes = [
        state.names.get(oid, oid)
        for oid in sorted(set(baseline.get("sources", {})) | set(current["sources"]))
        if baseline.get("sources", {}).get(oid) != current["sources"].get(oid)
    ]
    if baseline.get("definitions") != current["definitions"]:
        changes.append("a plain view in between was redefined")
    if baseline.get("statistics_since") != current["statistics_since"]:
        changes.append("the server's statistics restarted (server restart or pg_stat_reset)")
    return changes


async def _connect(conn_id: str) -> AsyncConnection:
    """An autocommit connection (a fresh snapshot per poll, never idle in a transaction) from an Airflow
    connection, with the same arguments as the postgres provider's ``PostgresHook.get_conn``."""
    import psycopg

    from airflow_matview.compat import AirflowNotFoundException
    from airflow_matview.connection import aget_airflow_connection, hook_arguments, unreadable_connection
    from airflow_matview.exceptions import MatviewConfigurationError

    try:
        connection = await aget_airflow_connection(conn_id)
    except AirflowNotFoundException:
        # Environment variables only: no call that would block the triggerer's event loop.
        if unreadable := unreadable_connection(conn_id, local_only=True):  # not "isn't defined" when it is
            raise MatviewConfigurationError(f"Airflow connection {conn_id!r} {unreadable}") from None
        raise
    arguments: dict[str, Any] = {
        "application_name": f"airflow-matview watcher ({conn_id})",
        "connect_timeout": 10,
        **hook_arguments(connection),
    }
    return await psycopg.AsyncConnection.connect(
        **{name: value for name, value in arguments.items() if value is not None}, autocommit=True
    )


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"
