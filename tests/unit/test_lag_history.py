"""A view's lag over the last 24 hours (airflow_matview.lag_history): five-minute buckets of the largest lag, unknown
never folded into 0, a day at most, and what storage hands back read with suspicion; and the lag monitor keeping it
in its state without writing more often."""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import pytest

from airflow_matview import lag_history
from airflow_matview.freshness import Lag, LagRecord, unknown
from airflow_matview.lag_history import BUCKET_SECONDS, MAX_POINTS, OVER, UNKNOWN, Point, add, dump, load
from airflow_matview.triggers import freshness_monitor
from airflow_matview.triggers.freshness_monitor import FreshnessTrigger, Watched

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a bucket's start


def lag(seconds: float | None) -> Lag:
    return unknown("no measurement for 40s") if seconds is None else Lag(seconds, "sources")


def test_a_bucket_keeps_the_largest_lag_measured_in_it() -> None:
    points: list[Point] = []
    for offset, seconds in ((0, 5.0), (60, 125.04), (120, 30.0), (299, 0.0)):
        points = add(points, lag(seconds), seconds > 120, T0 + offset)
    assert points == [Point(int(T0), 125.0, True, False)]
    points = add(points, lag(0.0), False, T0 + 300)
    assert points[-1] == Point(int(T0) + 300, 0.0, False, False), "a new bucket, not over, known"


def test_an_unknown_lag_marks_its_bucket_and_is_never_a_0() -> None:
    points = add([], lag(None), True, T0)
    assert points == [Point(int(T0), None, True, True)], "no known lag: null, not 0"
    points = add(points, lag(12.0), False, T0 + 10)
    assert points == [Point(int(T0), 12.0, True, True)], "the known maximum, and it was unknown for a while"
    assert add(points, lag(None), True, T0 + 20) == points


def test_only_the_last_24_hours_are_kept() -> None:
    points: list[Point] = []
    for number in range(2 * MAX_POINTS):
        points = add(points, lag(float(number)), False, T0 + number * BUCKET_SECONDS + 1)
    assert len(points) == MAX_POINTS
    assert points[0].start == int(T0) + MAX_POINTS * BUCKET_SECONDS and points[-1].max_lag == 2 * MAX_POINTS - 1
    later = T0 + (2 * MAX_POINTS - 1) * BUCKET_SECONDS + 12 * 3600
    assert len(lag_history.window(points, later)) == MAX_POINTS // 2, "half of them older than a day by then"


def test_a_clock_gone_back_folds_into_the_latest_bucket() -> None:
    points = add([], lag(10.0), False, T0 + 600)
    assert add(points, lag(50.0), True, T0) == [Point(int(T0) + 600, 50.0, True, False)]


def test_stored_as_compact_json_and_read_back_the_same() -> None:
    points: list[Point] = []
    for number in range(MAX_POINTS):
        seconds = None if number % 50 == 7 else 86_399.9 - number
        points = add(points, lag(seconds), seconds is None or number % 3 == 0, T0 + number * BUCKET_SECONDS)
    stored = json.dumps(dump(points), separators=(",", ":"))
    assert dump(points)[7] == [int(T0) + 7 * BUCKET_SECONDS, None, OVER | UNKNOWN]
    assert len(stored) <= 6700, len(stored)  # 288 points with lags of a day: 6,607 bytes, 23 a point
    now = T0 + (MAX_POINTS - 1) * BUCKET_SECONDS
    assert load(json.loads(stored), now) == (points, 0)


START = int(T0)


@pytest.mark.parametrize(
    ("item", "why"),
    [
        ("<img src=x onerror=alert(1)>", "not a list"),
        ([START, 1.0], "two items"),
        ([START, 1.0, 0, 0], "four items"),
        ([str(START), 1.0, 0], "a start as text"),
        ([START + 1, 1.0, 0], "not a bucket's start"),
        ([float(START), 1.0, 0], "a start as a float"),
        ([True, 1.0, 0], "a start as a bool"),
        ([-BUCKET_SECONDS, 1.0, 0], "a negative start"),
        ([START, "<b>1</b>", 0], "a lag as text"),
        ([START, -1.0, 0], "a negative lag"),
        ([START, math.inf, 0], "an infinite lag"),
        ([START, math.nan, 0], "not a number"),
        ([START, True, 0], "a lag as a bool"),
        ([START, 1.0, 4], "unknown flags"),
        ([START, 1.0, -1], "negative flags"),
        ([START, 1.0, True], "flags as a bool"),
        ([START, None, OVER], "no known lag, yet not unknown"),
        ([START + 2 * BUCKET_SECONDS, 1.0, 0], "in the future"),
    ],
)
def test_a_stored_item_that_is_not_a_point_is_refused_and_counted(item: Any, why: str) -> None:
    good = [START - BUCKET_SECONDS, 3.0, 0]
    points, refused = load([good, item], T0)
    assert (points, refused) == ([Point(START - BUCKET_SECONDS, 3.0, False, False)], 1), why


def test_stored_points_out_of_order_are_refused_and_old_ones_expire_uncounted() -> None:
    day_ago = START - MAX_POINTS * BUCKET_SECONDS
    stored = [[day_ago, 9.0, 0], [START, 1.0, 0], [START, 2.0, 0], [START - BUCKET_SECONDS, 3.0, 0]]
    assert load(stored, T0) == ([Point(START, 1.0, False, False)], 2), "a duplicate and one before its predecessor"
    assert load(None, T0) == ([], 0)
    assert load({"points": []}, T0) == ([], 1)
    assert load("[]", T0) == ([], 1)


class Store:
    """An asset state store that records what is written to it."""

    def __init__(self, stored: dict[str, Any] | None = None) -> None:
        self.stored = stored or {}
        self.writes: list[tuple[str, Any]] = []

    async def aget(self, key: str) -> Any:
        return self.stored.get(key)

    async def aset(self, key: str, value: Any) -> None:
        self.writes.append((key, json.loads(json.dumps(value))))


def _monitor(store: Store, target: float = 600.0) -> tuple[FreshnessTrigger, Watched]:
    spec = {"view": "public.v", "dag_id": "v", "target": target, "after": [], "notifiers": []}
    trigger = FreshnessTrigger("warehouse", 1.0, [spec])
    trigger.asset_state_store = store  # type: ignore[assignment]
    return trigger, Watched(spec, stale_after=1e9)


def test_the_monitor_keeps_the_series_in_its_state_and_writes_no_more_often(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(freshness_monitor, "HAS_SHARED_TRIGGER_STREAMS", True)
    store = Store()
    trigger, view = _monitor(store)
    view.record = LagRecord(pending=[[T0 - 100.0, T0 - 100.0, {}]], measured_at=T0)

    async def polls() -> None:
        reader: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        for second in range(0, 121, 2):  # the lag grows every poll, 100 s to 220 s; nothing else changes
            view.record.measured_at = T0 + second  # as each poll does
            await trigger._measure([view], {}, T0 + second, reader)
        reader.cancel()

    asyncio.run(polls())
    assert [state["evaluated_at"] - T0 for _, state in store.writes] == [0, 30, 60, 90, 120], "the heartbeat only"
    key, last = store.writes[-1]
    assert key == "lag:public.v" and last["history"] == [[int(T0), 220.0, 0]]
    assert last["lag"]["seconds"] == 220.0, "the series holds the lag the alerts and the page use"


def test_the_monitor_reads_its_series_back_and_drops_what_is_not_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(freshness_monitor, "HAS_SHARED_TRIGGER_STREAMS", True)
    now = lag_history.bucket_of(time.time())
    history = [[now - BUCKET_SECONDS, 5.0, OVER], ["<script>", 1, 0], [now, None, UNKNOWN | OVER]]
    trigger, view = _monitor(Store({"lag:public.v": {"record": {}, "history": history}}))
    asyncio.run(trigger._load(view))
    assert view.history == [Point(now - BUCKET_SECONDS, 5.0, True, False), Point(now, None, True, True)]
