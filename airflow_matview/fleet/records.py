"""The fleet overview's data: every view this provider refreshes, read from Airflow's metadata database only.

A view is found through its DAG's task outlet: the refresh task declares the ``matview://<conn_id>/<schema>/<name>``
asset (see :mod:`airflow_matview.assets`), so the view and its connection come from the asset URI, and the
api-server never connects to a user database. Each kind of record is read with one query for all views (DAGs,
tags, schedule references, recent task instances, task-instance aggregates, the last asset event, the latest
serialized DAG), so the cost grows with the number of rows read, not with one round trip per view.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from sqlalchemy import JSON, Numeric, and_, case, cast, func, select, type_coerce

from airflow_matview.version_compat import asset_watcher_asset_id, deadline_alert_model

if TYPE_CHECKING:
    from collections.abc import Collection

    from sqlalchemy.orm import Session
    from sqlalchemy.sql import Select

ASSET_PREFIX = "matview://"
RECENT_RUNS = 20
FAILED_STATES = frozenset({"failed", "upstream_failed"})
STATUSES = ("fresh", "stale", "failing", "paused")


@dataclasses.dataclass
class FleetView:
    """One row of the fleet overview; every time is ISO 8601 in UTC, every age and duration in seconds."""

    view: str
    conn_id: str
    dag_id: str
    task_id: str
    tags: list[str]
    paused: bool
    schedule: str
    timezone: str | None
    after: list[str]
    on_change: bool
    next_run: str | None
    last_success: str | None
    last_success_age: float | None
    fresh_as_of: str | None
    staleness: float | None
    last_state: str | None
    last_run_start: str | None
    mode: str | None
    rows: int | None
    duration: float | None
    refresh_seconds: float | None
    recent_states: list[str | None]
    recent_seconds: list[float | None]
    skipped_runs: int
    failed_runs: int
    max_staleness: float | None
    breached: bool
    status: str


def view_of_uri(uri: str) -> tuple[str, str]:
    """``(conn_id, "schema.name")`` of a ``matview://`` asset URI."""
    conn_id, schema, name = (unquote(part) for part in uri[len(ASSET_PREFIX) :].split("/", 2))
    return conn_id, f"{schema}.{name}"


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if value else None


def _restrict(query: Select, column: Any, dag_ids: Collection[str] | None) -> Select:
    return query if dag_ids is None else query.where(column.in_(dag_ids))


def load_fleet(
    session: Session, dag_ids: Collection[str] | None = None, now: datetime | None = None
) -> list[FleetView]:
    """Every refreshed view whose DAG is in ``dag_ids`` (all when ``None``), sorted by view name.

    :param session: a session on Airflow's metadata database.
    :param dag_ids: the DAGs the user may read (from the auth manager); ``None`` for no restriction.
    :param now: the time ages are measured from (default: the current time).
    """
    from airflow.models.asset import (
        AssetEvent,
        AssetModel,
        DagScheduleAssetReference,
        TaskOutletAssetReference,
    )
    from airflow.models.dag import DagModel, DagTag
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.models.taskinstance import TaskInstance

    now = now or datetime.now(timezone.utc)
    db = session.connection()  # Core rows: the ORM's row loading cost more than some of the queries
    outlets = _restrict(
        select(
            AssetModel.id,
            AssetModel.uri,
            TaskOutletAssetReference.dag_id,
            TaskOutletAssetReference.task_id,
            DagModel.is_paused,
            DagModel.timetable_summary,
            DagModel.next_dagrun_create_after,
        )
        .join(AssetModel, AssetModel.id == TaskOutletAssetReference.asset_id)
        .join(DagModel, DagModel.dag_id == TaskOutletAssetReference.dag_id)
        .where(AssetModel.uri.startswith(ASSET_PREFIX), DagModel.is_stale.is_(False)),
        TaskOutletAssetReference.dag_id,
        dag_ids,
    )
    rows = db.execute(outlets).all()
    if not rows:
        return []
    # One view per DAG, as the factory builds them: the first task (by task_id) that emits a matview:// asset.
    outlet: dict[str, Any] = {}
    for row in sorted(rows, key=lambda r: (r.dag_id, r.task_id)):
        outlet.setdefault(row.dag_id, row)
    wanted = list(outlet)
    refresh = (
        select(TaskOutletAssetReference.dag_id, func.min(TaskOutletAssetReference.task_id).label("task_id"))
        .join(AssetModel, AssetModel.id == TaskOutletAssetReference.asset_id)
        .where(AssetModel.uri.startswith(ASSET_PREFIX))
        .group_by(TaskOutletAssetReference.dag_id)
    )
    refresh = _restrict(refresh, TaskOutletAssetReference.dag_id, dag_ids)
    refresh_tasks = refresh.subquery()
    names = {row.uri: view_of_uri(row.uri) for row in rows}

    tags: dict[str, list[str]] = defaultdict(list)
    for dag_id, name in db.execute(
        select(DagTag.dag_id, DagTag.name).where(DagTag.dag_id.in_(wanted)).order_by(DagTag.name)
    ):
        tags[dag_id].append(name)

    after: dict[str, list[str]] = defaultdict(list)
    on_change: set[str] = set()
    watcher_asset_id = asset_watcher_asset_id()
    watched = select(watcher_asset_id).where(watcher_asset_id == AssetModel.id).exists()
    for dag_id, uri, has_watcher in db.execute(
        select(DagScheduleAssetReference.dag_id, AssetModel.uri, watched)
        .join(AssetModel, AssetModel.id == DagScheduleAssetReference.asset_id)
        .where(DagScheduleAssetReference.dag_id.in_(wanted))
        .order_by(AssetModel.uri)
    ):
        if has_watcher:
            on_change.add(dag_id)
        elif uri.startswith(ASSET_PREFIX):
            after[dag_id].append((names.get(uri) or view_of_uri(uri))[1])

    ti_join = and_(
        TaskInstance.dag_id == refresh_tasks.c.dag_id,
        TaskInstance.task_id == refresh_tasks.c.task_id,
    )
    # Latest first by start (a task not started yet is the latest); no join to dag_run, which cost more than the rest.
    latest_first = (TaskInstance.start_date.desc().nulls_first(), TaskInstance.id.desc())
    ranked = (
        select(
            TaskInstance.dag_id,
            TaskInstance.state,
            TaskInstance.duration,
            TaskInstance.start_date,
            func.row_number().over(partition_by=TaskInstance.dag_id, order_by=latest_first).label("rank"),
        )
        .join(refresh_tasks, ti_join)
        .where(TaskInstance.map_index == -1)
        .subquery()
    )
    recent_states: dict[str, list[str | None]] = defaultdict(list)
    recent_seconds: dict[str, list[float | None]] = defaultdict(list)
    last_run_start: dict[str, datetime] = {}
    recent_rows = ranked.c.rank <= RECENT_RUNS
    first_start = func.max(case((ranked.c.rank == 1, ranked.c.start_date)))
    if db.dialect.name == "postgresql":  # one row per view, the arrays built by the server
        from sqlalchemy.dialects.postgresql import aggregate_order_by

        oldest_first = ranked.c.rank.desc()
        for dag_id, states, durations, started in db.execute(
            select(
                ranked.c.dag_id,
                func.array_agg(aggregate_order_by(ranked.c.state, oldest_first)),
                func.array_agg(aggregate_order_by(func.round(cast(ranked.c.duration, Numeric), 3), oldest_first)),
                first_start,
            )
            .where(recent_rows)
            .group_by(ranked.c.dag_id)
        ):
            recent_states[dag_id] = states
            recent_seconds[dag_id] = [None if value is None else float(value) for value in durations]
            if started is not None:
                last_run_start[dag_id] = started
    else:
        for dag_id, state, seconds, started in db.execute(
            select(ranked.c.dag_id, ranked.c.state, ranked.c.duration, case((ranked.c.rank == 1, ranked.c.start_date)))
            .where(recent_rows)
            .order_by(ranked.c.dag_id, ranked.c.rank.desc())
        ):
            recent_states[dag_id].append(state)
            recent_seconds[dag_id].append(None if seconds is None else round(seconds, 3))
            if started is not None:
                last_run_start[dag_id] = started

    def _when(state: str, column: Any) -> Any:
        return func.max(case((TaskInstance.state == state, column)))

    def _count(states: Collection[str]) -> Any:
        return func.count(case((TaskInstance.state.in_(states), 1)))

    totals = {
        row.dag_id: row
        for row in db.execute(
            select(
                TaskInstance.dag_id,
                _when("success", TaskInstance.end_date).label("last_success"),
                _when("skipped", TaskInstance.end_date).label("last_skip"),
                _count(["skipped"]).label("skipped"),
                _count(FAILED_STATES).label("failed"),
            )
            .join(refresh_tasks, ti_join)
            .group_by(TaskInstance.dag_id)
        )
    }

    last_event_ids = (
        select(func.max(AssetEvent.id))
        .where(AssetEvent.asset_id.in_([row.id for row in outlet.values()]))
        .group_by(AssetEvent.asset_id)
    )
    events = {
        asset_id: extra if isinstance(extra, dict) else {}
        for asset_id, extra in db.execute(
            select(AssetEvent.asset_id, AssetEvent.extra).where(AssetEvent.id.in_(last_event_ids))
        )
    }

    # As JSON whatever the column's declared type (a JSONField on Airflow 3.1, which has no JSON operators).
    serialized = type_coerce(SerializedDagModel._data, JSON)
    latest_version = (
        select(
            SerializedDagModel.id,
            SerializedDagModel.dag_id,
            serialized["dag"]["timetable"].label("timetable"),
            func.row_number()
            .over(partition_by=SerializedDagModel.dag_id, order_by=SerializedDagModel.created_at.desc())
            .label("rank"),
        )
        .where(SerializedDagModel.dag_id.in_(wanted))
        .subquery()
    )
    latest = select(latest_version.c.id, latest_version.c.dag_id, latest_version.c.timetable).where(
        latest_version.c.rank == 1
    )
    timetables = {row.dag_id: row.timetable for row in db.execute(latest)}
    deadlines: dict[str, list[Any]] = defaultdict(list)
    latest_ids = latest.with_only_columns(latest_version.c.id)
    alerts = deadline_alert_model()
    if alerts is not None:
        query = (
            select(SerializedDagModel.dag_id, alerts.interval)
            .join(SerializedDagModel, SerializedDagModel.id == alerts.serialized_dag_id)
            .where(alerts.serialized_dag_id.in_(latest_ids))
        )
    else:  # Airflow 3.1: the alerts are inside the serialized DAG
        query = select(SerializedDagModel.dag_id, serialized["dag"]["deadline"]).where(
            SerializedDagModel.id.in_(latest_ids)
        )
    for dag_id, interval in db.execute(query):
        deadlines[dag_id].extend(_intervals(interval) if alerts is None else [interval])

    views = []
    for dag_id, row in outlet.items():
        conn_id, view = names[row.uri]
        total = totals.get(dag_id)
        states = recent_states.get(dag_id, [])
        durations = recent_seconds.get(dag_id, [])
        event = events.get(row.id, {})
        last_success = total.last_success if total else None
        fresh_as_of = max((t for t in (last_success, total.last_skip if total else None) if t), default=None)
        staleness = round((now - fresh_as_of).total_seconds(), 1) if fresh_as_of else None
        budget = max_staleness_of(deadlines.get(dag_id, []))
        breached = budget is not None and (staleness is None or staleness > budget)
        last_state = states[-1] if states else None
        last_duration = next(
            (d for st, d in zip(reversed(states), reversed(durations), strict=True) if st == "success"), None
        )
        views.append(
            FleetView(
                view=view,
                conn_id=conn_id,
                dag_id=dag_id,
                task_id=row.task_id,
                tags=tags.get(dag_id, []),
                paused=bool(row.is_paused),
                schedule=_schedule_text(row.timetable_summary),
                timezone=timezone_of(timetables.get(dag_id)),
                after=after.get(dag_id, []),
                on_change=dag_id in on_change,
                next_run=None if row.is_paused else _iso(row.next_dagrun_create_after),
                last_success=_iso(last_success),
                last_success_age=round((now - last_success).total_seconds(), 1) if last_success else None,
                fresh_as_of=_iso(fresh_as_of),
                staleness=staleness,
                last_state=last_state,
                last_run_start=_iso(last_run_start.get(dag_id)),
                mode=event.get("mode"),
                rows=event.get("rows"),
                duration=last_duration,
                refresh_seconds=event.get("seconds"),
                recent_states=states,
                recent_seconds=durations,
                skipped_runs=total.skipped if total else 0,
                failed_runs=total.failed if total else 0,
                max_staleness=budget,
                breached=breached,
                status=_status(bool(row.is_paused), last_state, breached, fresh_as_of),
            )
        )
    return sorted(views, key=lambda v: (v.view, v.conn_id))


def _status(paused: bool, last_state: str | None, breached: bool, fresh_as_of: datetime | None) -> str:
    """``failing`` (the last run failed), else ``paused``, else ``stale`` (over budget or never refreshed), else
    ``fresh``."""
    if last_state in FAILED_STATES:
        return "failing"
    if paused:
        return "paused"
    if breached or fresh_as_of is None:
        return "stale"
    return "fresh"


def _schedule_text(summary: str | None) -> str:
    """The time part of the schedule: the cron or preset, or ``""`` when only assets (or nothing) trigger it."""
    if not summary or summary in ("None", "Asset", "Partitioned Asset"):
        return ""
    return summary.removeprefix("Asset or ")


def timezone_of(timetable: Any) -> str | None:
    """The timezone of a serialized timetable (``{"__type": ..., "__var": {"timezone": ...}}``), also nested
    inside an asset-or-time schedule."""
    while isinstance(timetable, dict):
        var = timetable.get("__var")
        if not isinstance(var, dict):
            return None
        tz = var.get("timezone")
        if isinstance(tz, str):
            return tz
        timetable = var.get("timetable")
    return None


def max_staleness_of(intervals: Collection[Any]) -> float | None:
    """The staleness budget in seconds: the shortest interval of the DAG's Deadline Alerts.

    Airflow stores each alert's ``interval`` (table ``deadline_alert``) as its serde form of a timedelta
    (``{"__classname__": "datetime.timedelta", "__data__": 3600.0, ...}``) or a number of seconds; anything else
    (e.g. an interval read from a Variable at run time) is ignored.
    """
    budgets = []
    for interval in intervals:
        seconds = interval.get("__data__") if isinstance(interval, dict) else interval
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 0:
            budgets.append(float(seconds))
    return min(budgets, default=None)


def _intervals(deadline: Any) -> list[Any]:
    """The intervals of Deadline Alerts serialized inside a DAG (Airflow 3.1: ``{"__var": {"interval": ...}}``)."""
    alerts = deadline if isinstance(deadline, list) else [deadline]
    found = []
    for alert in alerts:
        while isinstance(alert, dict) and "interval" not in alert and "__var" in alert:
            alert = alert["__var"]
        if isinstance(alert, dict) and "interval" in alert:
            found.append(alert["interval"])
    return found


def summarize(views: list[FleetView]) -> dict[str, int]:
    """How many views are fresh, stale, failing and paused."""
    counts = dict.fromkeys(STATUSES, 0)
    for view in views:
        counts[view.status] += 1
    return counts


def as_json(views: list[FleetView], now: datetime | None = None) -> dict[str, Any]:
    """The JSON document served by the plugin (see docs/fleet.md)."""
    return {
        "generated_at": _iso(now or datetime.now(timezone.utc)),
        "counts": summarize(views),
        "total": len(views),
        "views": [dict(vars(view)) for view in views],
    }
