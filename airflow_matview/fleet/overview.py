"""The fleet overview: one row per view this provider refreshes, assembled from the records of
:mod:`airflow_matview.fleet.records`, and the JSON document the plugin serves."""

from __future__ import annotations

import dataclasses
import functools
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_matview.fleet import records

if TYPE_CHECKING:
    from collections.abc import Collection

    from sqlalchemy.engine import Row
    from sqlalchemy.orm import Session

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


@dataclasses.dataclass
class _Records:
    """Every record of the wanted views, by DAG id (see :mod:`airflow_matview.fleet.records`)."""

    outlets: records.Outlets
    tags: dict[str, list[str]]
    after: dict[str, list[str]]
    on_change: set[str]
    recent: records.RecentRuns
    totals: dict[str, Row[Any]]
    events: dict[int, dict[str, Any]]
    timetables: dict[str, Any]
    deadlines: dict[str, list[Any]]


def load_fleet(
    session: Session, dag_ids: Collection[str] | None = None, now: datetime | None = None
) -> list[FleetView]:
    """Every refreshed view whose DAG is in ``dag_ids`` (all when ``None``), sorted by view name.

    :param session: a session on Airflow's metadata database.
    :param dag_ids: the DAGs the user may read (from the auth manager); ``None`` for no restriction.
    :param now: the time ages are measured from (default: the current time).
    """
    db = session.connection()  # Core rows: the ORM's row loading cost more than some of the queries
    outlets = records.read_outlets(db, dag_ids)
    if not outlets.rows:
        return []
    wanted = list(outlets.rows)
    tasks = records.refresh_tasks(dag_ids)
    after, on_change = records.read_schedule_assets(db, wanted)
    found = _Records(
        outlets=outlets,
        tags=records.read_tags(db, wanted),
        after=after,
        on_change=on_change,
        recent=records.read_recent_runs(db, tasks),
        totals=records.read_totals(db, tasks),
        events=records.read_last_events(db, [row.id for row in outlets.rows.values()]),
        timetables=records.read_timetables(db, wanted),
        deadlines=records.read_deadline_intervals(db, wanted),
    )
    now = now or datetime.now(timezone.utc)
    views = [_view(dag_id, found, now) for dag_id in outlets.rows]
    return sorted(views, key=lambda v: (v.view, v.conn_id))


def _view(dag_id: str, found: _Records, now: datetime) -> FleetView:
    row = found.outlets.rows[dag_id]
    conn_id, view = found.outlets.views[dag_id]
    total = found.totals.get(dag_id)
    states = found.recent.states.get(dag_id, [])
    durations = found.recent.seconds.get(dag_id, [])
    event = found.events.get(row.id, {})
    last_success = total.last_success if total else None
    fresh_as_of = max((t for t in (last_success, total.last_skip if total else None) if t), default=None)
    staleness = round((now - fresh_as_of).total_seconds(), 1) if fresh_as_of else None
    budget = max_staleness_of(found.deadlines.get(dag_id, []))
    breached = budget is not None and (staleness is None or staleness > budget)
    last_state = states[-1] if states else None
    return FleetView(
        view=view,
        conn_id=conn_id,
        dag_id=dag_id,
        task_id=row.task_id,
        tags=found.tags.get(dag_id, []),
        paused=bool(row.is_paused),
        schedule=_schedule_text(row.timetable_summary),
        timezone=timezone_of(found.timetables.get(dag_id)),
        after=found.after.get(dag_id, []),
        on_change=dag_id in found.on_change,
        next_run=None if row.is_paused else _iso(row.next_dagrun_create_after),
        last_success=_iso(last_success),
        last_success_age=round((now - last_success).total_seconds(), 1) if last_success else None,
        fresh_as_of=_iso(fresh_as_of),
        staleness=staleness,
        last_state=last_state,
        last_run_start=_iso(found.recent.last_start.get(dag_id)),
        mode=event.get("mode"),
        rows=event.get("rows"),
        duration=next(
            (d for st, d in zip(reversed(states), reversed(durations), strict=True) if st == "success"), None
        ),
        refresh_seconds=event.get("seconds"),
        recent_states=states,
        recent_seconds=durations,
        skipped_runs=total.skipped if total else 0,
        failed_runs=total.failed if total else 0,
        max_staleness=budget,
        breached=breached,
        status=_status(bool(row.is_paused), last_state, breached, fresh_as_of),
    )


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if value else None


def _status(paused: bool, last_state: str | None, breached: bool, fresh_as_of: datetime | None) -> str:
    """``failing`` (the last run failed), else ``paused``, else ``stale`` (over budget or never refreshed), else
    ``fresh``."""
    if last_state in records.FAILED_STATES:
        return "failing"
    if paused:
        return "paused"
    if breached or fresh_as_of is None:
        return "stale"
    return "fresh"


def _schedule_text(summary: str | None) -> str:
    """The time part of the schedule: the cron or preset, or ``""`` when only assets (or nothing) trigger it.

    Airflow keeps a preset as its cron (``@daily`` as ``0 0 * * *``): a preset's cron is shown as the preset.
    """
    if not summary or summary in ("None", "Asset", "Partitioned Asset"):
        return ""
    cron = summary.removeprefix("Asset or ")
    return _presets().get(cron, cron)


@functools.cache
def _presets() -> dict[str, str]:
    """Airflow's presets by their cron (``@yearly`` and ``@annually`` share one: the first is kept)."""
    from airflow.utils.dates import cron_presets

    presets: dict[str, str] = {}
    for preset, cron in cron_presets.items():
        presets.setdefault(cron, preset)
    return presets


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


def summarize(views: list[FleetView]) -> dict[str, int]:
    """How many views are fresh, stale, failing and paused."""
    counts = dict.fromkeys(STATUSES, 0)
    for view in views:
        counts[view.status] += 1
    return counts


def as_json(views: list[FleetView], now: datetime | None = None) -> dict[str, Any]:
    """The JSON document served by the plugin (see the README's *Fleet overview*)."""
    return {
        "generated_at": _iso(now or datetime.now(timezone.utc)),
        "counts": summarize(views),
        "total": len(views),
        "views": [dict(vars(view)) for view in views],
    }
