"""PostgreSQL 17+ refreshes a materialized view with ``search_path = pg_catalog, pg_temp``: find views that break.

The view's own query is stored with its names resolved, but the bodies of the functions it calls are resolved when
they run. A function that names a table or another function without a schema (``FROM orders``) and sets no
``search_path`` of its own worked on PostgreSQL 16 and fails on 17 with "relation ... does not exist".

:func:`restricted_search_path_problems` tells without refreshing anything: it plans the view's query (``EXPLAIN``,
which inlines SQL functions but runs nothing) under the restricted ``search_path`` in a transaction that is rolled
back, and lists the functions the view calls whose body is resolved at run time with no ``search_path`` set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from airflow_matview.database.steps import execute, fetchall, fetchone, in_transaction, step_function

if TYPE_CHECKING:
    from airflow_matview.database.steps import Steps

RESTRICTED = "pg_catalog, pg_temp"
FIX = (
    "schema-qualify the names in the function's body (public.orders, not orders), "
    "or give it its own: ALTER FUNCTION {function} SET search_path = {schema}"
)

# The user functions a view calls, directly, through an operator, or through the plain views it reads, whose body
# is a string resolved when it runs (not a BEGIN ATOMIC body) and that do not set their own search_path.
_UNPINNED_FUNCTIONS = """
WITH RECURSIVE rels(oid) AS (
    SELECT %(oid)s::oid
    UNION
    SELECT c.oid FROM rels
    JOIN pg_catalog.pg_rewrite r ON r.ev_class = rels.oid
    JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
         AND d.refclassid = 'pg_catalog.pg_class'::regclass
    JOIN pg_catalog.pg_class c ON c.oid = d.refobjid AND c.relkind = 'v'
),
deps AS (
    SELECT d.refclassid, d.refobjid FROM rels
    JOIN pg_catalog.pg_rewrite r ON r.ev_class = rels.oid
    JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
),
funcs AS (
    SELECT refobjid AS oid FROM deps WHERE refclassid = 'pg_catalog.pg_proc'::regclass
    UNION
    SELECT o.oprcode FROM deps JOIN pg_catalog.pg_operator o ON o.oid = deps.refobjid
    WHERE deps.refclassid = 'pg_catalog.pg_operator'::regclass
)
SELECT pg_catalog.format('%%I.%%I(%%s)', n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid)),
       n.nspname
FROM funcs
JOIN pg_catalog.pg_proc p ON p.oid = funcs.oid
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_language l ON l.oid = p.prolang
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND l.lanname NOT IN ('c', 'internal')
  AND p.prosqlbody IS NULL
  AND NOT EXISTS (SELECT FROM pg_catalog.unnest(p.proconfig) AS setting WHERE setting LIKE 'search\\_path=%%')
ORDER BY 1
"""


@dataclass
class SearchPathReport:
    """What the restricted ``search_path`` does to one view.

    :param error: why planning the view's query fails under it (None: it plans).
    :param unpinned: functions the view calls that set no ``search_path``, as (signature, schema).
    """

    error: str | None = None
    unpinned: list[tuple[str, str]] = field(default_factory=list)


def _plan_error(oid: int, search_path: str | None) -> Steps[psycopg.Error | None]:
    """The error of planning the view's query (with ``search_path`` set first), in a rolled-back transaction."""
    try:
        yield from in_transaction(_plan(oid, search_path), rollback=True)
    except psycopg.Error as error:
        return error
    return None


def _plan(oid: int, search_path: str | None) -> Steps[None]:
    # Planning takes ACCESS SHARE locks: never queue behind a running plain refresh or DDL for long.
    yield from execute("SET LOCAL lock_timeout = '2s'")
    if search_path is not None:
        yield from execute(sql.SQL("SET LOCAL search_path = {}").format(sql.SQL(search_path)))
    # Read after setting the path, so that every name outside it comes back schema-qualified.
    row = yield from fetchone("SELECT pg_catalog.pg_get_viewdef(%s::oid)", [oid])
    assert row is not None
    yield from execute(sql.SQL("EXPLAIN {}").format(sql.SQL(str(row[0]).strip().rstrip(";"))))


@step_function
def restricted_search_path_problems(oid: int) -> Steps[SearchPathReport]:
    """How the view fares with the ``search_path`` PostgreSQL 17+ refreshes it with (see the module docstring)."""
    report = SearchPathReport()
    restricted = yield from _plan_error(oid, RESTRICTED)
    # A failure that happens with the session's own search_path too (e.g. no SELECT on a table) is not ours to tell.
    if restricted is not None and (yield from _plan_error(oid, None)) is None:
        where = f" ({restricted.diag.context.strip().splitlines()[0]})" if restricted.diag.context else ""
        report.error = f"{restricted.diag.message_primary or restricted}{where}"
    rows = yield from in_transaction(fetchall(_UNPINNED_FUNCTIONS, {"oid": oid}), rollback=True)
    report.unpinned = [(str(signature), str(schema)) for signature, schema in rows]
    return report


def describe(report: SearchPathReport, server_major: int) -> tuple[bool, list[str]]:
    """Whether the view refreshes on this server as far as the search_path goes, and the lines ``check`` prints."""
    if report.error is None and not report.unpinned:
        return True, []
    first = report.unpinned[0] if report.unpinned else ("<the function>", "public")
    fix = FIX.format(function=first[0], schema=first[1])
    if report.error is not None:
        if server_major >= 17:
            head = "search_path: REFRESH fails: PostgreSQL 17+ refreshes with search_path = pg_catalog, pg_temp"
        else:
            head = (
                f"search_path: refreshes on PostgreSQL {server_major}, but will fail after an upgrade to 17+, "
                "which refreshes with search_path = pg_catalog, pg_temp"
            )
        return server_major < 17, [f"{head}, and then: {report.error}. Fix: {fix}"]
    names = ", ".join(signature for signature, _ in report.unpinned)
    return True, [
        f"search_path: note: {names} set no search_path; on PostgreSQL 17+ they run with pg_catalog, pg_temp "
        f"during the refresh, so any name in their body without a schema fails. If so, {fix}"
    ]
