"""The lag monitor: measures the lag of every view of a config with a ``target_lag``, from the triggerer, whatever
their DAGs do, and tells their ``on_stale`` notifiers once per episode over the target, and again when it is over.

One ``FreshnessTrigger`` per connection of the config watches an asset of its own (``matview-freshness://<conn_id>``,
scheduling a DAG that never runs: ``matview.freshness.<conn_id>``), so it runs while the views' DAGs are paused, and
joins the connection's shared poll (:mod:`.source_changes`: the same two catalog queries, whatever the number of
views). Each poll it updates each view's :class:`~airflow_matview.freshness.LagRecord`: the changes seen, and the
refresh that covered them (read from the refresh's :class:`~airflow_matview.refresh_task.RefreshRecord` Variable
while changes are pending). What it measured is kept in the asset's state store (Airflow 3.3+), which survives
triggerer restarts and which the fleet page reads. It never fires an event.

Imported at DAG-parse time (the monitor DAG's ``AssetWatcher`` holds an instance): nothing heavy at the top.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseEventTrigger

from airflow_matview import lag_history, refresh_metrics
from airflow_matview.freshness import Lag, LagRecord, cover, fail, lag_of, observe, unknown
from airflow_matview.text import error_line, format_seconds
from airflow_matview.triggers import source_changes
from airflow_matview.version_compat import HAS_SHARED_TRIGGER_STREAMS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Coroutine, Hashable

    from airflow.triggers.base import TriggerEvent

    from airflow_matview.triggers.source_changes import ViewState

log = logging.getLogger(__name__)

CLASSPATH = "airflow_matview.triggers.freshness_monitor.FreshnessTrigger"
#: The state store key of a view's measurement: this prefix and the view's name.
STATE_KEY_PREFIX = "lag:"
#: Seconds the reason of an alert may wait for Airflow to say what the view's DAG runs are doing.
RUN_FACTS_TIME_LIMIT = 10.0
#: A view's measurement is written to the state store when it changes, and at least this often (for the page).
HEARTBEAT_SECONDS = 30.0


def measurement_bound(poll_interval: float) -> float:
    """Seconds the monitor waits for a poll's result (a failure is one) before it counts the lag as unknown: a
    poll's time limit, twice its watchdog's grace (the wait, then the wait after dropping the connection) and one
    poll interval. A failed poll is reported at once; this bounds only a poll that says nothing at all."""
    limit = source_changes.poll_time_limit(poll_interval)
    return limit + 2 * source_changes.WATCHDOG_GRACE_SECONDS + poll_interval


def stale_after(poll_interval: float) -> float:
    """Seconds without a poll's result after which a reader of the stored measurement (the fleet page) counts the lag
    as unknown: :func:`measurement_bound` and one heartbeat (what it reads may be that old)."""
    return measurement_bound(poll_interval) + HEARTBEAT_SECONDS


@dataclass
class Watched:
    """One view the monitor measures, and what it knows of it.

    :param spec: the view as the DAG file gave it: ``view``, ``dag_id``, ``target`` (seconds), ``after`` (names),
        ``notifiers`` (:meth:`NotifierSpec.as_dict`).
    """

    spec: dict[str, Any]
    record: LagRecord = field(default_factory=LagRecord)
    lag: Lag = field(default_factory=lambda: unknown("not measured yet"))
    alerting: bool = False
    alert_reason: str | None = None
    stale_after: float = 0.0
    saved: str = ""
    saved_at: float = 0.0
    history: list[lag_history.Point] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.spec["view"])

    @property
    def target(self) -> float | None:
        """Its ``target_lag`` in seconds; ``None`` for a view measured only as the upstream of one with a target."""
        target = self.spec.get("target")
        return None if target is None else float(target)

    @property
    def alert_after(self) -> float | None:
        """The lag over which its notifiers are told: its ``max_staleness`` when set, else its ``target_lag``
        (a spec stored before ``max_staleness`` meant lag has only the target)."""
        threshold = self.spec.get("alert_after", self.spec.get("target"))
        return None if threshold is None else float(threshold)

    @property
    def alert_key(self) -> str:
        """The key that set :attr:`alert_after`: ``max_staleness`` or ``target_lag``."""
        return str(self.spec.get("alert_key") or "target_lag")

    @property
    def over(self) -> bool:
        return self.alert_after is not None and self.lag.over(self.alert_after)

    def state(self, now: float) -> dict[str, Any]:
        """What is stored and shown: the lag, the target, whether it is over, the record, the lag over the last 24
        hours (:mod:`airflow_matview.lag_history`)."""
        return {
            "view": self.name,
            "dag_id": self.spec.get("dag_id"),
            "target": self.target,
            "alert_after": self.alert_after,
            "alert_key": self.alert_key,
            "lag": self.lag.as_dict(),
            "over": self.over,
            "alerting": self.alerting,
            "alert_reason": self.alert_reason if self.alerting else None,
            "evaluated_at": now,
            "stale_after": self.stale_after,
            "after": list(self.spec.get("after", [])),
            "record": self.record.as_dict(),
            "history": lag_history.dump(self.history),
        }


class FreshnessTrigger(BaseEventTrigger):
    """Measure the lag of ``views`` (on one connection) and alert on it; never fires.

    :param conn_id: the Airflow connection of the views' database.
    :param poll_interval: seconds between two polls (the shared poll of the views watched with the same).
    :param views: each ``{"view", "dag_id", "target", "after", "notifiers"}``, upstream views first; or that list
        as JSON text, as it is serialized (Airflow compares a watcher's arguments by a hash of their serialized form,
        which nested mappings would not survive unchanged).
    """

    def __init__(self, conn_id: str, poll_interval: float, views: list[dict[str, Any]] | str) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.poll_interval = float(poll_interval)
        self.views = [dict(view) for view in (json.loads(views) if isinstance(views, str) else views)]
        self._sending: set[asyncio.Future[Any]] = set()
        self._last_sent: dict[str, asyncio.Future[Any]] = {}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return CLASSPATH, {
            "conn_id": self.conn_id,
            "poll_interval": self.poll_interval,
            "views": json.dumps(self.views, sort_keys=True),
        }

    def shared_stream_key(self) -> Hashable:
        return ("airflow_matview.source_changes", self.conn_id, self.poll_interval)

    @classmethod
    async def open_shared_stream(cls, kwargs: dict[str, Any]) -> AsyncIterator[dict[str, ViewState]]:
        """The connection's shared poll, as :class:`~.source_changes.SourceChangesTrigger` opens it."""
        async for states in source_changes.SourceChangesTrigger.open_shared_stream(kwargs):
            yield states

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        key = self.shared_stream_key()
        names = [str(view["view"]) for view in self.views]
        source_changes._WATCHED.setdefault(key, Counter()).update(names)
        try:
            async for event in self._monitor(shared_stream):
                yield event
        finally:
            source_changes._WATCHED[key].subtract(names)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Without shared streams (Airflow before 3.3): a poll loop of its own."""
        watched = Counter(str(view["view"]) for view in self.views)
        async for event in self._monitor(source_changes._poll(self.conn_id, self.poll_interval, watched)):
            yield event

    async def _monitor(self, stream: AsyncIterator[dict[str, ViewState]]) -> AsyncIterator[TriggerEvent]:
        """Every poll interval, measure every view with what the latest poll saw (a failed poll: the lag is unknown,
        with why; nothing at all: unknown after :func:`measurement_bound`); the stream is read by a task of its own,
        so a dead poll cannot stop this."""
        views = [Watched(spec, stale_after=stale_after(self.poll_interval)) for spec in self.views]
        for view in views:
            await self._load(view)
        latest: dict[str, tuple[float, ViewState]] = {}
        reader = asyncio.ensure_future(_read(stream, latest))
        try:
            while True:
                await asyncio.sleep(self.poll_interval)
                await self._measure(views, latest, time.time(), reader)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        yield  # pragma: no cover  (never reached: an async generator that never fires)

    async def _measure(
        self, views: list[Watched], latest: dict[str, tuple[float, ViewState]], now: float, reader: asyncio.Future[Any]
    ) -> None:
        by_name = {view.name: view for view in views}
        bound = measurement_bound(self.poll_interval)
        for view in views:
            seen = latest.pop(view.name, None)
            upstream = [by_name[name] for name in view.spec.get("after", []) if name in by_name]
            if seen is not None:
                self._observe(view, seen, upstream)
            view.lag = lag_of(view.record, now, stale_after=bound, upstream=[u.lag for u in upstream])
            if reader.done() and view.lag.known:
                view.lag = unknown("the poll of the change signals stopped")
            refresh_metrics.lag(self.conn_id, view.name, view.lag.seconds, view.target)
            view.history = lag_history.add(view.history, view.lag, view.over, now)
            await self._alert(view, now)
            await self._save(view, now)

    def _observe(self, view: Watched, seen: tuple[float, ViewState], upstream: list[Watched]) -> None:
        at, state = seen
        if state.failure is not None:
            fail(view.record, state.failure, at)
            return
        if view.record.pending or state.fingerprint is None or view.record.refreshed_at is None:
            self._cover(view, upstream)
        origins = [
            u.record.covered_origin
            for u in upstream
            if u.record.covered_origin is not None and (u.record.refreshed_at or 0.0) > (view.record.read_at or 0.0)
        ]
        problem = None if state.fingerprint is not None else (state.problem or "its sources cannot be watched")
        observe(view.record, state.fingerprint, at, unwatchable=problem, origin=min(origins) if origins else None)

    def _cover(self, view: Watched, upstream: list[Watched]) -> None:
        """Apply the view's latest refresh, when it is one this record has not seen."""
        from airflow_matview.database.identifiers import parse_qualified_name
        from airflow_matview.refresh_task import RefreshRecord

        refresh = RefreshRecord(self.conn_id, parse_qualified_name(view.name)).load()
        if not refresh or not isinstance(refresh.get("committed_at"), (int, float)):
            return
        if refresh["committed_at"] == view.record.refreshed_at:
            return
        read_at = float(refresh.get("signals_read_at") or refresh["committed_at"])
        origins = [u.record.covered_origin for u in upstream if u.record.covered_origin is not None]
        cover(
            view.record,
            refresh.get("fingerprint"),
            read_at=read_at,
            committed_at=float(refresh["committed_at"]),
            origin=min(origins) if origins else None,
        )
        fired_at, _ = source_changes._LAST_FIRED.get((self.conn_id, view.name), (0.0, None))
        if 0.0 < fired_at <= read_at:  # this refresh answered the watcher's event: how long that took
            source_changes._FIRE_TO_COMMIT[(self.conn_id, view.name)] = float(refresh["committed_at"]) - fired_at

    async def _alert(self, view: Watched, now: float) -> None:
        """Tell the view's notifiers when its lag goes over its threshold (once per episode) and when it is back."""
        from airflow_matview.alerting.lag_alerts import notify_lag

        if not view.alerting and view.over:
            view.alerting = True
            # As measured now: the reason is worked out in the background, while the view is measured on.
            measured = Watched(view.spec, record=copy.copy(view.record), lag=view.lag)
            self._send(view.name, self._behind(measured, now, view))
        elif view.alerting and not view.over:
            view.alerting, view.alert_reason = False, None
            self._send(view.name, notify_lag("caught_up", view.spec, self.conn_id, view.lag, None, now))

    async def _behind(self, view: Watched, now: float, measuring: Watched) -> list[str]:
        """Tell the view's notifiers it is behind, with why (which may wait up to :data:`RUN_FACTS_TIME_LIMIT`), and
        keep why with the view being ``measuring`` (stored with it for the fleet page) while the episode lasts."""
        from airflow_matview.alerting.lag_alerts import notify_lag

        reason = await self._reason(view, now)
        if measuring.alerting:
            measuring.alert_reason = reason
        return await notify_lag("behind", view.spec, self.conn_id, view.lag, reason, now)

    def _send(self, name: str, notification: Coroutine[Any, Any, Any]) -> None:
        """Send in the background: neither a slow notifier nor a slow reason (Airflow's answer on the view's runs)
        holds the measurement of this or the other views up. A view's notifications go out in order: each waits for
        the one before it."""
        previous = self._last_sent.get(name)

        async def in_order() -> Any:
            if previous is not None:
                await asyncio.wait([previous])
            return await notification

        sending = asyncio.ensure_future(in_order())
        self._last_sent[name] = sending
        self._sending.add(sending)
        sending.add_done_callback(self._sending.discard)

    async def _reason(self, view: Watched, now: float) -> str:
        """Why the view is behind, as far as the triggerer can tell: from its watcher (requested, held by
        ``min_interval``, not watched here), its DAG's runs (queued, running, none) and its last failed refresh."""
        lag = view.lag
        if not lag.known:
            return f"its lag cannot be measured: {lag.reason}"
        if lag.basis == "last_refresh":
            return f"its sources cannot be watched ({lag.reason}), and its last refresh is that old"
        changed = f"its sources changed at {_iso(lag.since)}"
        if view.record.refreshed_at is None:  # what it reflects is not known: counted from when it was first measured
            changed = f"no refresh of it has been recorded since its lag is measured ({_iso(lag.since)})"
        fired_at, _ = source_changes._LAST_FIRED.get((self.conn_id, view.name), (0.0, None))
        if not view.spec.get("watched", True):
            runs = await self._runs(view, fired_at=lag.since or now, requested=False)
            return f"{changed}; it is refreshed {_started_by(view.spec)}" + (
                f", and {runs}" if runs else ", and has not been since"
            )
        if lag.since is not None and fired_at >= lag.since:
            requested = f"{changed}; a refresh was requested at {_iso(fired_at)}"
            runs = await self._runs(view, fired_at=fired_at)
            return f"{requested} and none has committed since: " + (
                runs or "its run is queued, running or failing (its state could not be read)"
            )
        if not source_changes._WATCHED.get(self.shared_stream_key(), Counter()).get(view.name, 0) > 1:
            return (
                f"{changed}; no watcher requests its refresh in this triggerer (its DAG is paused, or another "
                "triggerer runs its watcher)"
            )
        floor = view.spec.get("min_interval")
        if isinstance(floor, (int, float)) and fired_at + floor > now:
            return (
                f"{changed}; its refresh waits for min_interval ({format_seconds(float(floor))}) until "
                f"{_iso(fired_at + floor)}"
            )
        return f"{changed}; its refresh is not requested yet"

    async def _runs(self, view: Watched, fired_at: float, requested: bool = True) -> str | None:
        """What the view's DAG is doing about a refresh requested (or due) at ``fired_at``: its last refresh failed
        since, a run queued, running, or, when its watcher ``requested`` one, none (the scheduler has not created
        it); ``None`` when there is nothing to say or it cannot be read. Asked of Airflow through the triggerer (a
        few API calls, once per episode), within a time limit."""
        dag_id = view.spec.get("dag_id")
        if not dag_id:
            return None
        try:
            queued, running, failed = await asyncio.wait_for(
                asyncio.to_thread(_run_facts, str(dag_id), self.conn_id, view.name), RUN_FACTS_TIME_LIMIT
            )
        except Exception as exc:  # the alert goes out with less detail
            why = f"no answer within {format_seconds(RUN_FACTS_TIME_LIMIT)}" if isinstance(exc, TimeoutError) else ""
            self.log.info("airflow-matview: cannot read the runs of %s: %s", dag_id, why or error_line(exc))
            return None
        if failed is not None and float(failed[0]) >= fired_at and not running:
            return f"its refresh failed at {_iso(float(failed[0]))} ({failed[1]})"
        if running:
            return f"a run of {dag_id} is running and has not committed (a long refresh, a lock wait or a retry)"
        if queued:
            return (
                f"a run of {dag_id} is queued and has not started (waiting for the scheduler, a worker, a pool slot or "
                "max_active_runs)"
            )
        if not requested:
            return None
        return (
            f"no run of {dag_id} is queued or running: its DAG is paused, or the scheduler has not started one (is "
            "it running? `airflow jobs check --job-type SchedulerJob`)"
        )

    async def _load(self, view: Watched) -> None:
        stored = await self._store_call("aget", STATE_KEY_PREFIX + view.name)
        if isinstance(stored, str):
            with contextlib.suppress(ValueError):
                stored = json.loads(stored)
        if isinstance(stored, dict):
            view.record = LagRecord.from_dict(stored.get("record"))
            # An episode announced under another threshold (the config changed) is not closed under this one: a
            # view still over it is announced again, with its new threshold's event.
            same_threshold = stored.get("alert_key", "target_lag") == view.alert_key
            view.alerting = bool(stored.get("alerting")) and same_threshold
            reason = stored.get("alert_reason")
            view.alert_reason = reason if view.alerting and isinstance(reason, str) else None
            view.history, _ = lag_history.load(stored.get("history"), time.time())

    async def _save(self, view: Watched, now: float) -> None:
        """Store the view's measurement when it changed, and at least every :data:`HEARTBEAT_SECONDS`; a change of
        the lag alone (as of its 24-hour series) or of when it was last measured waits for the next write."""
        state = view.state(now)
        # What is left out changes at every poll; a reader allows for the heartbeat (:func:`stale_after`).
        record = {**state["record"], "measured_at": None}
        moving = {"evaluated_at": None, "lag": None, "history": None, "record": record}
        changed = json.dumps({**state, **moving}, sort_keys=True, default=str)
        if changed == view.saved and now - view.saved_at < HEARTBEAT_SECONDS:
            return
        view.saved, view.saved_at = changed, now
        await self._store_call("aset", STATE_KEY_PREFIX + view.name, state)

    async def _store_call(self, method: str, *args: Any) -> Any:
        store = self.asset_state_store if HAS_SHARED_TRIGGER_STREAMS else None
        if store is None:
            return None
        try:
            return await getattr(store, method)(*args)
        except Exception as exc:  # measuring goes on; only a restart or the fleet page would miss it
            self.log.warning("airflow-matview: the lag monitor cannot %s its state: %s", method[1:], error_line(exc))
            return None


def _run_facts(dag_id: str, conn_id: str, view: str) -> tuple[int, int, tuple[float, str] | None]:
    """The DAG's queued and running runs (a running run whose refresh task is queued or scheduled counts as queued), and
    its view's last recorded refresh failure (``(when, error)``), asked of Airflow from the triggerer."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    from airflow_matview.database.identifiers import parse_qualified_name
    from airflow_matview.refresh_task import RefreshRecord

    queued = RuntimeTaskInstance.get_dr_count(dag_id, states=["queued"])
    running = RuntimeTaskInstance.get_dr_count(dag_id, states=["running"])
    if running:
        waiting = RuntimeTaskInstance.get_ti_count(dag_id, task_ids=["refresh"], states=["queued", "scheduled"])
        if waiting:  # the run has started; its refresh has not
            queued, running = queued + waiting, 0
    record = RefreshRecord(conn_id, parse_qualified_name(view)).load() or {}
    failed_at, error = record.get("failed_at"), record.get("error")
    failure = (float(failed_at), str(error)) if isinstance(failed_at, (int, float)) and error else None
    return queued, running, failure


async def _read(stream: AsyncIterator[dict[str, ViewState]], latest: dict[str, tuple[float, ViewState]]) -> None:
    async for states in stream:
        now = time.time()
        latest.update({name: (now, state) for name, state in states.items()})


def _started_by(spec: dict[str, Any]) -> str:
    """What starts the runs of a view no watcher refreshes: the views it is built ``after:``, its schedule, or only
    a user."""
    after, schedule = [str(name) for name in spec.get("after") or []], spec.get("schedule")
    parts = []
    if after:
        parts.append(f"when {' or '.join(after)} is refreshed")
    if schedule:
        parts.append(f"on its schedule ({schedule})")
    return " and ".join(parts) or "only when triggered (it has no schedule)"


def _iso(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")
