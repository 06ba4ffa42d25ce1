"""The lag over the last 24 hours in the fleet's JSON, from what the lag monitor stored in a real metadata database.

The monitor's own trigger (from the DAG the factory builds) measures 25 simulated hours of one view, up to date,
then behind for three hours, then unmeasured for two, then up to date again, and stores its state through the
execution API's handler of a watcher's write (as the triggerer's writes arrive). The JSON must give, bucket by
bucket, the largest lag measured, unknown (``null``, never 0) where it was, over where it was, the lag column's
value as the latest point; hostile items an API user may write into another view's stored series are skipped and
counted.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from airflow_matview.freshness import LagRecord
from airflow_matview.lag_history import BUCKET_SECONDS, oldest_start
from airflow_matview.triggers.freshness_monitor import FreshnessTrigger, Watched

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

CONN = "lagcheck"
TARGET = 120.0
POLL = 150.0  # seconds between two simulated measurements: two per bucket
HOUR = 3600.0
END = 1_767_312_000.0 + 100.0  # 2026-01-02T00:01:40Z
START = END - 25 * HOUR
CONFIG = {
    "defaults": {"conn_id": CONN, "schedule": "@hourly"},
    "views": [
        {"name": "lagcheck.measured", "target_lag": "2m"},
        {"name": "lagcheck.spoiled", "target_lag": "2m"},
        {"name": "lagcheck.plain"},
    ],
}


class WatcherWrites:
    """The monitor's asset state store, written as the triggerer's writes arrive at the api-server: the execution
    API's handler of a watcher's write, on this process's metadata database."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    async def aget(self, key: str) -> Any:
        return None

    async def aset(self, key: str, value: Any) -> None:
        from airflow.api_fastapi.execution_api.datamodels.asset_state_store import AssetStateStorePutBody
        from airflow.api_fastapi.execution_api.routes import asset_state_store as route
        from airflow.utils.session import create_session

        from airflow_matview.version_compat import HAS_SHARED_TRIGGER_STREAMS

        assert HAS_SHARED_TRIGGER_STREAMS
        from airflow._shared.state import AssetScope

        with create_session() as session:
            scope = AssetScope(asset_id=route._resolve_asset_id_by_uri(self.uri, session))
            watcher = SimpleNamespace(id=route.NULL_UUID)
            route._put_asset_state_store(scope, key, AssetStateStorePutBody(value=value), watcher, session)


def _phase(t: float) -> tuple[float | None, float]:
    """The simulated view at ``t``: since when its oldest unreflected change was seen (``None``: up to date), and
    when its signals were last read."""
    hours = (t - START) / HOUR
    if 10 <= hours < 13:
        return START + 10 * HOUR, t
    if 13 <= hours < 15:
        return START + 10 * HOUR, START + 13 * HOUR - POLL  # the poll stopped: nothing measured
    return None, t


def _measure_25_hours(trigger: FreshnessTrigger) -> list[float]:
    views = [Watched(spec, stale_after=300.0) for spec in trigger.views]
    times = [START + number * POLL for number in range(int(25 * HOUR / POLL) + 1)]

    async def polls() -> None:
        reader: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        for t in times:
            since, read = _phase(t)
            for view in views:
                pending = [] if since is None else [[since, since, {}]]
                view.record = LagRecord(pending=pending, refreshed_at=START - HOUR, measured_at=read)
            await trigger._measure(views, {}, t, reader)
        reader.cancel()

    asyncio.run(polls())
    return times


def _expected(times: list[float]) -> list[list[Any]]:
    """The series by hand: per bucket the largest known lag, unknown and over when any measurement was."""
    buckets: dict[int, list[Any]] = {}
    for t in times:
        since, read = _phase(t)
        seconds = None if t - read > 300.0 else 0.0 if since is None else round(t - since, 1)
        start = int(t // BUCKET_SECONDS) * BUCKET_SECONDS
        point = buckets.setdefault(start, [start, None, False, False])
        if seconds is not None:
            point[1] = seconds if point[1] is None else max(point[1], seconds)
        point[2] = point[2] or seconds is None or seconds > TARGET
        point[3] = point[3] or seconds is None
    return [point for start, point in sorted(buckets.items()) if start >= oldest_start(END)]


def _spoil(uri: str) -> None:
    """Items an API user may write into spoiled's stored series, next to one good point."""
    from airflow.models.asset import AssetModel
    from airflow.models.asset_state_store import AssetStateStoreModel
    from airflow.utils.session import create_session
    from sqlalchemy import select, update

    start = int(END // BUCKET_SECONDS) * BUCKET_SECONDS - BUCKET_SECONDS
    with create_session() as session:
        asset_id = session.scalar(select(AssetModel.id).where(AssetModel.uri == uri))
        where = (AssetStateStoreModel.asset_id == asset_id, AssetStateStoreModel.key == "lag:lagcheck.spoiled")
        state = json.loads(session.scalar(select(AssetStateStoreModel.value).where(*where)))
        # 1e400 is valid JSON, which Python reads as infinity.
        history = (
            f'[["<img src=x onerror=alert(1)>", 1, 0], [{start - BUCKET_SECONDS}, "<b>9</b>", 0], [{start}, 1e400, 1],'
            f" [{start}, 8.0, 0], [{start + 10 * BUCKET_SECONDS}, 1.0, 0]]"
        )
        value = json.dumps({**state, "history": "HISTORY"}).replace('"HISTORY"', history)
        session.execute(update(AssetStateStoreModel).where(*where).values(value=value))


def test_the_json_gives_the_monitors_24_hours_of_lag_bucket_by_bucket(
    airflow_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.api.common.delete_dag import delete_dag
    from airflow.utils.session import create_session

    from airflow_matview.factory import build_dags
    from airflow_matview.fleet.overview import as_json, load_fleet
    from devtools.harness.fleet_seed import seed_fleet

    dag_ids = seed_fleet(CONFIG, runs=1, bundle="fleet-lag-history", now=datetime.fromtimestamp(END, timezone.utc))
    monitor = build_dags(CONFIG)[f"matview.freshness.{CONN}"].timetable.asset_condition
    trigger = monitor.watchers[0].trigger
    trigger.asset_state_store = WatcherWrites(monitor.uri)
    monkeypatch.setattr("airflow_matview.refresh_metrics.lag", lambda *args: None)
    # One bound for the monitor's measurement and the page's reading of it (the stored stale_after), 300 s.
    monkeypatch.setattr("airflow_matview.triggers.freshness_monitor.measurement_bound", lambda poll: 300.0)
    try:
        times = _measure_25_hours(trigger)
        with create_session() as session:
            document = json.loads(
                json.dumps(
                    as_json(load_fleet(session, dag_ids, datetime.fromtimestamp(END, timezone.utc))), allow_nan=False
                )
            )
        _spoil(monitor.uri)
        with create_session() as session:
            spoiled_document = as_json(load_fleet(session, dag_ids, datetime.fromtimestamp(END, timezone.utc)))
    finally:
        for dag_id in [*dag_ids, f"matview.freshness.{CONN}"]:
            delete_dag(dag_id)
    views = {view["view"]: view for view in document["views"]}
    measured = views["lagcheck.measured"]
    assert document["lag_history_bucket_seconds"] == BUCKET_SECONDS
    assert measured["lag_history"] == _expected(times)
    history = measured["lag_history"]
    assert len(history) == 288
    worst = max(history, key=lambda point: point[1] or 0)
    # The last poll read the view at 13 h - POLL; its lag stays known for stale_after (300 s), up to 13 h + POLL.
    assert worst[1] == 3 * HOUR + POLL, "the largest lag measured"
    unknown = [point for point in history if point[3]]
    assert unknown and all(point[1] is None and point[2] for point in unknown[1:-1]), "null, never 0, and over"
    assert (history[-1][1], measured["lag"], measured["lag_state"]) == (0.0, 0.0, "within"), "the lag column's"
    assert views["lagcheck.plain"]["lag_history"] is None, "not measured: no series"
    assert document["skipped"].get("lag history") is None

    spoiled = {view["view"]: view for view in spoiled_document["views"]}["lagcheck.spoiled"]
    start = int(END // BUCKET_SECONDS) * BUCKET_SECONDS - BUCKET_SECONDS
    assert spoiled["lag_history"] == [[start, 8.0, False, False], [start + BUCKET_SECONDS, 0.0, False, False]]
    assert spoiled_document["skipped"]["lag history"] == 4, "text, a text lag, infinity, a point in the future"
    assert spoiled_document["views"] and json.dumps(spoiled_document, allow_nan=False)
