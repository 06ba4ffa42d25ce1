"""The fleet overview: one row per view this provider refreshes, assembled from the records of
:mod:`airflow_matview.fleet.records`, and the JSON document the plugin serves.

Every value comes from Airflow's metadata database, where DAG authors and anyone allowed to post an asset event
wrote it, so each one is checked for its type and range here: a value that fails is left out (``None``) and a
record that cannot be read at all is skipped, and both are counted in the document's ``skipped_records``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections import Counter
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeGuard, get_args

from airflow_matview import lag_history
from airflow_matview.database.identifiers import MAX_IDENTIFIER_BYTES, control_character
from airflow_matview.database.refresh import RefreshMode
from airflow_matview.fleet import records
from airflow_matview.fleet.links import view_links
from airflow_matview.freshness import Lag, lags_of

if TYPE_CHECKING:
    from collections.abc import Collection

    from sqlalchemy.engine import Row
    from sqlalchemy.orm import Session

    from airflow_matview.database.identifiers import QualifiedName

STATUSES = ("fresh", "stale", "failing", "paused")
LAG_STATES = ("within", "over", "unknown")
MODES = frozenset(get_args(RefreshMode))
# Airflow's own limits: KEY_REGEX for DAG and task ids, TAG_MAX_LEN for tags, String(1000) for timetable summaries.
_AIRFLOW_KEY = re.compile(r"[\w.-]{1,250}")
_TIMEZONE = re.compile(r"[A-Za-z0-9_+:/-]{1,64}")
CONN_ID_MAX_LEN = 250
TAG_MAX_LEN = 100
SCHEDULE_MAX_LEN = 1000
MAX_COUNT = 2**53  # the largest integer a browser reads exactly


def _task_states() -> frozenset[str]:
    from airflow.utils.state import TaskInstanceState

    return frozenset(state.value for state in TaskInstanceState)


@dataclasses.dataclass
class FleetView:
    """One row of the fleet overview; every time is ISO 8601 in UTC, every age and duration in seconds.

    ``pending_since`` is when the oldest run queued after the last successful one, and not successful itself, was
    queued (``pending_for`` seconds ago).

    ``lag`` and the fields after it are the lag monitor's measurement (``target_lag`` and ``max_staleness``, see
    :mod:`airflow_matview.freshness`), computed from what it stored as it computes it for its alerts; ``lag_state``
    is ``within``, ``over`` (its threshold: ``max_staleness``, else ``target_lag``) or ``unknown``, and ``None`` (as
    the others) for a view it does not measure. ``breached`` is true when its lag is over its ``max_staleness`` or
    unknown: when its ``on_stale`` notifiers are told. ``lag_history`` is its lag over the last 24 hours
    (:mod:`airflow_matview.lag_history`), oldest first, each ``[bucket_start, max_lag, over, unknown]`` (seconds since
    the epoch; seconds or ``None``; two booleans), the lag shown in ``lag`` folded into the latest bucket.
    """

    view: str
    conn_id: str
    dag_id: str
    task_id: str
    tags: list[str]
    paused: bool
    schedule: str
    timezone: str | None
    after: list[str]
    other_assets: int
    on_change: bool
    next_run: str | None
    last_success: str | None
    last_success_age: float | None
    fresh_as_of: str | None
    staleness: float | None
    pending_since: str | None
    pending_for: float | None
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
    target_lag: float | None
    lag: float | None
    lag_state: str | None
    lag_basis: str | None
    lag_since: str | None
    lag_reason: str | None
    lag_alert_reason: str | None
    lag_history: list[list[Any]] | None
    status: str
    links: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Fleet:
    """The rows of the overview, and what was left out of them.

    :param views: one row per view, sorted by view name.
    :param skipped: per kind of record or value, how many could not be read and were left out.
    """

    views: list[FleetView]
    skipped: Counter[str] = dataclasses.field(default_factory=Counter)


class _Checker:
    """Checks each value read from the metadata database, counting in :attr:`skipped` those left out."""

    def __init__(self) -> None:
        self.skipped: Counter[str] = Counter()
        self.states = _task_states()

    def drop(self, kind: str) -> None:
        self.skipped[kind] += 1

    def keep(self, value: Any, valid: bool, kind: str) -> Any:
        """``value`` when ``None`` or ``valid``; else ``None``, counted under ``kind``."""
        if value is None or valid:
            return value
        self.drop(kind)
        return None

    def count(self, value: Any, kind: str) -> int | None:
        """A whole number of things (``rows``), or ``None``."""
        return self.keep(value, _is_number(value) and isinstance(value, int) and value <= MAX_COUNT, kind)

    def seconds(self, value: Any, kind: str) -> float | None:
        """A finite, non-negative number of seconds, or ``None``."""
        seconds = self.keep(value, _is_number(value) and math.isfinite(value), kind)
        return None if seconds is None else round(float(seconds), 3)

    def choice(self, value: Any, allowed: Collection[str], kind: str) -> str | None:
        """One of ``allowed``, or ``None``."""
        return self.keep(value, isinstance(value, str) and value in allowed, kind)

    def text(self, value: Any, kind: str, limit: int, pattern: re.Pattern[str] | None = None) -> str | None:
        """A string of 1 to ``limit`` characters without control characters (matching ``pattern``), or ``None``."""
        return self.keep(value, _is_text(value, limit, pattern), kind)

    def texts(self, values: Collection[Any], kind: str, limit: int) -> list[str]:
        return [text for value in values if (text := self.text(value, kind, limit)) is not None]

    def history(self, value: Any, now: float) -> list[lag_history.Point]:
        """The points of a stored 24-hour lag series (see :func:`airflow_matview.lag_history.load`); each item that
        is not one is counted under ``lag history``."""
        points, refused = lag_history.load(value, now)
        if refused:
            self.skipped["lag history"] += refused
        return points

    def views(self, names: Collection[QualifiedName], kind: str) -> list[str]:
        """``schema.name`` of each of ``names`` that PostgreSQL could have stored."""
        shown = []
        for name in names:
            if _is_identifier(name.schema) and _is_identifier(name.name):
                shown.append(str(name))
            else:
                self.drop(kind)
        return shown


def _is_text(value: Any, limit: int, pattern: re.Pattern[str] | None = None) -> bool:
    """Whether ``value`` is a string of 1 to ``limit`` characters without control characters (matching
    ``pattern``)."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= limit
        and control_character(value) is None
        and (pattern is None or pattern.fullmatch(value) is not None)
    )


def _is_number(value: Any) -> TypeGuard[int | float]:
    """Whether ``value`` is a number (not a bool), not negative."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _is_identifier(part: str | None) -> bool:
    return part is not None and _is_text(part, MAX_IDENTIFIER_BYTES) and len(part.encode()) <= MAX_IDENTIFIER_BYTES


@dataclasses.dataclass
class _Records:
    """Every record of the wanted views, by DAG id (see :mod:`airflow_matview.fleet.records`)."""

    outlets: records.Outlets
    tags: dict[str, list[str]]
    schedule: records.ScheduleAssets
    recent: records.RecentRuns
    totals: dict[str, Row[Any]]
    events: dict[int, tuple[datetime, Any]]
    results: dict[str, tuple[datetime, Any]]
    pending: dict[str, datetime]
    timetables: dict[str, Any]
    lags: dict[tuple[str, str], tuple[Lag, dict[str, Any]]]


def load_fleet(session: Session, dag_ids: Collection[str] | None = None, now: datetime | None = None) -> Fleet:
    """Every refreshed view whose DAG is in ``dag_ids`` (all when ``None``), sorted by view name.

    :param session: a session on Airflow's metadata database.
    :param dag_ids: the DAGs the user may read (from the auth manager); ``None`` for no restriction.
    :param now: the time ages are measured from (default: the current time).
    """
    db = session.connection()  # Core rows: the ORM's row loading cost more than some of the queries
    outlets = records.read_outlets(db, dag_ids)
    check = _Checker()
    check.skipped["asset URI"] += outlets.unreadable
    if not outlets.rows:
        return Fleet([], check.skipped)
    wanted = list(outlets.rows)
    tasks = records.refresh_tasks(dag_ids)
    found = _Records(
        outlets=outlets,
        tags=records.read_tags(db, wanted),
        schedule=records.read_schedule_assets(db, wanted),
        recent=records.read_recent_runs(db, tasks),
        totals=records.read_totals(db, tasks),
        events=records.read_last_events(db, [row.id for row in outlets.rows.values()]),
        results=records.read_last_results(db, tasks),
        pending=records.read_pending_runs(db, wanted),
        timetables=records.read_timetables(db, wanted),
        lags={},
    )
    check.skipped["asset URI"] += found.schedule.unreadable
    now = now or datetime.now(timezone.utc)
    for conn_id, states in records.read_lag_states(db).items():
        for name, lag in lags_of(states, now.timestamp()).items():
            found.lags[(conn_id, name)] = (lag, states[name])
    views = [view for dag_id in outlets.rows if (view := _view(dag_id, found, now, check)) is not None]
    return Fleet(sorted(views, key=lambda v: (v.view, v.conn_id)), check.skipped)


def _view(dag_id: str, found: _Records, now: datetime, check: _Checker) -> FleetView | None:
    """The row of one view, or ``None`` (counted) when its names cannot be those of a view and its DAG."""
    row = found.outlets.rows[dag_id]
    conn_id, name = found.outlets.views[dag_id]
    if not (
        _is_identifier(name.schema)
        and _is_identifier(name.name)
        and _is_text(conn_id, CONN_ID_MAX_LEN)
        and _is_text(dag_id, 250, _AIRFLOW_KEY)
    ):
        check.drop("view")
        return None
    total = found.totals.get(dag_id)
    fresh_as_of = max((t for t in (total.last_success, total.last_skip) if t), default=None) if total else None
    states = [check.choice(state, check.states, "run state") for state in found.recent.states.get(dag_id, [])]
    last_state = states[-1] if states else None
    measured = found.lags.get((conn_id, str(name)))
    state = measured[1] if measured is not None else {}
    threshold = check.seconds(state.get("alert_after", state.get("target")), "max_staleness")
    lag = _lag(measured, threshold, now, check)
    alert_key = check.choice(state.get("alert_key"), ("max_staleness", "target_lag"), "alert key")
    budget = _budget(dag_id, found, now, threshold if alert_key == "max_staleness" else None, lag)
    task_id = check.text(row.task_id, "task id", 250, _AIRFLOW_KEY) or ""
    return FleetView(
        view=str(name),
        conn_id=conn_id,
        dag_id=dag_id,
        task_id=task_id,
        tags=check.texts(found.tags.get(dag_id, []), "tag", TAG_MAX_LEN),
        paused=bool(row.is_paused),
        schedule=check.text(_schedule_text(row.timetable_summary), "schedule", SCHEDULE_MAX_LEN) or "",
        timezone=check.text(timezone_of(found.timetables.get(dag_id), check), "timezone", 64, _TIMEZONE),
        after=check.views(found.schedule.after.get(dag_id, []), "asset URI"),
        other_assets=found.schedule.others.get(dag_id, 0),
        on_change=dag_id in found.schedule.on_change,
        next_run=None if row.is_paused else _iso(row.next_dagrun_create_after),
        last_success=_iso(total.last_success if total else None),
        last_success_age=_age(total.last_success if total else None, now),
        fresh_as_of=_iso(fresh_as_of),
        staleness=_age(fresh_as_of, now),
        last_state=last_state,
        last_run_start=_iso(found.recent.last_start.get(dag_id)),
        **_last_refresh(_last_report(found, dag_id, row.id), states, found.recent.seconds.get(dag_id, []), check),
        **budget,
        **lag,
        skipped_runs=total.skipped if total else 0,
        failed_runs=total.failed if total else 0,
        status=_status(bool(row.is_paused), last_state, budget["breached"] or lag["lag_state"] == "over", fresh_as_of),
        links=view_links(str(name), conn_id, dag_id, task_id),
    )


def _lag(
    measured: tuple[Lag, dict[str, Any]] | None, threshold: float | None, now: datetime, check: _Checker
) -> dict[str, Any]:
    """The lag monitor's fields of a row (all ``None`` for a view it does not measure): ``lag_state`` is ``over``
    when the lag is over ``threshold``, the lag at which its notifiers are told (``max_staleness``, else
    ``target_lag``)."""
    if measured is None:
        names = ("target_lag", "lag", "lag_state", "lag_basis", "lag_since", "lag_reason", "lag_alert_reason")
        return dict.fromkeys((*names, "lag_history"))
    lag, state = measured
    target = check.seconds(state.get("target"), "target_lag")
    seconds = None if lag.seconds is None else round(lag.seconds, 1)
    since = datetime.fromtimestamp(lag.since, timezone.utc) if lag.since is not None else None
    over = threshold is not None and lag.over(threshold)
    points = lag_history.add(check.history(state.get("history"), now.timestamp()), lag, over, now.timestamp())
    return {
        "target_lag": target,
        "lag": seconds,
        "lag_state": "unknown" if seconds is None else ("over" if over else "within"),
        "lag_basis": lag.basis,
        "lag_since": _iso(since),
        "lag_reason": check.text(lag.reason, "lag reason", 1000),
        # Why the monitor said it is behind, as its alert said (with what the view's runs were doing then).
        "lag_alert_reason": check.text(state.get("alert_reason"), "lag reason", 2000)
        if state.get("alerting")
        else None,
        "lag_history": [[point.start, point.max_lag, point.over, point.unknown] for point in points],
    }


def _budget(dag_id: str, found: _Records, now: datetime, budget: float | None, lag: dict[str, Any]) -> dict[str, Any]:
    """The view's ``max_staleness`` (``budget``) and whether its lag is over it or unknown (when its ``on_stale``
    notifiers are told), and since when a run has waited to succeed."""
    pending_since = found.pending.get(dag_id)
    return {
        "pending_since": _iso(pending_since),
        "pending_for": _age(pending_since, now),
        "max_staleness": budget,
        "breached": budget is not None and lag["lag_state"] in ("over", "unknown"),
    }


def _last_report(found: _Records, dag_id: str, asset_id: int) -> Any:
    """What the latest refresh reported: its asset event's ``extra``, or its return value when that is newer (a
    refresh that ended in the triggerer registers no asset event)."""
    event, result = found.events.get(asset_id), found.results.get(dag_id)
    if result is not None and (event is None or result[0] > event[0]):
        return result[1]
    return None if event is None else event[1]


def _last_refresh(extra: Any, states: list[str | None], durations: list[Any], check: _Checker) -> dict[str, Any]:
    """What the last refresh reported in its asset event (``mode``, ``rows``, ``seconds``), and the durations of
    the latest tries."""
    if extra is None:
        extra = {}
    elif not isinstance(extra, dict):
        check.drop("asset event extra")
        extra = {}
    seconds = [check.seconds(value, "duration") for value in durations]
    return {
        "mode": check.choice(extra.get("mode"), MODES, "mode"),
        "rows": check.count(extra.get("rows"), "rows"),
        "duration": next(
            (d for st, d in zip(reversed(states), reversed(seconds), strict=True) if st == "success"), None
        ),
        "refresh_seconds": check.seconds(extra.get("seconds"), "seconds"),
        "recent_states": states,
        "recent_seconds": seconds,
    }


def _iso(value: Any) -> str | None:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else None


def _age(value: datetime | None, now: datetime) -> float | None:
    return round((now - value).total_seconds(), 1) if isinstance(value, datetime) else None


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


def _schedule_text(summary: str | None) -> str | None:
    """The time part of the schedule: the cron or preset, or ``None`` when only assets (or nothing) trigger it.

    Airflow keeps a preset as its cron (``@daily`` as ``0 0 * * *``): a preset's cron is shown as the preset.
    """
    if not isinstance(summary, str) or summary in ("", "None", "Asset", "Partitioned Asset"):
        return None
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


def timezone_of(timetable: Any, check: _Checker | None = None) -> str | None:
    """The timezone of a serialized timetable (``{"__type": ..., "__var": {"timezone": ...}}``), also nested
    inside an asset-or-time schedule; a timetable of another shape is counted by ``check``."""
    while isinstance(timetable, dict):
        var = timetable.get("__var")
        if not isinstance(var, dict):
            break
        if "timezone" in var:
            return var["timezone"]  # checked by the caller
        timetable = var.get("timetable")
        if timetable is None:
            return None
    if timetable is not None and check is not None:
        check.drop("timetable")
    return None


def summarize_lags(views: list[FleetView]) -> dict[str, int]:
    """How many measured views are within their target_lag, over it, and of unknown lag."""
    counts = dict.fromkeys(LAG_STATES, 0)
    for view in views:
        if view.lag_state is not None:
            counts[view.lag_state] += 1
    return counts


def summarize(views: list[FleetView]) -> dict[str, int]:
    """How many views are fresh, stale, failing and paused."""
    counts = dict.fromkeys(STATUSES, 0)
    for view in views:
        counts[view.status] += 1
    return counts


def as_json(fleet: Fleet, now: datetime | None = None) -> dict[str, Any]:
    """The JSON document served by the plugin (see docs/fleet.md)."""
    return {
        "generated_at": _iso(now or datetime.now(timezone.utc)),
        "counts": summarize(fleet.views),
        "lag_counts": summarize_lags(fleet.views),
        "lag_history_bucket_seconds": lag_history.BUCKET_SECONDS,
        "total": len(fleet.views),
        "skipped_records": sum(fleet.skipped.values()),
        "skipped": dict(sorted((kind, count) for kind, count in fleet.skipped.items() if count)),
        "views": [dict(vars(view)) for view in fleet.views],
    }
