"""A view's lag over the last 24 hours, as the lag monitor keeps it and the fleet page draws it.

The day is cut into fixed buckets of :data:`BUCKET_SECONDS` (at most :data:`MAX_POINTS` of them); each bucket in
which the lag was measured holds the **largest** lag measured in it (the same :class:`~airflow_matview.freshness.Lag`
the alerts use), whether any measurement in it was **unknown** (never counted as 0), and whether any was **over**
the target (as :meth:`Lag.over <airflow_matview.freshness.Lag.over>` says: an unknown lag is). A bucket missing
between two others is a period with no measurement at all (the triggerer down): unknown too.

Stored as JSON, oldest first, each point ``[start, max_lag, flags]``: ``start`` the bucket's start in whole seconds
since the epoch (a multiple of :data:`BUCKET_SECONDS`), ``max_lag`` seconds to 0.1 or ``null`` when no measurement
in it was known, ``flags`` the sum of :data:`OVER` and :data:`UNKNOWN`. Plain data, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_matview.freshness import Lag

BUCKET_SECONDS = 300
WINDOW_SECONDS = 24 * 3600
MAX_POINTS = WINDOW_SECONDS // BUCKET_SECONDS
OVER = 1
UNKNOWN = 2


@dataclass(frozen=True)
class Point:
    """One bucket of the series.

    :param start: when the bucket starts, in seconds since the epoch (a multiple of :data:`BUCKET_SECONDS`).
    :param max_lag: the largest known lag measured in it, in seconds; ``None`` when every measurement was unknown.
    :param over: whether any measurement in it was over the target (an unknown one is).
    :param unknown: whether any measurement in it was unknown.
    """

    start: int
    max_lag: float | None
    over: bool
    unknown: bool

    def stored(self) -> list[Any]:
        """The point as kept in the state store: ``[start, max_lag, flags]``."""
        return [self.start, self.max_lag, (OVER if self.over else 0) | (UNKNOWN if self.unknown else 0)]


def bucket_of(at: float) -> int:
    """The start of the bucket holding the moment ``at`` (seconds since the epoch)."""
    return int(at // BUCKET_SECONDS) * BUCKET_SECONDS


def oldest_start(now: float) -> int:
    """The start of the oldest bucket still within the last 24 hours at ``now``."""
    return bucket_of(now) - WINDOW_SECONDS + BUCKET_SECONDS


def add(points: list[Point], lag: Lag, over: bool, now: float) -> list[Point]:
    """The series with one measurement folded in, and the buckets older than 24 hours dropped.

    :param points: the series so far, oldest first (not changed).
    :param lag: the lag measured at ``now``.
    :param over: whether it is over the view's target.
    :param now: when it was measured; a clock gone back folds it into the latest bucket (the order is kept).
    """
    kept = window(points, now)
    seconds = None if lag.seconds is None else round(lag.seconds, 1)
    start = bucket_of(now)
    if kept and kept[-1].start >= start:
        last = kept[-1]
        highest = seconds if last.max_lag is None else last.max_lag if seconds is None else max(last.max_lag, seconds)
        kept[-1] = Point(last.start, highest, last.over or over, last.unknown or seconds is None)
    else:
        kept.append(Point(start, seconds, over, seconds is None))
    return kept


def window(points: list[Point], now: float) -> list[Point]:
    """The points of the last 24 hours at ``now``."""
    oldest = oldest_start(now)
    return [point for point in points if point.start >= oldest]


def dump(points: list[Point]) -> list[list[Any]]:
    """The series as it is stored (see the module's docstring)."""
    return [point.stored() for point in points]


def load(data: Any, now: float) -> tuple[list[Point], int]:
    """A series read back from storage, where anything may have been written.

    :param data: the stored list; ``None`` when there is none.
    :param now: points older than 24 hours at ``now`` are dropped (expired, not refused); one starting more than a
        bucket after ``now`` is refused (the clocks of the triggerer and the reader may differ by less).
    :return: the points of the last 24 hours, oldest first, and how many stored items were refused: not a point,
        or not after the one before it.
    """
    if data is None:
        return [], 0
    if not isinstance(data, list):
        return [], 1
    points: list[Point] = []
    refused = 0
    latest = bucket_of(now) + BUCKET_SECONDS
    for item in data:
        point = _point(item)
        if point is None or point.start > latest or (points and point.start <= points[-1].start):
            refused += 1
        else:
            points.append(point)
    return window(points, now)[-MAX_POINTS:], refused


def _point(item: Any) -> Point | None:
    if not isinstance(item, list) or len(item) != 3:
        return None
    start, max_lag, flags = item
    if not (_whole(start) and start % BUCKET_SECONDS == 0 and _whole(flags) and flags <= OVER | UNKNOWN):
        return None
    if max_lag is None:
        if not flags & UNKNOWN:
            return None  # no known lag, and none unknown: not a measurement
    elif not (isinstance(max_lag, int | float) and not isinstance(max_lag, bool) and 0 <= max_lag < math.inf):
        return None
    return Point(start, None if max_lag is None else float(max_lag), bool(flags & OVER), bool(flags & UNKNOWN))


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
