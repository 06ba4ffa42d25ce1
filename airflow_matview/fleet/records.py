"""The fleet overview's records, read from Airflow's metadata database: one query per kind of record, for all views.

A view is found through its DAG's task outlet: the refresh task declares the ``matview://<conn_id>/<schema>/<name>``
asset (see :mod:`airflow_matview.assets`), so the view and its connection come from the asset URI, and the
api-server never connects to a user database. Each reader takes the DAGs wanted and returns a mapping by DAG id, so
the cost grows with the number of rows read, not with one round trip per view.
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from sqlalchemy import JSON, Numeric, and_, case, cast, func, or_, select, type_coerce

from airflow_matview.assets import SCHEME, parse_matview_uri
from airflow_matview.version_compat import asset_watcher_asset_id

if TYPE_CHECKING:
    from collections.abc import Collection
    from datetime import datetime

    from sqlalchemy.engine import Connection, Row
    from sqlalchemy.sql import Select, Subquery

    from airflow_matview.database.identifiers import QualifiedName

ASSET_PREFIX = f"{SCHEME}://"
RECENT_RUNS = 20
FAILED_STATES = frozenset({"failed", "upstream_failed"})


@dataclass
class Outlets:
    """The refresh task of each view's DAG (its first task, by task_id, that emits a ``matview://`` asset).

    :param rows: per DAG id: the asset (``id``, ``uri``), ``task_id`` and the DAG's ``is_paused``,
        ``timetable_summary`` and ``next_dagrun_create_after``.
    :param views: per DAG id, the connection id and the view, read from the asset URI.
    :param unreadable: how many ``matview://`` outlets are not ours to read (see
        :func:`~airflow_matview.assets.parse_matview_uri`), and were left out.
    """

    rows: dict[str, Row[Any]] = field(default_factory=dict)
    views: dict[str, tuple[str, QualifiedName]] = field(default_factory=dict)
    unreadable: int = 0


@dataclass
class RecentRuns:
    """The latest :data:`RECENT_RUNS` tries of each refresh task, oldest first, and when the latest one started."""

    states: dict[str, list[str | None]] = field(default_factory=dict)
    seconds: dict[str, list[float | None]] = field(default_factory=dict)
    last_start: dict[str, datetime] = field(default_factory=dict)


def _restrict(query: Any, column: Any, dag_ids: Collection[str] | None) -> Any:
    return query if dag_ids is None else query.where(column.in_(dag_ids))


def read_outlets(db: Connection, dag_ids: Collection[str] | None) -> Outlets:
    """Every DAG that refreshes a view, among ``dag_ids`` (all when ``None``), with its refresh task's asset."""
    from airflow.models.asset import AssetModel, TaskOutletAssetReference
    from airflow.models.dag import DagModel

    query = (
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
        .where(AssetModel.uri.startswith(ASSET_PREFIX), DagModel.is_stale.is_(False))
    )
    outlets = Outlets()
    for row in sorted(db.execute(_restrict(query, TaskOutletAssetReference.dag_id, dag_ids)), key=_by_task):
        parsed = parse_matview_uri(row.uri)
        if parsed is None:
            outlets.unreadable += 1
        elif row.dag_id not in outlets.rows:
            outlets.rows[row.dag_id] = row
            outlets.views[row.dag_id] = parsed
    return outlets


def _by_task(row: Row[Any]) -> tuple[str, str]:
    return row.dag_id, row.task_id


def refresh_tasks(dag_ids: Collection[str] | None) -> Subquery:
    """The ``(dag_id, task_id)`` of each view's refresh task, to join task instances on."""
    from airflow.models.asset import AssetModel, TaskOutletAssetReference

    query = (
        select(TaskOutletAssetReference.dag_id, func.min(TaskOutletAssetReference.task_id).label("task_id"))
        .join(AssetModel, AssetModel.id == TaskOutletAssetReference.asset_id)
        .where(AssetModel.uri.startswith(ASSET_PREFIX))
        .group_by(TaskOutletAssetReference.dag_id)
    )
    return _restrict(query, TaskOutletAssetReference.dag_id, dag_ids).subquery()


def read_tags(db: Connection, wanted: Collection[str]) -> dict[str, list[str]]:
    """Each DAG's tags, by name."""
    from airflow.models.dag import DagTag

    tags: dict[str, list[str]] = defaultdict(list)
    for dag_id, name in db.execute(
        select(DagTag.dag_id, DagTag.name).where(DagTag.dag_id.in_(wanted)).order_by(DagTag.name)
    ):
        tags[dag_id].append(name)
    return tags


@dataclass
class ScheduleAssets:
    """The assets each DAG is scheduled on, by DAG id.

    :param after: the views of its ``matview://`` assets: the ``after:`` of its config.
    :param on_change: the DAGs scheduled on a watched asset (``on_change``).
    :param others: how many other assets (another scheme) each DAG is scheduled on.
    :param unreadable: how many ``matview://`` assets are not ours to read, and were left out.
    """

    after: dict[str, list[QualifiedName]] = field(default_factory=lambda: defaultdict(list))
    on_change: set[str] = field(default_factory=set)
    others: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    unreadable: int = 0


def read_schedule_assets(db: Connection, wanted: Collection[str]) -> ScheduleAssets:
    """The assets each of ``wanted`` is scheduled on (see :class:`ScheduleAssets`)."""
    from airflow.models.asset import AssetModel, DagScheduleAssetReference

    found = ScheduleAssets()
    watcher_asset_id = asset_watcher_asset_id()
    watched = select(watcher_asset_id).where(watcher_asset_id == AssetModel.id).exists()
    for dag_id, uri, has_watcher in db.execute(
        select(DagScheduleAssetReference.dag_id, AssetModel.uri, watched)
        .join(AssetModel, AssetModel.id == DagScheduleAssetReference.asset_id)
        .where(DagScheduleAssetReference.dag_id.in_(wanted))
        .order_by(AssetModel.uri)
    ):
        if has_watcher:
            found.on_change.add(dag_id)
        elif (parsed := parse_matview_uri(uri)) is not None:
            found.after[dag_id].append(parsed[1])
        elif uri.startswith(ASSET_PREFIX):
            found.unreadable += 1
        else:
            found.others[dag_id] += 1
    return found


def _task_instances_of(tasks: Subquery) -> Any:
    from airflow.models.taskinstance import TaskInstance

    return and_(TaskInstance.dag_id == tasks.c.dag_id, TaskInstance.task_id == tasks.c.task_id)


def read_recent_runs(db: Connection, tasks: Subquery) -> RecentRuns:
    """The latest tries of each refresh task (latest first by start: a task not started yet is the latest; no join
    to dag_run, which cost more than the rest)."""
    from airflow.models.taskinstance import TaskInstance

    latest_first = (TaskInstance.start_date.desc().nulls_first(), TaskInstance.id.desc())
    ranked = (
        select(
            TaskInstance.dag_id,
            TaskInstance.state,
            TaskInstance.duration,
            TaskInstance.start_date,
            func.row_number().over(partition_by=TaskInstance.dag_id, order_by=latest_first).label("rank"),
        )
        .join(tasks, _task_instances_of(tasks))
        .where(TaskInstance.map_index == -1)
        .subquery()
    )
    recent = RecentRuns()
    rows = _recent_rows_postgres(db, ranked) if db.dialect.name == "postgresql" else _recent_rows(db, ranked)
    for dag_id, states, seconds, started in rows:
        recent.states[dag_id], recent.seconds[dag_id] = states, seconds
        if started is not None:
            recent.last_start[dag_id] = started
    return recent


def _recent_rows_postgres(db: Connection, ranked: Subquery) -> list[tuple[str, list[Any], list[Any], Any]]:
    """One row per view, the arrays built by the server."""
    from sqlalchemy.dialects.postgresql import aggregate_order_by

    oldest_first = ranked.c.rank.desc()
    query = (
        select(
            ranked.c.dag_id,
            func.array_agg(aggregate_order_by(ranked.c.state, oldest_first)),
            func.array_agg(aggregate_order_by(func.round(cast(ranked.c.duration, Numeric), 3), oldest_first)),
            func.max(case((ranked.c.rank == 1, ranked.c.start_date))),
        )
        .where(ranked.c.rank <= RECENT_RUNS)
        .group_by(ranked.c.dag_id)
    )
    return [
        (dag_id, list(states), [None if value is None else float(value) for value in durations], started)
        for dag_id, states, durations, started in db.execute(query)
    ]


def _recent_rows(db: Connection, ranked: Subquery) -> list[tuple[str, list[Any], list[Any], Any]]:
    """The same rows from a database without ordered array aggregates (SQLite, MySQL)."""
    grouped: dict[str, tuple[list[Any], list[Any], list[Any]]] = {}
    query = (
        select(ranked.c.dag_id, ranked.c.state, ranked.c.duration, case((ranked.c.rank == 1, ranked.c.start_date)))
        .where(ranked.c.rank <= RECENT_RUNS)
        .order_by(ranked.c.dag_id, ranked.c.rank.desc())
    )
    for dag_id, state, seconds, started in db.execute(query):
        states, durations, starts = grouped.setdefault(dag_id, ([], [], []))
        states.append(state)
        durations.append(None if seconds is None else round(seconds, 3))
        starts.append(started)
    return [(dag_id, s, d, next((t for t in t_ if t), None)) for dag_id, (s, d, t_) in grouped.items()]


def read_totals(db: Connection, tasks: Subquery) -> dict[str, Row[Any]]:
    """Per refresh task: when it last succeeded and was last skipped, and how many tries were skipped and failed."""
    from airflow.models.taskinstance import TaskInstance

    def when(state: str) -> Any:
        return func.max(case((TaskInstance.state == state, TaskInstance.end_date)))

    def count(states: Collection[str]) -> Any:
        return func.count(case((TaskInstance.state.in_(states), 1)))

    query = (
        select(
            TaskInstance.dag_id,
            when("success").label("last_success"),
            when("skipped").label("last_skip"),
            count(["skipped"]).label("skipped"),
            count(FAILED_STATES).label("failed"),
        )
        .join(tasks, _task_instances_of(tasks))
        .group_by(TaskInstance.dag_id)
    )
    return {row.dag_id: row for row in db.execute(query)}


def read_last_events(db: Connection, asset_ids: Collection[int]) -> dict[int, tuple[datetime, Any]]:
    """When each asset's latest event was made and its ``extra`` (what the last refresh reported: rows, seconds,
    mode), as stored: anyone allowed to post an asset event wrote it, so the reader checks every value."""
    from airflow.models.asset import AssetEvent

    last_ids = select(func.max(AssetEvent.id)).where(AssetEvent.asset_id.in_(asset_ids)).group_by(AssetEvent.asset_id)
    query = select(AssetEvent.asset_id, AssetEvent.timestamp, AssetEvent.extra).where(AssetEvent.id.in_(last_ids))
    return {asset_id: (made, extra) for asset_id, made, extra in db.execute(query)}


def read_last_results(db: Connection, tasks: Subquery) -> dict[str, tuple[datetime, Any]]:
    """When each refresh task last returned a value and that value (its ``return_value`` XCom, decoded).

    A refresh that ends in the triggerer (``start_from_trigger``) registers no asset event (Airflow 3.3), so its
    figures are read from what it returned; the reader checks every value as it does an event's ``extra``.
    """
    from airflow.models.xcom import XComModel

    mine = and_(
        XComModel.dag_id == tasks.c.dag_id,
        XComModel.task_id == tasks.c.task_id,
        XComModel.key == "return_value",
        XComModel.map_index == -1,
    )
    latest = (
        select(XComModel.dag_id, func.max(XComModel.timestamp).label("made"))
        .join(tasks, mine)
        .group_by(XComModel.dag_id)
        .subquery()
    )
    query = (
        select(XComModel.dag_id, XComModel.timestamp, XComModel.value)
        .join(tasks, mine)
        .join(latest, and_(latest.c.dag_id == XComModel.dag_id, latest.c.made == XComModel.timestamp))
    )
    return {dag_id: (made, _decoded(value)) for dag_id, made, value in db.execute(query)}


def _decoded(value: Any) -> Any:
    """An XCom value as a task returned it: Airflow stores some as JSON text inside the JSON column. Plain JSON,
    not ``XComModel.deserialize_value``: its ``XComDecoder`` builds objects from text any task may have written."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def read_pending_runs(db: Connection, wanted: Collection[str]) -> dict[str, datetime]:
    """When the oldest run of each DAG that has not succeeded, among those queued after its latest successful run,
    was queued: how long a refresh has waited to succeed."""
    from airflow.models.dagrun import DagRun

    succeeded = (
        select(DagRun.dag_id, func.max(DagRun.queued_at).label("queued_at"))
        .where(DagRun.dag_id.in_(wanted), DagRun.state == "success")
        .group_by(DagRun.dag_id)
        .subquery()
    )
    query = (
        select(DagRun.dag_id, func.min(DagRun.queued_at))
        .outerjoin(succeeded, succeeded.c.dag_id == DagRun.dag_id)
        .where(
            DagRun.dag_id.in_(wanted),
            DagRun.state != "success",
            DagRun.queued_at.is_not(None),
            or_(succeeded.c.queued_at.is_(None), DagRun.queued_at > succeeded.c.queued_at),
        )
        .group_by(DagRun.dag_id)
    )
    return {dag_id: queued_at for dag_id, queued_at in db.execute(query) if queued_at is not None}


def _latest_serialized(wanted: Collection[str]) -> tuple[Select[Any], Any]:
    """The latest serialized version of each DAG (its id, dag_id and timetable), and its JSON column."""
    from airflow.models.serialized_dag import SerializedDagModel

    # As JSON whatever the column's declared type (a JSONField on Airflow 3.1, which has no JSON operators).
    serialized = type_coerce(SerializedDagModel._data, JSON)
    versions = (
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
    latest = select(versions.c.id, versions.c.dag_id, versions.c.timetable).where(versions.c.rank == 1)
    return latest, serialized


def read_timetables(db: Connection, wanted: Collection[str]) -> dict[str, Any]:
    """Each DAG's serialized timetable, from its latest serialized version."""
    latest, _ = _latest_serialized(wanted)
    return {row.dag_id: row.timetable for row in db.execute(latest)}


def read_lag_states(db: Connection) -> dict[str, dict[str, dict[str, Any]]]:
    """What each lag monitor stored (``matview-freshness://<conn_id>``'s state store, Airflow 3.3+): per connection
    id, per view name, the JSON the monitor wrote; a value that is not JSON of a mapping is left out."""
    try:
        from airflow.models.asset_state_store import AssetStateStoreModel
    except ImportError:  # Airflow before 3.3: no state store, no stored measurement
        return {}
    from airflow.models.asset import AssetModel

    from airflow_matview.assets import FRESHNESS_SCHEME

    query = (
        select(AssetModel.uri, AssetStateStoreModel.key, AssetStateStoreModel.value)
        .join(AssetStateStoreModel, AssetStateStoreModel.asset_id == AssetModel.id)
        .where(AssetModel.uri.startswith(f"{FRESHNESS_SCHEME}://"), AssetStateStoreModel.key.startswith("lag:"))
    )
    states: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for uri, key, value in db.execute(query):
        conn_id = unquote(uri[len(FRESHNESS_SCHEME) + 3 :].rstrip("/"))
        try:
            state = json.loads(value)
        except (TypeError, ValueError):
            continue
        if isinstance(state, str):  # stored as JSON text of JSON
            with contextlib.suppress(ValueError):
                state = json.loads(state)
        if isinstance(state, dict):
            states[conn_id][key.removeprefix("lag:")] = state
    return states
