"""Refresh history in PostgreSQL (opt-in ``history:``): one row per refresh in a table of the view's database, and
a view beside it saying when each view was last refreshed and how far behind it is.

Written as steps (see :mod:`airflow_matview.database.steps`), so the refresh on a worker and in the triggerer write
the same rows. A success row is written inside the refresh's own transaction (a savepoint), so it exists exactly
when the refresh committed; a skip or failure row in a short transaction of its own, after the rollback. No
history write ever fails a refresh: an error is logged in one line. Retention is pruned in small batches of
``SKIP LOCKED`` rows after the refresh committed, with a short ``lock_timeout``, so it never blocks a refresh.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from airflow_matview.database.steps import execute, fetchone, in_transaction

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

    from airflow_matview.database.identifiers import QualifiedName
    from airflow_matview.database.steps import Steps

log = logging.getLogger(__name__)

Outcome = Literal["success", "skipped", "failed"]
#: The suffix of the view beside the table that answers "when was each view last refreshed".
LATEST_SUFFIX = "_latest"
#: The longest table name: the view beside it adds :data:`LATEST_SUFFIX` within PostgreSQL's 63 bytes.
MAX_TABLE_NAME = 63 - len(LATEST_SUFFIX)
#: Rows deleted per pruning transaction, and pruning transactions per refresh at most.
PRUNE_BATCH = 500
PRUNE_BATCHES = 10
# A history write waits at most this long for a lock or a statement (outside the refresh's own transaction).
_SHORT_SETTINGS = (
    "SELECT pg_catalog.set_config('lock_timeout', %s, true), pg_catalog.set_config('statement_timeout', '5s', true)"
)


@dataclass(frozen=True)
class HistoryTarget:
    """Where a refresh's history row goes, and what it says about the run that started the refresh.

    :param table: the history table, ``schema.table`` as written in SQL.
    :param retention_seconds: rows of this view older than this are pruned; ``None`` keeps every row.
    :param started_by: ``schedule``, ``on_change``, ``manual``, ``chain`` or ``asset`` (see :func:`started_by`).
    :param dag_id: the DAG run's DAG.
    :param run_id: the DAG run.
    :param try_number: the task's try.
    """

    table: str
    retention_seconds: float | None = None
    started_by: str | None = None
    dag_id: str | None = None
    run_id: str | None = None
    try_number: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly, for a trigger's arguments."""
        return asdict(self)


@dataclass(frozen=True)
class HistoryRow:
    """What a refresh did, as its history row says.

    :param view: the schema-qualified view.
    :param outcome: ``success``, ``skipped`` or ``failed``.
    :param elapsed: seconds from the refresh's start to this row (``started`` is ``finished`` minus this).
    :param seconds: how long ``REFRESH MATERIALIZED VIEW`` took; ``None`` when it did not run or failed.
    :param mode: ``concurrently``, ``blocking`` or ``no_data``; ``None`` when not chosen yet.
    :param rows: the view's row count after the refresh (see ``RefreshResult.rows``).
    :param lock_wait: seconds waited for another refresh of the view to finish.
    :param message: why it was skipped or failed.
    """

    view: str
    outcome: Outcome
    elapsed: float
    seconds: float | None = None
    mode: str | None = None
    rows: int | None = None
    lock_wait: float = 0.0
    message: str | None = None


def table_name(target: HistoryTarget) -> QualifiedName:
    """The history table's name, parsed."""
    from airflow_matview.database.identifiers import parse_qualified_name

    return parse_qualified_name(target.table)


def latest_name(table: QualifiedName) -> QualifiedName:
    """The view beside ``table``: ``<table>_latest`` in the same schema."""
    from airflow_matview.database.identifiers import QualifiedName

    return QualifiedName(table.schema, table.name + LATEST_SUFFIX)


def _identifier(name: QualifiedName) -> sql.Identifier:
    from psycopg import sql

    return sql.Identifier(name.name) if name.schema is None else sql.Identifier(name.schema, name.name)


_INSERT = """
INSERT INTO {table} (view, outcome, started, finished, seconds, mode, rows, lock_wait, started_by, dag_id, run_id,
                     try_number, message)
VALUES (%(view)s, %(outcome)s, pg_catalog.clock_timestamp() - %(elapsed)s * interval '1 second',
        pg_catalog.clock_timestamp(), %(seconds)s, %(mode)s, %(rows)s, %(lock_wait)s, %(started_by)s, %(dag_id)s,
        %(run_id)s, %(try_number)s, %(message)s)
"""


def _insert(target: HistoryTarget, row: HistoryRow) -> Steps[None]:
    from psycopg import sql

    params = {
        **asdict(row),
        "started_by": target.started_by,
        "dag_id": target.dag_id,
        "run_id": target.run_id,
        "try_number": target.try_number,
    }
    yield from execute(sql.SQL(_INSERT).format(table=_identifier(table_name(target))), params)


def write_in_refresh(target: HistoryTarget, row: HistoryRow, connection_label: str) -> Steps[None]:
    """Write a success row inside the refresh's transaction, in a savepoint: if the write fails, it alone is rolled
    back, one line says why, and the refresh commits all the same. Its waits are short (a locked history table
    must not keep the refreshed view locked for the refresh's whole ``lock_timeout``); the refresh commits right
    after it, so these settings outlive it only by the commit."""
    import psycopg

    try:
        yield from in_transaction(_short(_insert(target, row)))
    except psycopg.Error as exc:
        _log_failure(target, row, connection_label, exc)


def write_after(target: HistoryTarget, row: HistoryRow, connection_label: str) -> Steps[None]:
    """Write a skip or failure row in a short transaction of its own, after the refresh's was rolled back; an error
    (the connection may be lost) is logged in one line."""
    import psycopg

    try:
        yield from in_transaction(_short(_insert(target, row)))
    except psycopg.Error as exc:
        _log_failure(target, row, connection_label, exc)


def _short(steps: Steps[Any], lock_timeout: str = "1s") -> Steps[Any]:
    yield from fetchone(_SHORT_SETTINGS, (lock_timeout,))
    return (yield from steps)


def _log_failure(target: HistoryTarget, row: HistoryRow, connection_label: str, exc: psycopg.Error) -> None:
    from airflow_matview.database import pgerrors

    log.warning(
        "Refresh history: could not record the %s of %s in %s (%s): %s. The refresh's outcome stands; run "
        "`airflow-matview history init` and `airflow-matview check` for the table and its grants.",
        row.outcome,
        row.view,
        target.table,
        connection_label,
        pgerrors.describe(exc),
    )


_PRUNE = """
DELETE FROM {table} WHERE id IN (
    SELECT id FROM {table}
    WHERE view = %(view)s AND finished < pg_catalog.clock_timestamp() - %(keep)s * interval '1 second'
    ORDER BY finished LIMIT %(batch)s FOR UPDATE SKIP LOCKED)
"""


def prune(target: HistoryTarget, view: str, connection_label: str) -> Steps[int]:
    """Delete ``view``'s rows older than the retention, :data:`PRUNE_BATCH` rows per short transaction and at most
    :data:`PRUNE_BATCHES` of them; rows another session holds are left for next time. The rows deleted."""
    import psycopg
    from psycopg import sql

    if target.retention_seconds is None:
        return 0
    statement = sql.SQL(_PRUNE).format(table=_identifier(table_name(target)))
    params = {"view": view, "keep": target.retention_seconds, "batch": PRUNE_BATCH}
    deleted = 0
    try:
        for _ in range(PRUNE_BATCHES):
            count = yield from in_transaction(_short(_delete(statement, params), lock_timeout="100ms"))
            deleted += count
            if count < PRUNE_BATCH:
                break
    except psycopg.Error as exc:
        log.warning(
            "Refresh history: could not prune rows of %s older than %gs from %s (%s): %s; the next refresh tries "
            "again.",
            view,
            target.retention_seconds,
            target.table,
            connection_label,
            exc,
        )
    return deleted


def _delete(statement: sql.Composed, params: dict[str, Any]) -> Steps[int]:
    row = yield from fetchone(sql_returning_count(statement), params)
    return int(row[0]) if row else 0


def sql_returning_count(statement: sql.Composed) -> sql.Composed:
    """``statement`` (a DELETE) wrapped to return how many rows it deleted."""
    from psycopg import sql

    return sql.SQL("WITH deleted AS ({} RETURNING 1) SELECT count(*) FROM deleted").format(statement)


def create_statements(table: QualifiedName) -> list[sql.Composed]:
    """``CREATE TABLE``, its index and the view beside it (``CREATE ... IF NOT EXISTS`` / ``OR REPLACE``)."""
    from psycopg import sql

    names = {
        "table": _identifier(table),
        "index": sql.Identifier(table.name[: 63 - len("_view_finished")] + "_view_finished"),
        "latest": _identifier(latest_name(table)),
    }
    return [sql.SQL(statement).format(**names) for statement in (_CREATE_TABLE, _CREATE_INDEX, _CREATE_LATEST)]


_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS {table} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    view text NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('success', 'skipped', 'failed')),
    started timestamptz NOT NULL,
    finished timestamptz NOT NULL,
    seconds double precision,
    mode text,
    rows bigint,
    lock_wait double precision NOT NULL DEFAULT 0,
    started_by text,
    dag_id text,
    run_id text,
    try_number integer,
    message text
)
"""
_CREATE_INDEX = "CREATE INDEX IF NOT EXISTS {index} ON {table} (view, finished)"
_CREATE_LATEST = """
CREATE OR REPLACE VIEW {latest} AS
SELECT v.view,
       s.finished AS last_refreshed,
       pg_catalog.now() - s.finished AS behind,
       s.mode AS last_mode,
       s.rows AS last_rows,
       s.seconds AS last_seconds,
       l.outcome AS last_outcome,
       l.finished AS last_attempt,
       l.message AS last_message
FROM (SELECT DISTINCT view FROM {table}) AS v
LEFT JOIN LATERAL (SELECT finished, mode, rows, seconds FROM {table} AS h
                   WHERE h.view = v.view AND h.outcome = 'success' ORDER BY h.finished DESC LIMIT 1) AS s ON true
LEFT JOIN LATERAL (SELECT outcome, finished, message FROM {table} AS h
                   WHERE h.view = v.view ORDER BY h.finished DESC LIMIT 1) AS l ON true
"""


def grant_statements(table: QualifiedName, refresh_role: str, reporting_role: str) -> list[sql.Composed]:
    """The GRANTs a refreshing role (write rows, prune them) and a reporting role (read) need."""
    from psycopg import sql

    schema = sql.Identifier(table.schema or "public")
    table_id, latest = _identifier(table), _identifier(latest_name(table))
    refresher, reporter = sql.Identifier(refresh_role), sql.Identifier(reporting_role)
    return [
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, refresher),
        sql.SQL("GRANT SELECT, INSERT, DELETE ON {} TO {}").format(table_id, refresher),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, reporter),
        sql.SQL("GRANT SELECT ON {}, {} TO {}").format(table_id, latest, reporter),
    ]


_PROBLEM = """
SELECT pg_catalog.to_regclass(%(table)s) IS NOT NULL,
       CASE WHEN pg_catalog.to_regclass(%(table)s) IS NOT NULL
            THEN pg_catalog.has_table_privilege(pg_catalog.to_regclass(%(table)s), 'INSERT') END,
       CASE WHEN pg_catalog.to_regclass(%(table)s) IS NOT NULL
            THEN pg_catalog.has_table_privilege(pg_catalog.to_regclass(%(table)s), 'DELETE') END
"""


def table_problem(table: QualifiedName, retention: bool) -> Steps[str | None]:
    """What keeps the connection's role from writing (and, with ``retention``, pruning) history rows, or ``None``."""
    row = yield from fetchone(_PROBLEM, {"table": str(table)})
    assert row is not None
    exists, insert, delete = row
    if not exists:
        return f"history table {table} does not exist: run `airflow-matview history init`"
    missing = [name for name, allowed in (("INSERT", insert), ("DELETE", delete or not retention)) if not allowed]
    if missing:
        return (
            f"the role may not {' or '.join(missing)} on history table {table}: GRANT {', '.join(missing)} ON {table}"
        )
    return None
