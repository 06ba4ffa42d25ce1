"""Refresh one materialized view over an open psycopg connection, with the checks that make it safe.

The refresh is written once, as steps (see :mod:`airflow_matview.database.steps`): :func:`refresh_materialized_view`
runs them on a synchronous connection (the operator on a worker), :func:`arefresh_materialized_view` on an
asynchronous one (the deferred refresh in Airflow's triggerer), with the same checks, locks, results and errors.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import psycopg
from psycopg import sql

from airflow_matview.database import catalog, history, locks, pgerrors
from airflow_matview.database.change_signals import (
    STATS_IDLE_INTERVAL,
    ChangeSignals,
    read_change_signals,
    unchanged,
    unpublished_statistics,
)
from airflow_matview.database.refresh_settings import RECORD_ONLY, Concurrently, RefreshSettings, to_milliseconds
from airflow_matview.database.steps import (
    arun,
    connection_state,
    execute,
    fetchone,
    in_transaction,
    run,
    sleep,
    step_function,
)
from airflow_matview.exceptions import (
    MatviewOverlapError,
    MatviewQueryError,
    MatviewRefreshError,
    MatviewSetupError,
)
from airflow_matview.version_compat import AirflowSkipException

if TYPE_CHECKING:
    from psycopg import AsyncConnection, Connection

    from airflow_matview.database.identifiers import QualifiedName
    from airflow_matview.database.steps import Steps

RefreshMode = Literal["concurrently", "blocking", "no_data"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefreshResult:
    """What a refresh did; returned to Airflow as the task's XCom.

    :param view: the schema-qualified view.
    :param mode: ``concurrently``, ``blocking`` or ``no_data``.
    :param reason: why that mode was chosen.
    :param seconds: how long ``REFRESH MATERIALIZED VIEW`` took.
    :param sources: the tables and materialized views the view reads, directly or through plain views.
    :param fingerprint: the sources' change signals as of this refresh (see :attr:`ChangeSignals.fingerprint`).
    :param signals_read_at: when the refresh read them (wall-clock seconds), before it read the sources.
    :param committed_at: when the refresh committed (wall-clock seconds).
    :param rows: the view's row count from the catalog, not a full count: ``pg_class.reltuples``, which a plain
        refresh of an indexed view and ``analyze=True`` make exact; after CONCURRENTLY, the estimate from before
        plus the refresh's exact net change. ``None`` when PostgreSQL has no estimate (no index, never analyzed).
    :param lock_wait: seconds spent waiting for another refresh of the view to finish (``on_overlap: wait``).
    """

    view: str
    mode: RefreshMode
    reason: str
    seconds: float
    rows: int | None
    sources: list[str] = field(default_factory=list)
    fingerprint: dict[str, Any] | None = field(default=None, repr=False)
    signals_read_at: float | None = field(default=None, repr=False)
    committed_at: float | None = field(default=None, repr=False)
    lock_wait: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The XCom value: everything but what only the records of ``skip_if_unchanged`` and lag need."""
        result = asdict(self)
        for key in RECORD_ONLY:
            del result[key]
        return result

    def records(self) -> dict[str, Any]:
        """What the records need: the change signals, when they were read and when the refresh committed."""
        return {key: getattr(self, key) for key in RECORD_ONLY}


def choose_mode(
    relation: catalog.Relation,
    unique_indexes: list[str],
    concurrently: Concurrently,
    with_data: bool,
    connection_label: str,
    temp_grant: str | None = None,
) -> tuple[RefreshMode, str]:
    """Pick how to refresh, and say why; raise when ``concurrently=True`` cannot work.

    :param temp_grant: when the view's owner lacks TEMPORARY on the database, the GRANT that gives it.
    """
    if not with_data:
        if concurrently is True:
            raise MatviewSetupError(
                f"Cannot refresh {relation.name} ({connection_label}) CONCURRENTLY WITH NO DATA: "
                "PostgreSQL does not allow the two together. Use with_data=True or concurrently=False."
            )
        return "no_data", "with_data=False empties the view (WITH NO DATA)"
    if concurrently is False:
        return "blocking", "concurrently=False"
    obstacle = None
    if not relation.populated:
        obstacle = (
            "it is not populated (it was created or last refreshed WITH NO DATA), and only a populated view "
            "can be refreshed concurrently. Run one plain refresh first (concurrently=False)"
        )
    elif not unique_indexes:
        obstacle = (
            "it has no unique index on plain columns without a WHERE clause, which CONCURRENTLY needs to match "
            f"old and new rows. Add one, e.g. CREATE UNIQUE INDEX ON {relation.name} (<key columns>)"
        )
    elif temp_grant is not None:
        obstacle = (
            "its owner may not create temporary tables in the database (no TEMPORARY privilege), and CONCURRENTLY "
            f"builds the new data in one. Fix: {temp_grant}"
        )
    if obstacle is None:
        return "concurrently", f"unique index {unique_indexes[0]} allows CONCURRENTLY, so readers are not blocked"
    if concurrently is True:
        raise MatviewSetupError(
            f"Cannot refresh {relation.name} ({connection_label}) CONCURRENTLY: {obstacle}, "
            "or use concurrently='auto' to fall back to a plain refresh."
        )
    return "blocking", f"plain refresh (blocks readers) because {obstacle}"


@step_function
def resolve_matview(view: QualifiedName, connection_label: str) -> Steps[catalog.Relation]:
    """Find ``view`` in the catalog and check that it is a materialized view."""
    relation = yield from catalog.find_relation.steps(view)
    return (yield from _require_matview(view, relation, connection_label))


def _require_matview(
    view: QualifiedName, relation: catalog.Relation | None, connection_label: str
) -> Steps[catalog.Relation]:
    """``relation``, the catalog's answer for ``view``, when it is a materialized view; else say what it is."""
    if relation is None:
        if view.schema is not None:
            where = f"schema {view.schema!r}"
        else:
            schemas = yield from catalog.search_path.steps()
            where = f"search_path schemas {', '.join(schemas) or '(none)'}"
        raise MatviewSetupError(
            f"Materialized view {view} does not exist in the database of {connection_label} (looked in {where}). "
            "Check the view name (schema.name; quote names with capitals or spaces) and that the connection "
            "points at the right database."
        )
    if relation.relkind != "m":
        raise MatviewSetupError(
            f"{relation.name} ({connection_label}) is {relation.kind_description}, not a materialized view, "
            "so it cannot be refreshed. Name a materialized view (see pg_matviews)."
        )
    return relation


@dataclass
class _Progress:
    """How far a refresh got, for the errors raised after its transaction was rolled back."""

    stage: Literal["prepare", "overlap", "refresh"] = "prepare"
    relation: catalog.Relation | None = None
    facts: catalog.RefreshFacts | None = None
    mode: RefreshMode = "blocking"
    chosen: RefreshMode | None = None
    lock_wait: float = 0.0
    started: float = field(default_factory=time.perf_counter)


def refresh_materialized_view(
    conn: Connection,
    view: QualifiedName,
    settings: RefreshSettings | None = None,
    connection_label: str = "the connection",
) -> RefreshResult:
    """Refresh ``view`` in one transaction: a failure rolls back and leaves its previous contents.

    Before anything is locked, the view is looked up and the role's right to refresh it checked. An advisory
    lock keyed on the view keeps two refreshes of it from overlapping, wherever they come from.

    :param conn: an open psycopg connection, not in a transaction.
    :param view: the view to refresh.
    :param settings: how to refresh; the defaults when ``None``.
    :param connection_label: how errors name the connection, e.g. ``connection 'postgres_default'``.
    :raises MatviewSetupError: the refresh cannot work as asked (not retried).
    :raises MatviewRefreshError: the refresh failed but may succeed later (retried).
    :raises AirflowSkipException: another refresh is running and ``on_overlap`` is ``skip``.
    """
    return run(conn, refresh_steps(view, settings, connection_label))


async def arefresh_materialized_view(
    conn: AsyncConnection,
    view: QualifiedName,
    settings: RefreshSettings | None = None,
    connection_label: str = "the connection",
) -> RefreshResult:
    """:func:`refresh_materialized_view` on an asynchronous connection: the same steps, results and errors.

    Cancelling the task that awaits it while a statement runs cancels the statement on the server and rolls the
    transaction back.
    """
    return await arun(conn, refresh_steps(view, settings, connection_label))


def refresh_steps(
    view: QualifiedName, settings: RefreshSettings | None = None, connection_label: str = "the connection"
) -> Steps[RefreshResult]:
    """The steps of :func:`refresh_materialized_view`, for either kind of connection: the refresh and, with
    ``settings.history``, its history row (see :mod:`airflow_matview.database.history`)."""
    settings = settings or RefreshSettings()
    progress = _Progress()
    target = settings.history
    if target is None:
        return (yield from _refresh_steps(view, settings, connection_label, progress))
    try:
        result = yield from _refresh_steps(view, settings, connection_label, progress)
    except (
        AirflowSkipException,
        MatviewSetupError,
        MatviewRefreshError,
        MatviewQueryError,
        MatviewOverlapError,
    ) as exc:
        outcome: history.Outcome = "skipped" if isinstance(exc, AirflowSkipException) else "failed"
        name = str(progress.relation.name) if progress.relation else str(view)
        row = history.HistoryRow(
            view=name,
            outcome=outcome,
            elapsed=time.perf_counter() - progress.started,
            mode=progress.chosen,
            lock_wait=round(progress.lock_wait, 6),
            message=str(exc),
        )
        yield from history.write_after(target, row, connection_label)
        yield from history.prune(target, name, connection_label)
        raise
    yield from history.prune(target, result.view, connection_label)
    return result


def _refresh_steps(
    view: QualifiedName, settings: RefreshSettings, connection_label: str, progress: _Progress
) -> Steps[RefreshResult]:
    lock_timeout_ms = to_milliseconds(settings.lock_timeout, "lock_timeout")
    statement_timeout_ms = to_milliseconds(settings.statement_timeout, "statement_timeout")
    session = _Session(settings.application_name, lock_timeout_ms, statement_timeout_ms)
    try:
        if settings.skip_if_unchanged and settings.with_data:
            yield from _skip_if_unchanged(view, settings, connection_label, session, progress)
        result = yield from in_transaction(_refresh_in_transaction(view, settings, connection_label, session, progress))
        return replace(result, committed_at=time.time())
    except psycopg.errors.LockNotAvailable:
        raise (yield from _lock_timed_out(progress, lock_timeout_ms, connection_label)) from None
    except psycopg.errors.QueryCanceled as exc:
        why = (
            f"exceeded its execution_timeout ({statement_timeout_ms / 1000:g}s, enforced by the server as "
            "statement_timeout)"
            if "statement timeout" in pgerrors.describe(exc)
            else "was cancelled (the task was stopped, timed out or was marked failed)"
        )
        raise MatviewRefreshError(
            f"REFRESH MATERIALIZED VIEW {view} ({connection_label}) {why}; PostgreSQL stopped it and rolled it "
            "back, so the view keeps its previous contents."
        ) from None
    except psycopg.errors.InsufficientPrivilege as exc:
        refused = yield from _not_allowed(view, progress.relation, progress.mode, connection_label, exc)
        raise refused from None
    except psycopg.errors.ReadOnlySqlTransaction as exc:
        raise (yield from _read_only(view, connection_label, exc)) from None
    except psycopg.OperationalError as exc:
        state = yield from connection_state()
        lost = exc.sqlstate is None or state.broken or exc.sqlstate.startswith(("08", "57P"))
        if lost and pgerrors.session_timeout(exc) is None:
            raise MatviewRefreshError(
                f"Lost the connection to PostgreSQL while refreshing {view} ({connection_label}): "
                f"{pgerrors.describe(exc)}. The refresh was rolled back, so the view keeps its previous contents; "
                "Airflow will retry."
            ) from None
        raise _refresh_failed(view, connection_label, exc) from None
    except psycopg.Error as exc:
        raise _refresh_failed(view, connection_label, exc) from None


def _refresh_in_transaction(
    view: QualifiedName, settings: RefreshSettings, connection_label: str, session: _Session, progress: _Progress
) -> Steps[RefreshResult]:
    relation, locked = yield from _prepare(view, connection_label, session, progress, try_lock=True)
    progress.stage = "overlap"
    if not locked:
        waiting = time.perf_counter()
        try:
            yield from _take_refresh_lock(relation, settings, connection_label)
        finally:
            progress.lock_wait = time.perf_counter() - waiting
    progress.stage = "refresh"
    facts = progress.facts = yield from catalog.refresh_facts.steps(relation.oid)
    if facts is None:
        raise MatviewRefreshError(
            f"{relation.name} ({connection_label}) was dropped or recreated while this refresh waited for "
            "another one to finish; Airflow will retry and find it by name again."
        )
    relation = progress.relation = replace(relation, populated=facts.populated)  # another refresh may have changed it
    signals: ChangeSignals | None = None
    read_at = None
    if (settings.skip_if_unchanged or settings.read_signals) and settings.with_data:  # as of before it reads them
        read_at = time.time()
        signals = (yield from read_change_signals.steps([relation.oid]))[relation.oid]
    mode, reason = choose_mode(
        relation,
        facts.unique_indexes,
        settings.concurrently,
        settings.with_data,
        connection_label,
        facts.temp_grant,
    )
    progress.mode = progress.chosen = mode
    log.info("Refreshing %s (%s): %s.", relation.name, mode, reason)
    counters_before = facts.counters if mode == "concurrently" else None
    started = time.perf_counter()
    yield from execute(refresh_statement(relation.name, mode))
    seconds = time.perf_counter() - started
    if settings.analyze and mode != "no_data":
        yield from execute(sql.SQL("ANALYZE {}").format(identifier(relation.name)))
    rows = yield from _rows_after(relation.oid, mode, settings.analyze, counters_before)
    if settings.history is not None:
        row = history.HistoryRow(
            view=str(relation.name),
            outcome="success",
            elapsed=time.perf_counter() - progress.started,
            seconds=round(seconds, 6),
            mode=mode,
            rows=rows,
            lock_wait=round(progress.lock_wait, 6),
        )
        yield from history.write_in_refresh(settings.history, row, connection_label)
    return RefreshResult(
        view=str(relation.name),
        mode=mode,
        reason=reason,
        seconds=round(seconds, 6),
        rows=rows,
        sources=[str(source.name) for source in facts.sources],
        fingerprint=signals.fingerprint if signals else None,
        signals_read_at=read_at,
        lock_wait=round(progress.lock_wait, 6),
    )


def _lock_timed_out(progress: _Progress, lock_timeout_ms: int, connection_label: str) -> Steps[MatviewRefreshError]:
    """The error for a lock not granted within ``lock_timeout``, naming the sessions that hold it."""
    relation, facts = progress.relation, progress.facts
    assert relation is not None
    waited = f"{lock_timeout_ms / 1000:g}s"
    if progress.stage == "overlap":
        holders = yield from _holders(locks.describe_refresh_holders.steps(relation.oid))
        return MatviewRefreshError(
            f"Another refresh of {relation.name} ({connection_label}) was still running after lock_timeout "
            f"({waited}): {holders}. The view keeps its previous contents; Airflow will retry."
        )
    source_oids = [source.oid for source in facts.sources] if facts else []
    holders = yield from _holders(
        locks.describe_lock_holders.steps(relation.oid, progress.mode == "concurrently", source_oids)
    )
    return MatviewRefreshError(
        f"Timed out after {waited} (lock_timeout) waiting for a lock on {relation.name} ({connection_label}) "
        f"or a table it reads; blocked by {holders}. "
        "The view keeps its previous contents; Airflow will retry. End or commit the blocking session, "
        "or raise lock_timeout."
    )


@dataclass(frozen=True)
class _Session:
    """The session settings every transaction of a refresh starts with (see :func:`_session_settings`)."""

    application_name: str | None
    lock_timeout_ms: int
    statement_timeout_ms: int


def _prepare(
    view: QualifiedName, connection_label: str, session: _Session, progress: _Progress, *, try_lock: bool = False
) -> Steps[tuple[catalog.Relation, bool]]:
    """A transaction's first statement (:data:`_START`): set the session up, find the view, check the right to
    refresh it and, with ``try_lock``, try its refresh lock; the view, and whether the lock was taken."""
    settings = yield from _session_settings(session)
    start = yield from _start(view, settings, try_lock)
    relation = progress.relation = yield from _require_matview(view, start.relation, connection_label)
    assert start.permission is not None  # found: its row was read with it
    yield from _require_permission(relation, start.permission, connection_label)
    return relation, start.locked


# The refresh's first statement, one round trip: set the session up, find the view, read the role's right to
# refresh it and, when asked and it is a materialized view the role may refresh, try its refresh lock. The session
# settings are evaluated first (a subquery in FROM), the lock last (the select list).
_START = """
SELECT r.oid, r.nspname, r.relname, r.relkind, r.relispopulated, p.is_owner, p.owner, p.role, p.maintain,
       p.superuser,
       CASE WHEN %(try_lock)s AND r.relkind = 'm' AND (p.is_owner OR p.maintain)
            THEN pg_catalog.pg_try_advisory_xact_lock((%(namespace)s::bigint << 32) | r.oid::bigint) END
FROM (SELECT {settings}) AS settings
LEFT JOIN LATERAL ({find}) AS r ON true
LEFT JOIN LATERAL ({may_refresh}) AS p ON true
"""


@dataclass(frozen=True)
class _Start:
    relation: catalog.Relation | None
    permission: catalog.RefreshPermission | None
    locked: bool


def _start(view: QualifiedName, settings: list[tuple[str, str, bool]], try_lock: bool) -> Steps[_Start]:
    params: dict[str, Any] = {
        "name": view.name,
        "schema": view.schema,
        "namespace": locks.ADVISORY_NAMESPACE,
        "try_lock": try_lock,
    }
    calls = []
    for number, (name, value, local) in enumerate(settings):
        calls.append(f"pg_catalog.set_config(%(n{number})s, %(v{number})s, %(l{number})s)")
        params.update({f"n{number}": name, f"v{number}": value, f"l{number}": local})
    statement = _START.format(
        settings=", ".join(calls), find=catalog.FIND_RELATION, may_refresh=catalog.MAY_REFRESH.format(oid="r.oid")
    )
    row = yield from fetchone(statement, params)
    assert row is not None  # one row, whatever was found
    if row[0] is None:
        return _Start(None, None, False)
    permission = None if row[5] is None else catalog.permission_from_row(*row[5:10])
    return _Start(catalog.relation_from_row(*row[:5]), permission, bool(row[10]))


@dataclass(frozen=True)
class _Look:
    """One look at the view's change signals, and how long to wait for unpublished counters before another."""

    relation: catalog.Relation
    signals: ChangeSignals
    wait: float = 0.0
    sessions: list[str] = field(default_factory=list)


def _skip_if_unchanged(
    view: QualifiedName, settings: RefreshSettings, connection_label: str, session: _Session, progress: _Progress
) -> Steps[None]:
    """Raise ``AirflowSkipException`` when provably no source changed since the last successful refresh; otherwise
    log why the refresh runs. Decided before the refresh's transaction, in short transactions of its own.

    A session publishes its counters when it goes idle, but at most once a second: what it commits within a second
    of its last report reaches the shared counters up to ``PGSTAT_IDLE_INTERVAL`` (10 s) after it went idle. When
    the signals say "unchanged" and a session of this database went idle less than that ago, wait until its
    counters must be out, then look again. The wait is outside any transaction, so that neither
    ``idle_in_transaction_session_timeout`` nor ``transaction_timeout`` ends the session meanwhile (and
    ``idle_session_timeout`` is turned off for this session). A change published later is seen by the next run: the
    recorded fingerprint stays the one of the last refresh.
    """
    previous = settings.previous_fingerprint
    look = yield from in_transaction(_look(view, connection_label, session, progress, previous))
    if look.wait > 0:
        log.info(
            "skip_if_unchanged: waiting %.1fs before deciding: %s went idle in the last %gs and may not have "
            "published what it committed yet.",
            look.wait,
            ", ".join(look.sessions),
            STATS_IDLE_INTERVAL,
        )
        yield from sleep(look.wait)
        look = yield from in_transaction(_look(view, connection_label, session, progress, None))
    relation, signals = look.relation, look.signals
    if signals.untracked_because is not None:
        why = f"its sources' changes cannot be seen: {signals.untracked_because}"
    elif previous is None:
        why = "no earlier successful refresh is recorded"
    elif not relation.populated:
        why = "the view is not populated"
    elif signals.writers:
        why = f"a session is writing to a source ({'; '.join(signals.writers)}); what it commits is counted late"
    elif not unchanged(previous, signals.fingerprint):
        why = "a source changed since the last successful refresh"
    else:
        names = ", ".join(sorted(set(signals.source_names.values())))
        raise AirflowSkipException(
            f"Skipped: none of the sources of {relation.name} ({connection_label}) changed since its last "
            f"successful refresh (sources: {names}); skip_if_unchanged=True."
        )
    log.info("skip_if_unchanged: refreshing %s because %s.", relation.name, why)


def _look(
    view: QualifiedName,
    connection_label: str,
    session: _Session,
    progress: _Progress,
    previous: dict[str, Any] | None,
) -> Steps[_Look]:
    """Read the view's change signals; with ``previous``, also how long to wait for unpublished counters when they
    say "unchanged" (and keep the session open that long)."""
    relation, _ = yield from _prepare(view, connection_label, session, progress)
    signals = yield from _change_signals(relation.oid)
    if signals.writers or not unchanged(previous, signals.fingerprint) or not relation.populated:
        return _Look(relation, signals)  # it refreshes whatever unpublished counters would say
    wait, sessions = yield from unpublished_statistics.steps()
    if wait > 0:
        yield from execute("SELECT pg_catalog.set_config('idle_session_timeout', '0', false)")
    return _Look(relation, signals, wait, sessions)


def _change_signals(oid: int) -> Steps[ChangeSignals]:
    signals = yield from read_change_signals.steps([oid], writers=True)
    return signals[oid]


@step_function
def check_permission(relation: catalog.Relation, connection_label: str) -> Steps[None]:
    """Fail before taking any lock when the role may not refresh the view, naming the missing privilege."""
    permission = yield from catalog.refresh_permission.steps(relation.oid)
    yield from _require_permission(relation, permission, connection_label)


def _require_permission(
    relation: catalog.Relation, permission: catalog.RefreshPermission, connection_label: str
) -> Steps[None]:
    if permission.allowed:
        return
    state = yield from connection_state()
    maintain = (
        f"GRANT MAINTAIN ON {relation.name} TO {permission.role}, or GRANT pg_maintain"
        if state.server_version >= 170000
        else "or, on PostgreSQL 17+, the MAINTAIN privilege"
    )
    raise MatviewSetupError(
        f"Role {permission.role} ({connection_label}) may not refresh {relation.name}: only its owner "
        f"({permission.owner}) may. Make the role a member of the owner (GRANT {permission.owner} TO "
        f"{permission.role}) {maintain}."
    )


def _session_settings(session: _Session) -> Steps[list[tuple[str, str, bool]]]:
    """What a transaction's first statement sets: ``(name, value, local)`` for ``set_config``.

    ``lock_timeout``, ``statement_timeout`` and ``application_name`` hold for this transaction only (a connection
    of the triggerer's pool serves many refreshes), and take effect at once: the name shows in ``pg_stat_activity``
    while the refresh runs. ``client_connection_check_interval`` is set for the session: the check (PostgreSQL 14+)
    makes the server notice within a second that the client died (SIGKILL, lost host) and stop the refresh instead
    of finishing it for nobody.
    """
    settings: list[tuple[str, str, bool]] = [
        ("lock_timeout", f"{session.lock_timeout_ms}ms", True),
        ("statement_timeout", f"{session.statement_timeout_ms}ms", True),
    ]
    if session.application_name:
        settings.append(("application_name", session.application_name[:63], True))
    state = yield from connection_state()
    if state.server_version >= 140000:
        settings.append(("client_connection_check_interval", "1s", False))
    return settings


def _take_refresh_lock(relation: catalog.Relation, settings: RefreshSettings, connection_label: str) -> Steps[None]:
    """When the first statement did not get the view's refresh lock: wait for it, or skip, or fail."""
    if settings.on_overlap == "wait":
        yield from locks.wait_for_refresh_lock.steps(relation.oid)
        return
    holders = yield from locks.describe_refresh_holders.steps(relation.oid)
    running = f"{relation.name} ({connection_label}) is already being refreshed by {holders}"
    if settings.on_overlap == "skip":
        raise AirflowSkipException(f"Skipped: {running} (on_overlap=skip).")
    raise MatviewOverlapError(f"{running}; on_overlap=fail, so this run fails (not retried). The view is untouched.")


def _holders(describe: Steps[str]) -> Steps[str]:
    """Who holds the lock, read in a transaction of its own that is rolled back: on a connection outside autocommit
    a bare query would leave a transaction open, into which a history row after it would go, lost at close."""
    try:
        return (yield from in_transaction(describe, rollback=True))
    except psycopg.Error:
        return "a session that could not be identified"


def _rows_after(oid: int, mode: RefreshMode, analyzed: bool, before: catalog.RowCounters | None) -> Steps[int | None]:
    """The view's row count from the catalog, without counting rows.

    A plain refresh rebuilds the view's indexes, and ANALYZE samples it: both set ``reltuples``. CONCURRENTLY
    leaves ``reltuples`` alone but applies its changes as row inserts and deletes, which this transaction's
    counters see exactly: the estimate from before the refresh plus that net change.
    """
    if mode == "no_data":
        return 0
    if before is None or analyzed or before.estimate < 0:
        return (yield from catalog.row_estimate.steps(oid))
    after = yield from catalog.row_counters.steps(oid)
    return max(0, before.estimate + (after.inserted - before.inserted) - (after.deleted - before.deleted))


def refresh_statement(view: QualifiedName, mode: RefreshMode) -> sql.Composed:
    """``REFRESH MATERIALIZED VIEW`` for ``view`` in ``mode``, with the name quoted by psycopg."""
    template = {
        "concurrently": "REFRESH MATERIALIZED VIEW CONCURRENTLY {}",
        "blocking": "REFRESH MATERIALIZED VIEW {}",
        "no_data": "REFRESH MATERIALIZED VIEW {} WITH NO DATA",
    }[mode]
    return sql.SQL(template).format(identifier(view))


def identifier(name: QualifiedName) -> sql.Identifier:
    return sql.Identifier(name.name) if name.schema is None else sql.Identifier(name.schema, name.name)


def _refresh_failed(
    view: QualifiedName, connection_label: str, exc: psycopg.Error
) -> MatviewRefreshError | MatviewQueryError:
    """A failed refresh: retried when the cause may pass (see :mod:`pgerrors`), else failed at once."""
    refresh = f"REFRESH MATERIALIZED VIEW {view} failed ({connection_label}): "
    timeout = pgerrors.session_timeout(exc)
    if timeout is not None:
        happened, setting = timeout
        return MatviewRefreshError(
            f"{refresh}{happened}. The refresh was rolled back: the view keeps its previous contents; Airflow will "
            f"retry. If it happens again, raise {setting} for the connection's role "
            f"(ALTER ROLE <role> SET {setting} = ...)."
        )
    failed = f"{refresh}{pgerrors.describe(exc)}. "
    if pgerrors.is_transient(exc):
        return MatviewRefreshError(failed + "The view keeps its previous contents; Airflow will retry.")
    return MatviewQueryError(
        failed + "The view keeps its previous contents. Not retried: the same query on the same data fails the "
        "same way. Fix the view's query or its source data, then clear the task."
    )


def _read_only(view: QualifiedName, connection_label: str, exc: psycopg.Error) -> Steps[MatviewRefreshError]:
    """A refresh refused because the transaction is read-only: say why (a standby, or which setting) and the fix."""
    try:
        why = yield from in_transaction(catalog.read_only.steps(), rollback=True)
    except psycopg.Error:  # e.g. the connection is closed
        why = None
    cause = why.describe() if why else "the server or the transaction is read-only"
    promoted = " (a standby may be promoted meanwhile)" if why is None or why.standby else ""
    return MatviewRefreshError(
        f"REFRESH MATERIALIZED VIEW {view} failed ({connection_label}): {pgerrors.describe(exc)}: {cause}. "
        f"The view keeps its previous contents; Airflow will retry{promoted}."
    )


def _not_allowed(
    view: QualifiedName,
    relation: catalog.Relation | None,
    mode: RefreshMode,
    connection_label: str,
    exc: psycopg.Error,
) -> Steps[MatviewSetupError]:
    """A refresh refused for want of a privilege (the right to refresh was checked before): name it, and its GRANT."""
    missing: list[catalog.MissingPrivilege] = []
    if relation is not None:
        try:
            privileges = yield from in_transaction(catalog.missing_privileges.steps(relation.oid), rollback=True)
        except psycopg.Error:  # e.g. the connection is closed
            privileges = []
        missing = [privilege for privilege in privileges if mode == "concurrently" or not privilege.concurrently_only]
    found = "; ".join(privilege.describe() for privilege in missing) or "see PostgreSQL's message"
    return MatviewSetupError(
        f"Cannot refresh {view} ({connection_label}): {pgerrors.describe(exc)}. Missing: {found}. "
        "Not retried: grant the privilege, then clear the task (`airflow-matview check` lists what is missing)."
    )
