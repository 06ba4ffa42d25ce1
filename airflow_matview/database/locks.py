"""Who holds what: the advisory lock that keeps refreshes of one view from overlapping, and lock holders."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_matview.database.steps import execute, fetchall, fetchone, step_function

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow_matview.database.steps import Steps

# pg_advisory_xact_lock(bigint) keys are (namespace << 32) | view oid; pg_locks shows them as classid/objid.
ADVISORY_NAMESPACE = 0x6D617476  # "matv"

_HOLDERS = """
SELECT a.pid, a.application_name, a.usename, a.state, a.xact_start, a.query_start, left(a.query, 120), {holding}
FROM pg_catalog.pg_locks l
JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
WHERE l.granted AND l.pid <> pg_catalog.pg_backend_pid() AND {condition}
ORDER BY a.xact_start NULLS LAST, a.pid
"""
_RELATION_HOLDERS = _HOLDERS.format(
    holding="l.mode || ' on ' || l.relation::regclass::text",
    condition="((l.relation = %(oid)s AND l.mode <> ALL(%(harmless)s)) "
    "OR (l.relation = ANY(%(sources)s) AND l.mode = 'AccessExclusiveLock'))",
)
_ADVISORY_HOLDERS = _HOLDERS.format(
    holding="'the refresh lock (an advisory lock) of ' || %(oid)s::oid::regclass::text",
    condition="l.locktype = 'advisory' AND l.classid = %(namespace)s AND l.objid = %(oid)s AND l.objsubid = 1",
)


def advisory_key(oid: int) -> int:
    return (ADVISORY_NAMESPACE << 32) | oid


@step_function
def wait_for_refresh_lock(oid: int) -> Steps[None]:
    """Wait (up to ``lock_timeout``) until no other refresh of the view runs, then hold it out until commit."""
    yield from execute("SELECT pg_catalog.pg_advisory_xact_lock(%s)", [advisory_key(oid)])


@step_function
def try_refresh_lock(oid: int) -> Steps[bool]:
    """Take the view's refresh lock if free; ``False`` when another refresh of the view is running."""
    row = yield from fetchone("SELECT pg_catalog.pg_try_advisory_xact_lock(%s)", [advisory_key(oid)])
    return bool(row and row[0])


@step_function
def describe_refresh_holders(oid: int) -> Steps[str]:
    """The sessions running a refresh of the view, as one line for an error message."""
    rows = yield from fetchall(_ADVISORY_HOLDERS, {"namespace": ADVISORY_NAMESPACE, "oid": oid})
    return _describe(rows) or "a session that has finished since"


@step_function
def describe_lock_holders(oid: int, concurrently: bool, source_oids: Sequence[int] = ()) -> Steps[str]:
    """The sessions holding a lock that the refresh's locks conflict with, on the view or on a table it reads.

    A plain refresh takes ACCESS EXCLUSIVE on the view, which every lock blocks; CONCURRENTLY takes EXCLUSIVE,
    which readers' ACCESS SHARE does not block. Reading the sources takes ACCESS SHARE, which only ACCESS
    EXCLUSIVE blocks (ALTER TABLE, TRUNCATE, VACUUM FULL, a plain refresh of a source view).
    """
    harmless = ["AccessShareLock"] if concurrently else []
    params = {"oid": oid, "harmless": harmless, "sources": list(source_oids)}
    rows = yield from fetchall(_RELATION_HOLDERS, params)
    return _describe(rows) or "a session that has released its lock since"


def _describe(rows: list[tuple[object, ...]]) -> str:
    parts = []
    for pid, application, user, state, xact_start, query_start, query, holding in rows:
        started = f"{xact_start:%Y-%m-%d %H:%M:%S %Z}" if xact_start else "unknown"
        last_query = " ".join(str(query or "").split())
        parts.append(
            f"pid {pid} (application_name {application or ''!r}, user {user}, state {state}, "
            f"transaction started {started}, holding {holding}, "
            f"query {'started ' + format(query_start, '%H:%M:%S') if query_start else ''}: {last_query!r})"
        )
    return "; ".join(parts)
