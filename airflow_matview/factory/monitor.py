"""The lag monitor's DAG: one per connection of a config with views that have a ``target_lag`` or a
``max_staleness``, ``matview.freshness.<conn_id>``.

It has no task and never runs: it exists so that its asset's watcher (the
:class:`~airflow_matview.triggers.freshness_monitor.FreshnessTrigger`) runs in the triggerer while the views' own DAGs
are paused or cannot run. It is created unpaused; pausing it stops the measurement (the fleet page then shows every
lag as unknown).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from graphlib import TopologicalSorter
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG

from airflow_matview.assets import freshness_asset

if TYPE_CHECKING:
    from airflow_matview.config import ViewConfig
    from airflow_matview.database.identifiers import QualifiedName

MONITOR_PREFIX = "matview.freshness."
START_DATE = datetime(2024, 1, 1, tzinfo=timezone.utc)


def monitor_dag_id(conn_id: str) -> str:
    """``matview.freshness.<conn_id>`` (characters a DAG id cannot hold replaced, as for a view's DAG)."""
    return MONITOR_PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "_", conn_id)


def _alerted(view: ViewConfig) -> bool:
    """Whether the monitor alerts on the view's lag: it has a ``target_lag`` or a ``max_staleness``."""
    return view.target_lag is not None or view.max_staleness is not None


def measured_keys(views: list[ViewConfig]) -> set[tuple[str, QualifiedName]]:
    """The views the lag monitor measures: those it alerts on, and the views ``after:`` which they are built
    (measured without a threshold, so that a chain is measured from its root). Each records, when it refreshes, what
    it reflects."""
    by_key = {view.key: view for view in views}
    wanted: set[tuple[str, QualifiedName]] = set()
    pending = [view.key for view in views if _alerted(view)]
    while pending:
        key = pending.pop()
        if key in wanted or key not in by_key:
            continue
        wanted.add(key)
        pending.extend(by_key[key].upstream_keys)
    return wanted


def monitored_views(views: list[ViewConfig]) -> dict[str, list[dict[str, Any]]]:
    """Per connection, the monitor's entries (:func:`measured_keys`), upstream views first."""
    by_key = {view.key: view for view in views}
    wanted = measured_keys(views)
    # In the config's order, not the set's (which varies with the hash seed): the serialized DAG and its watcher's
    # arguments must be the same at every parse.
    graph = {view.key: [u for u in view.upstream_keys if u in wanted] for view in views if view.key in wanted}
    order = TopologicalSorter(graph)
    monitored: dict[str, list[dict[str, Any]]] = {}
    for key in order.static_order():
        view = by_key[key]
        monitored.setdefault(view.conn_id, []).append(_entry(view, wanted))
    return monitored


def _entry(view: ViewConfig, wanted: set[tuple[str, QualifiedName]]) -> dict[str, Any]:
    """What the monitor knows of a view: ``target`` (its ``target_lag``), ``alert_after`` and ``alert_key`` (the lag
    over which its notifiers are told: ``max_staleness`` when set, else ``target_lag``), how its refreshes start
    (``watched``: a watcher requests them, at most once per ``min_interval`` seconds; ``schedule``), for the reasons
    an alert gives."""
    target = None if view.target_lag is None else view.target_lag.total_seconds()
    threshold = view.max_staleness or view.target_lag
    return {
        "view": str(view.view),
        "dag_id": view.resolved_dag_id,
        "target": target,
        "alert_after": None if threshold is None else threshold.total_seconds(),
        "alert_key": "max_staleness" if view.max_staleness is not None else "target_lag",
        "after": [str(name) for conn_id, name in view.upstream_keys if (conn_id, name) in wanted],
        "notifiers": [spec.as_dict() for spec in view.stale_notifiers] if threshold is not None else [],
        "watched": view.watched,
        "min_interval": view.watch_min_interval.total_seconds() if view.watched else None,
        "schedule": view.schedule,
    }


def build_monitors(views: list[ViewConfig]) -> dict[str, DAG]:
    """The monitor DAGs of ``views``' connections, by DAG id; none when no view has a ``target_lag`` or a
    ``max_staleness``."""
    poll: dict[str, float] = {}
    for view in views:
        if _alerted(view):
            seconds = view.poll_interval.total_seconds()
            poll[view.conn_id] = min(poll.get(view.conn_id, seconds), seconds)
    dags = {}
    for conn_id, entries in monitored_views(views).items():
        dag_id = monitor_dag_id(conn_id)
        dags[dag_id] = DAG(
            dag_id=dag_id,
            schedule=freshness_asset(conn_id, poll.get(conn_id, 10.0), entries),
            start_date=START_DATE,
            catchup=False,
            is_paused_upon_creation=False,
            tags=["matview"],
            description=(
                f"Measures the lag of the views with target_lag or max_staleness on connection {conn_id}; never runs."
            ),
        )
    return dags
