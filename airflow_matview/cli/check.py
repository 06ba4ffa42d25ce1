"""``airflow-matview check``: whether each view of a config file can be refreshed as configured, asked of the live
database (and of Airflow's pools)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg

from airflow_matview.cli.connect import dsn_options, open_connection
from airflow_matview.cli.output import EXIT_OK, EXIT_PROBLEMS
from airflow_matview.config import ViewConfig, load_config
from airflow_matview.database import catalog, history, search_path
from airflow_matview.database.change_signals import read_change_signals
from airflow_matview.database.identifiers import parse_qualified_name
from airflow_matview.database.refresh import choose_mode, resolve_matview
from airflow_matview.database.steps import run
from airflow_matview.exceptions import CliError, MatviewRefreshError, MatviewSetupError
from airflow_matview.text import format_seconds, one_line
from airflow_matview.triggerer_health import triggerer_problem_in_metadata, unreadable_metadata

if TYPE_CHECKING:
    from collections.abc import Iterable


def run_check(path: str, conn_id: str | None, dsn: str | None) -> int:
    views = load_config(path).views
    if dsn:
        dsn_options(dsn)  # a malformed --dsn is a wrong argument, not a problem of each view
    problems = 0
    airflow_problems = _airflow_problems(views)
    connections: dict[str, psycopg.Connection | CliError] = {}
    try:
        for view in views:
            key = "--dsn" if dsn else conn_id or view.conn_id
            label = "--dsn" if dsn else f"connection {key!r}"
            if key not in connections:
                try:
                    connections[key] = open_connection(None if dsn else key, dsn)
                except CliError as error:
                    connections[key] = error
            conn = connections[key]
            if isinstance(conn, CliError):
                ok, lines = False, [str(conn)]
            else:
                try:
                    ok, lines = check_view(conn, view, label)
                except (psycopg.Error, MatviewRefreshError, MatviewSetupError) as error:
                    ok, lines = False, [f"cannot check it through {label}: {one_line(error)}"]
                    if conn.closed or conn.broken:
                        connections[key] = CliError(f"cannot check it: {label} was lost: {one_line(error)}")
            for fatal, line in airflow_problems.get(view.resolved_dag_id, []):
                ok, lines = ok and not fatal, [*lines, line]
            problems += not ok
            print(f"{'OK     ' if ok else 'PROBLEM'} {view.view}")
            for line in lines:
                print(f"        {line}")
    finally:
        for conn in connections.values():
            if isinstance(conn, psycopg.Connection):
                conn.close()
    print(f"{len(views) - problems} of {len(views)} view(s) can be refreshed as configured.")
    return EXIT_PROBLEMS if problems else EXIT_OK


def _airflow_problems(views: list[ViewConfig]) -> dict[str, list[tuple[bool, str]]]:
    """Per DAG id, what Airflow's side stops or hinders (its pool, a triggerer it needs): whether it is fatal, and
    what to say."""
    problems: dict[str, list[tuple[bool, str]]] = {}
    for found in (_pool_problems(views), _triggerer_problems(views), _target_lag_problems(views)):
        for dag_id, problem in found.items():
            problems.setdefault(dag_id, []).append(problem)
    return problems


def _triggerer_problems(views: list[ViewConfig]) -> dict[str, tuple[bool, str]]:
    """Per DAG id whose view needs a triggerer, the missing triggerer: fatal for a refresh that runs in it or a
    watcher that fires it, a note for a staleness alert sent from it; a note when Airflow's metadata cannot be read."""
    needs = {view.resolved_dag_id: need for view in views if (need := _triggerer_need(view))}
    if not needs:
        return {}
    try:
        problem = triggerer_problem_in_metadata()
    except RuntimeError as error:
        return {dag_id: (False, f"triggerer: not checked: {error}") for dag_id in needs}
    if problem is None:
        return {}
    return {
        dag_id: (fatal, f"triggerer: {problem}, and {why}: start one (`airflow triggerer`)")
        for dag_id, (fatal, why) in needs.items()
    }


def _triggerer_need(view: ViewConfig) -> tuple[bool, str] | None:
    """Why ``view`` needs Airflow's triggerer, and whether it fails without one; ``None`` if it does not."""
    if view.deferrable:
        return True, "deferrable: true refreshes the view in the triggerer"
    if view.on_change:
        return True, "on_change: true watches the view's sources from the triggerer"
    if view.target_lag is not None:
        return True, "target_lag watches the view's sources and measures its lag from the triggerer"
    if view.max_staleness is not None:
        return False, "max_staleness: the triggerer measures its lag and sends its on_stale alert"
    return None


def _target_lag_problems(views: list[ViewConfig]) -> dict[str, tuple[bool, str]]:
    """Per DAG id, a ``target_lag`` or ``max_staleness`` that its view's last measured refresh (its record, in
    Airflow's metadata) could not meet: the refresh alone took longer; a note when the records cannot be read."""
    targets = [view for view in views if view.target_lag is not None or view.max_staleness is not None]
    if not targets:
        return {}
    try:
        took = refresh_times(targets)
    except RuntimeError as error:
        return {
            view.resolved_dag_id: (False, f"{_threshold(view)[0]}: refresh time not checked: {error}")
            for view in targets
        }
    problems = {}
    for view in targets:
        seconds = took.get(view.resolved_dag_id)
        key, target = _threshold(view)
        if seconds is not None and seconds >= target:
            problems[view.resolved_dag_id] = (
                True,
                f"{key}: {format_seconds(target)} is shorter than its last measured refresh "
                f"({format_seconds(seconds)}): no refresh can keep it within; lengthen {key} or make the "
                "refresh faster",
            )
    return problems


def _threshold(view: ViewConfig) -> tuple[str, float]:
    """The shorter of the view's ``target_lag`` and ``max_staleness`` (the first a refresh must fit in), by name."""
    if view.target_lag is not None:
        return "target_lag", view.target_lag.total_seconds()
    return "max_staleness", view.max_staleness.total_seconds() if view.max_staleness is not None else 0.0


def refresh_times(views: list[ViewConfig]) -> dict[str, float]:
    """Per DAG id, how long the view's last recorded refresh took (from reading the change signals to its commit).

    :raises RuntimeError: when Airflow's metadata database cannot be read.
    """
    import json

    from airflow_matview.refresh_task import RefreshRecord

    try:
        from airflow.models.variable import Variable

        stored = {
            view.resolved_dag_id: Variable.get(RefreshRecord(view.conn_id, view.view).key, default_var=None)
            for view in views
        }
    except Exception as error:
        raise RuntimeError(unreadable_metadata("refresh records", error)) from None
    times = {}
    for dag_id, text in stored.items():
        try:
            record = json.loads(text) if text else {}
            times[dag_id] = float(record["committed_at"]) - float(record["signals_read_at"])
        except (TypeError, ValueError, KeyError):
            continue
    return times


def _pool_problems(views: list[ViewConfig]) -> dict[str, tuple[bool, str]]:
    """Per DAG id, whether its pool stops it and what to say: a missing pool is a problem; pools that cannot be
    read (no Airflow metadata database here) are a note."""
    if not any(view.pool for view in views):
        return {}
    try:
        existing = airflow_pools()
    except RuntimeError as error:
        return {view.resolved_dag_id: (False, f"pool: not checked: {error}") for view in views if view.pool}
    return {dag_id: (True, line) for dag_id, line in pool_problems(views, existing).items()}


def check_view(conn: psycopg.Connection, view: ViewConfig, label: str) -> tuple[bool, list[str]]:
    """Whether ``view`` can be refreshed as configured, and what to say about it.

    Checks what a run would meet: the view, the mode (with the owner's TEMPORARY privilege, which CONCURRENTLY
    needs), the connecting role's right to refresh it, the privileges PostgreSQL checks as the view's owner
    when it runs the view's query (SELECT on what it reads, EXECUTE on the functions it calls), a read-only
    connection (a standby, ``default_transaction_read_only``), and, for ``on_change``, whether its sources can be
    watched (an ``on_change``-only view whose sources cannot be watched never refreshes).
    """
    try:
        relation = resolve_matview(conn, view.view, label)
        indexes = catalog.usable_unique_indexes(conn, relation.oid)
        missing = catalog.missing_privileges(conn, relation.oid)
        temp_grant = next((m.grant for m in missing if m.privilege == "TEMPORARY"), None)
        mode, reason = choose_mode(relation, indexes, view.concurrently, True, label, temp_grant)
    except MatviewSetupError as error:
        return False, [str(error)]
    lines = [f"refresh: {mode} ({reason})"]
    permission = catalog.refresh_permission(conn, relation.oid)
    if permission.allowed:
        lines.append(f"permission: role {permission.role} {permission.reason}")
    else:
        lines.append(
            f"permission: role {permission.role} may not refresh it: only the owner ({permission.owner}) may, "
            "or on PostgreSQL 17+ a role granted MAINTAIN "
            f"(GRANT MAINTAIN ON {relation.name} TO {permission.role})"
        )
    blocking = [m for m in missing if mode == "concurrently" or not m.concurrently_only]
    lines.extend(f"privilege: {m.describe()}" for m in blocking)
    path_ok, path_lines = search_path.describe(
        search_path.restricted_search_path_problems(conn, relation.oid), conn.info.server_version // 10000
    )
    read_only = catalog.read_only(conn)
    if read_only is not None:
        path_lines.append(f"read-only: {read_only.describe()}")
    watch_ok, watch_lines = _on_change(conn, view, relation.oid)
    history_ok, history_lines = _history(conn, view)
    ok = permission.allowed and not blocking and path_ok and read_only is None and watch_ok and history_ok
    return ok, lines + path_lines + watch_lines + history_lines


def _history(conn: psycopg.Connection, view: ViewConfig) -> tuple[bool, list[str]]:
    """Whether the view's refresh history can be written (and pruned, with ``history_retention``)."""
    if view.history is None:
        return True, []
    table = parse_qualified_name(view.history)
    problem = run(conn, history.table_problem(table, view.history_retention is not None))
    if problem is None:
        return True, [f"history: recorded in {table}"]
    return False, [f"history: {problem}"]


def _on_change(conn: psycopg.Connection, view: ViewConfig, oid: int) -> tuple[bool, list[str]]:
    """Whether the view's ``on_change`` can work, and what to say: the sources it watches, or why it cannot watch
    them (a problem when nothing else starts a run: no schedule, no after:)."""
    if view.target_lag is not None:
        return _target_lag_watch(conn, view, oid)
    if not view.on_change:
        return True, []
    signals = read_change_signals(conn, [oid])[oid]
    if signals.untracked_because is None:
        return True, [f"on_change: watches {', '.join(sorted(set(signals.source_names.values())))}"]
    cannot = f"on_change: its sources cannot be watched ({signals.untracked_because})"
    if view.schedule is not None:
        return True, [f"{cannot}; it refreshes on its schedule only"]
    if view.after:
        return True, [f"{cannot}; it refreshes after its upstream views only"]
    return False, [
        f"{cannot}, and it has no schedule and no after:, so it never refreshes; give it a schedule "
        "(e.g. schedule: '@hourly') or drop on_change"
    ]


def _target_lag_watch(conn: psycopg.Connection, view: ViewConfig, oid: int) -> tuple[bool, list[str]]:
    """What a ``target_lag`` view's watcher sees: the sources it watches, or the period it refreshes on instead."""
    from airflow_matview.freshness import DEFAULT_FIRE_TO_COMMIT_SECONDS, unwatched_period

    target = view.target_lag.total_seconds() if view.target_lag is not None else 0.0
    signals = read_change_signals(conn, [oid])[oid]
    if signals.untracked_because is None:
        sources = ", ".join(sorted(set(signals.source_names.values())))
        return True, [f"target_lag {format_seconds(target)}: watches {sources}"]
    period = unwatched_period(
        target,
        view.poll_interval.total_seconds(),
        view.watch_min_interval.total_seconds(),
        DEFAULT_FIRE_TO_COMMIT_SECONDS,
    )
    return True, [
        f"target_lag {format_seconds(target)}: its sources cannot be watched ({signals.untracked_because}); it "
        f"refreshes every {format_seconds(period)} instead, and its lag is the age of its last refresh"
    ]


def pool_problems(views: Iterable[ViewConfig], existing: dict[str, AirflowPool]) -> dict[str, str]:
    """Per DAG id, why its pool cannot run it as configured: the pool is missing, has fewer slots than the task
    takes, or does not count deferred tasks while the view's refresh is deferrable (more refreshes than slots would
    then run at once in the triggerer).

    :param existing: Airflow's pools by name.
    """
    problems: dict[str, str] = {}
    for view in views:
        if view.pool is None:
            continue
        pool = existing.get(view.pool)
        if pool is None:
            problems[view.resolved_dag_id] = (
                f"pool: {view.pool!r} does not exist in Airflow, which never starts a task whose pool is missing; "
                f"create it: airflow pools set {view.pool} 2 'matview refreshes' (or Admin -> Pools)"
            )
        elif 0 <= pool.slots < view.pool_slots:
            problems[view.resolved_dag_id] = (
                f"pool: {view.pool!r} has {pool.slots} slot(s), fewer than this view's pool_slots "
                f"({view.pool_slots}): the task can never start; add slots or lower pool_slots"
            )
        elif view.deferrable and not pool.include_deferred and pool.slots >= 0:
            problems[view.resolved_dag_id] = (
                f"pool: {view.pool!r} does not count deferred tasks (include_deferred is off): while this deferrable "
                f"refresh runs in the triggerer it holds no slot, so more than {pool.slots} refreshes can run at "
                f"once; fix: airflow pools set {shlex.quote(view.pool)} {pool.slots} {shlex.quote(pool.description)} "
                "--include-deferred (or tick Include Deferred in Admin -> Pools)"
            )
    return problems


@dataclass(frozen=True)
class AirflowPool:
    """An Airflow pool: its slots (-1 for unlimited), whether deferred tasks take slots, its description."""

    slots: int
    include_deferred: bool
    description: str


def airflow_pools() -> dict[str, AirflowPool]:
    """Airflow's pools by name, read from its metadata database (not at parse time).

    :raises RuntimeError: when the metadata database cannot be read.
    """
    try:
        from airflow.models.pool import Pool
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            rows = session.execute(select(Pool.pool, Pool.slots, Pool.include_deferred, Pool.description))
            return {
                str(name): AirflowPool(int(slots), bool(include_deferred), str(description or ""))
                for name, slots, include_deferred, description in rows
            }
    except Exception as error:
        raise RuntimeError(unreadable_metadata("pools", error)) from None
