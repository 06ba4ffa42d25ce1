"""A view's lag behind its sources: the one definition used by ``target_lag``, the alerts, the fleet page and docs.

A view's **lag** at time *t* is 0 when it reflects every committed change of its sources, else *t* minus the time
the oldest change it does not reflect yet was first seen (by a poll of the change signals, so within one
``poll_interval`` of its commit). Through ``after:`` chains it is measured from the root sources: a change that
reached a view through its upstream's refresh dates from when the upstream first saw it, and a view is at least as
far behind as its upstream. A view whose sources cannot be watched (a foreign table, a function, ``now()``) is,
conservatively, as far behind as its last successful refresh is old (basis ``last_refresh``). When the measurement
itself fails (the database unreachable, the watcher or triggerer down) the lag is *unknown*, never 0.

Everything here is plain data and arithmetic on wall-clock seconds (``time.time()``), JSON-ready so that the
triggerer can keep a :class:`LagRecord` across restarts; nothing talks to a database or to Airflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from airflow_matview.database.change_signals import unchanged
from airflow_matview.text import format_seconds

Basis = Literal["sources", "last_refresh", "unknown"]

#: The most pending changes a record keeps; older neighbours merge, keeping the earlier time (a lag too high,
#: never too low).
MAX_PENDING = 32


#: Until measured for a view: from an event of its watcher to the commit of the refresh it starts (the scheduler's
#: reaction, the task's start, the refresh itself).
DEFAULT_FIRE_TO_COMMIT_SECONDS = 10.0


def refresh_lead(target: float, poll_interval: float, fire_to_commit: float) -> float:
    """How long a change first seen may wait (coalescing later writes) before its refresh must start, to be
    reflected within ``target`` seconds: less one poll (the decision is taken at polls) and the time from an event
    to its refresh's commit."""
    return max(0.0, target - poll_interval - fire_to_commit)


def unwatched_period(target: float, poll_interval: float, min_interval: float, fire_to_commit: float) -> float:
    """How often to refresh a view whose sources cannot be watched, so that its last refresh is never older than
    ``target`` seconds (when a refresh takes ``fire_to_commit``)."""
    return max(poll_interval, min_interval, target - fire_to_commit)


@dataclass(frozen=True)
class Lag:
    """A view's lag at one moment.

    :param seconds: how far behind it is; ``None`` when unknown.
    :param basis: ``sources`` (measured against its sources' changes), ``last_refresh`` (its sources cannot be
        watched: the age of its last successful refresh) or ``unknown``.
    :param since: when the oldest change it does not reflect was first seen (or, for ``last_refresh``, when it was
        last refreshed); ``None`` when it is up to date or the lag is unknown.
    :param reason: why the lag is unknown, or what it is measured from, in words; ``None`` when up to date.
    """

    seconds: float | None
    basis: Basis
    since: float | None = None
    reason: str | None = None

    @property
    def known(self) -> bool:
        return self.seconds is not None

    def over(self, target: float) -> bool:
        """Whether this lag breaks ``target`` seconds: an unknown lag does (it may be anything)."""
        return self.seconds is None or self.seconds > target

    def describe(self) -> str:
        """``0s``, ``1m15s behind its sources``, ``unknown (why)``, as shown to people."""
        if self.seconds is None:
            return f"unknown ({self.reason})" if self.reason else "unknown"
        if self.basis == "last_refresh":
            return f"{format_seconds(self.seconds)} since its last refresh (its sources cannot be watched)"
        return f"{format_seconds(self.seconds)} behind its sources" if self.seconds > 0 else "0s"

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "basis": self.basis, "since": self.since, "reason": self.reason}


def unknown(reason: str) -> Lag:
    """The lag when it cannot be measured: never 0."""
    return Lag(None, "unknown", None, reason)


@dataclass
class LagRecord:
    """What the measurement keeps of one view between polls (and across triggerer restarts, as JSON).

    :param pending: the changes first seen since the last covering refresh, oldest first, each
        ``[first_seen, last_seen, fingerprint]``: a change signal first seen at ``first_seen``, and (after merges)
        the latest signal folded into it, seen at ``last_seen``.
    :param covered: the change signals the last successful refresh read (what it reflects), or ``None``.
    :param read_at: when that refresh read them.
    :param refreshed_at: when that refresh committed.
    :param covered_origin: when the oldest change that refresh brought into the view was first seen, measured from
        the root sources: what a view ``after:`` it dates the change from.
    :param refresh_seconds: how long the view's recent refreshes took (the latest one), to refresh early enough.
    :param measured_at: when a poll last read the view's signals; ``None`` until one did.
    :param unwatchable: why its sources cannot be watched, when they cannot.
    :param failure: why the latest poll failed (the database unreachable, the poll given up), until one succeeds:
        the lag is unknown, for that reason, whatever was measured before.
    :param failed_at: when that poll failed.
    """

    pending: list[list[Any]] = field(default_factory=list)
    covered: dict[str, Any] | None = None
    read_at: float | None = None
    refreshed_at: float | None = None
    covered_origin: float | None = None
    refresh_seconds: float | None = None
    measured_at: float | None = None
    unwatchable: str | None = None
    failure: str | None = None
    failed_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Any) -> LagRecord:
        """A record read back from storage; anything unreadable starts a new record."""
        if not isinstance(data, dict):
            return cls()
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        try:
            record = cls(**known)
        except TypeError:
            return cls()
        if not (
            all(value is None or _is_time(value) for value in (getattr(record, name) for name in _TIMES))
            and all(value is None or isinstance(value, str) for value in (record.unwatchable, record.failure))
            and (record.covered is None or isinstance(record.covered, dict))
            and isinstance(record.pending, list)
            and all(
                isinstance(item, list) and len(item) == 3 and _is_time(item[0]) and _is_time(item[1])
                for item in record.pending
            )
        ):
            # Another writer's value (the state store takes any JSON): measured afresh (unknown until then, never
            # 0), never a crash of the monitor or the fleet page.
            return cls()
        return record


#: The fields of a :class:`LagRecord` that hold a time or a number of seconds.
_TIMES = ("read_at", "refreshed_at", "covered_origin", "refresh_seconds", "measured_at", "failed_at")


def _is_time(value: Any) -> bool:
    """Whether ``value`` is a finite number (not a bool): a time in epoch seconds, or seconds."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def observe(
    record: LagRecord,
    fingerprint: dict[str, Any] | None,
    now: float,
    *,
    unwatchable: str | None = None,
    origin: float | None = None,
) -> None:
    """Record one poll of a view's change signals.

    :param fingerprint: the signals now (:attr:`ChangeSignals.fingerprint`), ``None`` when they cannot be watched.
    :param now: when the poll read them.
    :param unwatchable: why they cannot be watched, when ``fingerprint`` is ``None``.
    :param origin: for a view ``after:`` another, when the oldest change its upstream's latest refresh brought in was
        first seen: a change seen now dates from then (chains are measured from the root).
    """
    record.measured_at = now
    record.failure = record.failed_at = None
    record.unwatchable = unwatchable if fingerprint is None else None
    if fingerprint is None:
        return
    if record.covered is not None and _same(record.covered, fingerprint) and not record.pending:
        return
    if record.pending and _same(record.pending[-1][2], fingerprint):
        return
    if record.covered is not None and _same(record.covered, fingerprint):
        record.pending.clear()  # back to what the view reflects (e.g. a counter reset seen twice)
        return
    first_seen = now if origin is None else min(now, origin)
    record.pending.append([first_seen, now, fingerprint])
    while len(record.pending) > MAX_PENDING:
        older, newer = record.pending[-3], record.pending.pop(-2)
        older[1], older[2] = newer[1], newer[2]


def fail(record: LagRecord, reason: str, now: float) -> None:
    """Record a poll that failed: the lag is unknown, for ``reason``, until a poll succeeds (:func:`observe`).

    :param reason: why, in one line naming the connection.
    :param now: when it failed.
    """
    record.failure, record.failed_at = reason, now


def cover(
    record: LagRecord,
    fingerprint: dict[str, Any] | None,
    *,
    read_at: float,
    committed_at: float,
    origin: float | None = None,
) -> None:
    """Record a successful refresh: it reflects the signals it read at ``read_at``.

    A pending change is covered when the refresh read the very signals it was seen with, or read them after every
    signal folded into it was seen; any other pending change stays (possibly one too many, never one too few).

    :param fingerprint: the signals the refresh read, ``None`` when it read none (its sources cannot be watched).
    :param committed_at: when the refresh committed.
    :param origin: for a view ``after:`` another, the upstream's :attr:`LagRecord.covered_origin`.
    """
    covered_since = [item[0] for item in record.pending if _covered(item, fingerprint, read_at)]
    record.pending = [item for item in record.pending if not _covered(item, fingerprint, read_at)]
    origins = [*covered_since, *([origin] if origin is not None else [])]
    record.covered_origin = min(origins) if origins else committed_at
    record.covered = fingerprint
    record.read_at = read_at
    record.refreshed_at = committed_at
    record.refresh_seconds = max(0.0, committed_at - read_at)


def _covered(item: list[Any], fingerprint: dict[str, Any] | None, read_at: float) -> bool:
    _first_seen, last_seen, seen = item
    return (fingerprint is not None and _same(seen, fingerprint)) or float(last_seen) <= read_at


def _same(one: dict[str, Any], other: dict[str, Any]) -> bool:
    return unchanged(one, other)


def lag_of(record: LagRecord, now: float, *, stale_after: float, upstream: list[Lag] | None = None) -> Lag:
    """The view's lag at ``now``.

    :param stale_after: seconds after the last poll past which the measurement counts as failed (lag unknown).
    :param upstream: the lags of the views it is ``after:``: it is at least as far behind as each of them.
    """
    own = _own_lag(record, now, stale_after)
    if not own.known:  # its own measurement failed: that is why, whatever its upstream's
        return own
    for other in upstream or []:
        if not other.known:
            return unknown(f"an upstream view's lag is unknown: {other.reason}")
        if own.known and (other.seconds or 0.0) > (own.seconds or 0.0):
            own = Lag(other.seconds, other.basis, other.since, "behind its upstream view")
    return own


def _own_lag(record: LagRecord, now: float, stale_after: float) -> Lag:
    if record.failure is not None:
        return unknown(record.failure)
    if record.measured_at is None:
        return unknown("not measured yet")
    if now - record.measured_at > stale_after:
        return unknown(f"no measurement for {format_seconds(now - record.measured_at)}")
    if record.unwatchable is not None:
        if record.refreshed_at is None:
            return unknown(f"no refresh recorded, and {record.unwatchable}")
        return Lag(max(0.0, now - record.refreshed_at), "last_refresh", record.refreshed_at, record.unwatchable)
    if not record.pending:
        return Lag(0.0, "sources")
    since = float(record.pending[0][0])
    return Lag(max(0.0, now - since), "sources", since, "a source change not reflected yet")


def lags_of(states: dict[str, dict[str, Any]], now: float) -> dict[str, Lag]:
    """The lag at ``now`` of each view of one lag monitor, from what it stored (its ``state`` per view: ``record``,
    ``stale_after``, ``after``), computed as the monitor computes it: what the fleet page shows is what the alerts
    said. A view whose upstream view is not in ``states`` is measured without it."""
    lags: dict[str, Lag] = {}

    def lag(name: str, seen: frozenset[str]) -> Lag:
        if name not in lags:
            state = states[name]
            after = state.get("after")
            names = [up for up in after if isinstance(up, str)] if isinstance(after, list) else []
            upstream = [lag(up, seen | {name}) for up in names if up in states and up not in seen]
            stale = state.get("stale_after")
            lags[name] = lag_of(
                LagRecord.from_dict(state.get("record")),
                now,
                stale_after=float(stale) if isinstance(stale, (int, float)) else 0.0,
                upstream=upstream,
            )
        return lags[name]

    for name in states:
        lag(name, frozenset())
    return lags
