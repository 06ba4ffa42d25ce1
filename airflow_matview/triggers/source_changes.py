"""The trigger behind ``on_change``: it watches the change signals of a view's sources from the triggerer.

Every watched view on one Airflow connection (and one poll interval) shares one poll loop and one database
connection (Airflow 3.3's shared streams): each poll is two catalog queries, whatever the number of views: one
resolves the views' names, one reads the change signals of all their sources (the same signals as
``skip_if_unchanged``, see :mod:`airflow_matview.database.change_signals`). Each trigger then compares its own
view's signals with its baseline: the signals when it last fired, kept in Airflow's asset state store, so that a
change committed while the triggerer was down still fires after a restart. Nothing is installed on the user's tables.

This module is imported at DAG-parse time (the DAG's ``AssetWatcher`` holds a trigger instance), so psycopg and
everything that talks to a database are imported only inside the triggerer's coroutines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseEventTrigger

from airflow_matview.database import catalog
from airflow_matview.database.change_signals import describe_changes, read_change_signals
from airflow_matview.database.identifiers import parse_qualified_name
from airflow_matview.database.steps import arun, execute
from airflow_matview.freshness import DEFAULT_FIRE_TO_COMMIT_SECONDS, refresh_lead, unwatched_period
from airflow_matview.text import error_line, format_seconds, one_line
from airflow_matview.version_compat import HAS_SHARED_TRIGGER_STREAMS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Hashable

    from airflow.triggers.base import TriggerEvent
    from psycopg import AsyncConnection

    from airflow_matview.database.steps import Steps

log = logging.getLogger(__name__)

CLASSPATH = "airflow_matview.triggers.source_changes.SourceChangesTrigger"
BASELINE_KEY = "airflow_matview.on_change.baseline"
FIRED_AT_KEY = "airflow_matview.on_change.fired_at"
# After a failed poll: wait 1 s, 2 s, 4 s, ... up to this long before trying again.
MAX_BACKOFF_SECONDS = 60.0
# The bounds of a poll's time limit (poll_time_limit), and how much longer the watchdog waits for an answer.
MIN_POLL_TIME_LIMIT_SECONDS = 30.0
MAX_POLL_TIME_LIMIT_SECONDS = 300.0
WATCHDOG_GRACE_SECONDS = 5.0
# For the watcher's session: its polls are autocommit statements, each bounded by the server.
_SET_STATEMENT_TIMEOUT = "SELECT pg_catalog.set_config('statement_timeout', %s, false)"


@dataclass(frozen=True)
class ViewState:
    """What one poll saw of one watched view.

    :param fingerprint: its sources' change signals (JSON-ready), or ``None`` when they cannot be watched.
    :param source_names: the display names of its sources by oid (as text), to say which ones changed.
    :param problem: why the view cannot be watched now (missing, not a materialized view, blind signals).
    :param exists: whether the view exists as a materialized view (so that refreshing it can work).
    :param failure: why the poll itself failed (:func:`failure_reason`): nothing is known of the view then, and
        the other fields say nothing. The watchers skip such a state; the lag monitor reports the lag as unknown.
    """

    fingerprint: dict[str, Any] | None
    source_names: dict[str, str]
    problem: str | None = None
    exists: bool = True
    failure: str | None = None


# The views each shared poll watches, registered by the triggers of its group (the triggerer runs them all in
# one event loop, alongside the poll): shared-stream key -> view name -> number of triggers watching it.
_WATCHED: dict[Hashable, Counter[str]] = {}
# When each watched view last fired in this triggerer, and its signals then: min_interval also holds across a
# trigger's restarts within the process and between two instances of one trigger (conn_id, view).
_LAST_FIRED: dict[tuple[str, str], tuple[float, dict[str, Any] | None]] = {}
# With target_lag: how long from an event to the commit of the refresh it started, as last measured per view.
_FIRE_TO_COMMIT: dict[tuple[str, str], float] = {}


class SourceChangesTrigger(BaseEventTrigger):
    """Fire when the sources of a materialized view change (for an ``AssetWatcher``).

    :param conn_id: the Airflow connection to the view's database.
    :param view: the view, ``schema.name`` as in SQL.
    :param poll_interval: seconds between two polls of the change signals.
    :param min_interval: seconds: at most one event per this long, however many changes.
    :param target_lag: seconds the view may be behind its sources (``target_lag``): changes wait, coalescing, until
        a refresh started now would only just meet it; sources that cannot be watched fire on a period derived from
        it. ``None``: fire as soon as a change is seen (``on_change``).
    """

    def __init__(
        self,
        conn_id: str,
        view: str,
        poll_interval: float = 10.0,
        min_interval: float = 60.0,
        target_lag: float | None = None,
    ) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.view = view
        self.poll_interval = float(poll_interval)
        self.min_interval = float(min_interval)
        self.target_lag = None if target_lag is None else float(target_lag)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "conn_id": self.conn_id,
            "view": self.view,
            "poll_interval": self.poll_interval,
            "min_interval": self.min_interval,
        }
        if self.target_lag is not None:  # left out otherwise: the watchers of on_change views keep their identity
            kwargs["target_lag"] = self.target_lag
        return CLASSPATH, kwargs

    def shared_stream_key(self) -> Hashable:
        return ("airflow_matview.source_changes", self.conn_id, self.poll_interval)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Without shared streams (Airflow before 3.3): a poll loop of this trigger's own."""
        async for event in self._fire_on_change(_poll(self.conn_id, self.poll_interval, Counter([self.view]))):
            yield event

    @classmethod
    async def open_shared_stream(cls, kwargs: dict[str, Any]) -> AsyncIterator[dict[str, ViewState]]:
        """Poll the change signals of every view watched through ``kwargs['conn_id']``, forever.

        Each raw event maps the watched views' names to what the poll saw. When the database cannot be reached,
        it logs once, retries with a backoff doubling up to a minute, and logs once more when it is back.
        """
        conn_id, poll_interval = kwargs["conn_id"], float(kwargs["poll_interval"])
        watched = _WATCHED.setdefault(("airflow_matview.source_changes", conn_id, poll_interval), Counter())
        async for states in _poll(conn_id, poll_interval, watched):
            yield states

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        """Watch this view in the group's poll, and fire when its signals change."""
        key = self.shared_stream_key()
        _WATCHED.setdefault(key, Counter())[self.view] += 1
        try:
            async for event in self._fire_on_change(shared_stream):
                yield event
        finally:
            _WATCHED[key][self.view] -= 1

    async def _fire_on_change(self, stream: AsyncIterator[dict[str, ViewState]]) -> AsyncIterator[TriggerEvent]:
        """Fire when this view's signals differ from the baseline, at most once per ``min_interval`` (with a target,
        once the changes have waited as long as it allows; for sources that cannot be watched, periodically)."""
        from airflow.triggers.base import TriggerEvent

        baseline: dict[str, Any] | None = await self._stored(BASELINE_KEY)
        fired_at = float(await self._stored(FIRED_AT_KEY) or 0.0)
        problem: str | None = None
        pending_since: float | None = None  # when a change not fired for yet was first seen
        names: dict[str, str] = {}  # every source seen, to name one that is no longer read
        async for states in stream:
            state = states.get(self.view)
            if state is None or state.failure is not None:
                continue  # registered after this poll started, or the poll failed (logged once, by the poll)
            names.update(state.source_names)
            shared_at, shared_baseline = _LAST_FIRED.get((self.conn_id, self.view), (0.0, None))
            if shared_at > fired_at:  # another instance of this trigger in this triggerer fired since
                fired_at, baseline = shared_at, shared_baseline
            if state.problem != problem:
                problem = state.problem
                if problem:
                    self.log.warning("airflow-matview: not watching %s: %s", self.view, problem)
                else:
                    self.log.info("airflow-matview: watching %s", self.view)
            if state.fingerprint is None:
                if self.target_lag is None or not state.exists or not self._period_elapsed(fired_at):
                    continue
                changes = [f"none seen: {state.problem}; refreshed every {format_seconds(self._period())}"]
            elif baseline is None and self.target_lag is not None:
                # Its lag cannot be known until a refresh records what it reflects: one refresh now.
                changes = ["none recorded yet: one refresh to start measuring its lag"]
            elif baseline is None:
                baseline = state.fingerprint
                await self._store(BASELINE_KEY, baseline)
                self.log.info("airflow-matview: recorded the change signals of %s as its baseline", self.view)
                continue
            else:
                changes = describe_changes(baseline, state.fingerprint, names)
                if not changes:
                    # Equivalent signals (only writes that rolled back in between): moving the baseline keeps those
                    # writes from counting after a later ANALYZE. In memory: a restart risks one event too many.
                    baseline, pending_since = state.fingerprint, None
                    continue
                pending_since = pending_since or time.time()
                if not self._due(pending_since, fired_at):
                    continue
            fired_at = time.time()
            _LAST_FIRED[(self.conn_id, self.view)] = (fired_at, state.fingerprint)
            yield TriggerEvent({"view": self.view, "changed": changes, "detected_at": fired_at})
            # Stored after the event left: a crash in between fires again after a restart rather than never.
            pending_since = None
            if state.fingerprint is not None:
                baseline = state.fingerprint
                await self._store(BASELINE_KEY, baseline)
            await self._store(FIRED_AT_KEY, fired_at)

    def _due(self, pending_since: float, fired_at: float) -> bool:
        """Whether changes first seen at ``pending_since`` should start a refresh now: past ``min_interval`` and,
        with a target, once they have waited (coalescing later writes) as long as the target allows."""
        now = time.time()
        if now - fired_at < self.min_interval:
            return False
        return self.target_lag is None or now - pending_since >= self._lead()

    def _lead(self) -> float:
        """How long a change may wait before its refresh starts: the target, less one poll (it is seen up to a poll
        late), less the time from an event to its refresh's commit (measured, else an allowance)."""
        return refresh_lead(self.target_lag or 0.0, self.poll_interval, self._fire_to_commit())

    def _period(self) -> float:
        """With a target, sources that cannot be watched: a refresh this often keeps the view within it."""
        return unwatched_period(self.target_lag or 0.0, self.poll_interval, self.min_interval, self._fire_to_commit())

    def _fire_to_commit(self) -> float:
        return _FIRE_TO_COMMIT.get((self.conn_id, self.view), DEFAULT_FIRE_TO_COMMIT_SECONDS)

    def _period_elapsed(self, fired_at: float) -> bool:
        return time.time() - fired_at >= self._period()

    async def _stored(self, key: str) -> Any:
        store = self.asset_state_store if HAS_SHARED_TRIGGER_STREAMS else None
        if store is None:
            return None
        try:
            return await store.aget(key)
        except Exception as exc:  # no stored baseline: the first poll records one
            self.log.warning("airflow-matview: cannot read %s of %s: %s", key, self.view, error_line(exc))
            return None

    async def _store(self, key: str, value: Any) -> None:
        store = self.asset_state_store if HAS_SHARED_TRIGGER_STREAMS else None
        if store is None:
            return
        try:
            await store.aset(key, value)
        except Exception as exc:  # the next poll still works; only a restart would not know
            self.log.warning("airflow-matview: cannot store %s of %s: %s", key, self.view, error_line(exc))


async def _poll(conn_id: str, poll_interval: float, watched: Counter[str]) -> AsyncIterator[dict[str, ViewState]]:
    """Poll the change signals of the views in ``watched``, forever; each item maps their names to what a poll saw.

    When the database cannot be reached, or does not answer a poll in time, it logs once, retries with a backoff
    doubling up to a minute, and logs once more when it is back. Each failed poll yields, for every view it was for,
    a state whose :attr:`ViewState.failure` says why (:func:`failure_reason`), so that a consumer learns of the
    failure when it happens rather than by silence.
    """
    watcher = _WatcherConnection(conn_id, poll_interval)
    failing_since: float | None = None
    backoff = 1.0
    try:
        while True:
            names = sorted(name for name, count in watched.items() if count > 0)
            failure: str | None = None
            try:
                if names:
                    states = await watcher.poll(names)
                    if failing_since is not None:
                        log.warning(
                            "airflow-matview: connection %r is back after %.0f s; watching %d view(s) again",
                            conn_id,
                            time.monotonic() - failing_since,
                            len(names),
                        )
                        failing_since, backoff = None, 1.0
            except Exception as exc:  # any failure of the database: log, say so, back off, resume
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning(
                        "airflow-matview: cannot watch %d view(s) on connection %r: %s; retrying with a backoff "
                        "up to %.0f s, and saying nothing more until it works again",
                        len(names),
                        conn_id,
                        error_line(exc),
                        MAX_BACKOFF_SECONDS,
                    )
                failure = failure_reason(conn_id, exc, watcher.time_limit)
                await watcher.close()
            if failure is not None:
                yield {name: ViewState(None, {}, failure=failure) for name in names}
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            if names:
                yield states
            await asyncio.sleep(poll_interval)
    finally:
        await watcher.close()


def failure_reason(conn_id: str, error: BaseException, time_limit: float) -> str:
    """Why a poll of ``conn_id`` failed, in one line for people (no traceback, no password), e.g.
    ``cannot reach the database of connection 'app': connection refused``.

    :param conn_id: the Airflow connection polled.
    :param error: what the poll raised.
    :param time_limit: the poll's time limit (:func:`poll_time_limit`), in seconds.
    """
    import psycopg

    if isinstance(error, TimeoutError):  # the watchdog: no answer at all
        return f"the database of connection {conn_id!r} does not answer: {one_line(error)}"
    if isinstance(error, psycopg.errors.QueryCanceled):
        return (
            f"a poll of connection {conn_id!r} ran past its time limit ({format_seconds(time_limit)}) and was "
            f"canceled: {_libpq_cause(str(error))}"
        )
    if isinstance(error, psycopg.OperationalError):
        return f"cannot reach the database of connection {conn_id!r}: {_libpq_cause(str(error))}"
    # A failure to connect comes as the package's own error (its password masked), raised from None while handling
    # libpq's: libpq's cause, when the package's message holds it as it is (nothing was masked in it).
    if isinstance(error.__context__, psycopg.OperationalError):
        cause = _libpq_cause(str(error.__context__))
        if cause.casefold() in one_line(error).casefold():
            return f"cannot reach the database of connection {conn_id!r}: {cause}"
        return f"cannot reach the database of connection {conn_id!r}: {one_line(error)}"
    return f"cannot poll connection {conn_id!r}: {error_line(error)}"


# libpq names each address it tried: 'connection to server at "host" (addr), port 5432 failed: <cause>'; its hints
# (the sentences after the cause) repeat what the connection already says.
_LIBPQ_ATTEMPT = re.compile(r"connection to server (?:at|on) .*? failed: ")
_LIBPQ_HINT = re.compile(r"\s+(?:Is the server running|This probably means|HINT:).*$")
_SEVERITY = re.compile(r"^(?:FATAL|ERROR):\s+")


def _libpq_cause(message: str) -> str:
    """The cause in a libpq error message, on one line: the last attempt's, without hints, in lower case."""
    text = one_line(message).rstrip(".")
    text = _LIBPQ_ATTEMPT.split(text)[-1].strip() or text
    text = _SEVERITY.sub("", _LIBPQ_HINT.sub("", text)).rstrip(".")
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        text = text[0].lower() + text[1:]
    return text


def poll_time_limit(poll_interval: float) -> float:
    """Seconds a poll may take (the watcher session's ``statement_timeout``): three poll intervals, at least
    :data:`MIN_POLL_TIME_LIMIT_SECONDS` (a catalog of many thousand views on a busy server), at most
    :data:`MAX_POLL_TIME_LIMIT_SECONDS`."""
    return min(max(3 * poll_interval, MIN_POLL_TIME_LIMIT_SECONDS), MAX_POLL_TIME_LIMIT_SECONDS)


class _WatcherConnection:
    """The poll loop's connection: opened when needed, and never waited on for ever.

    The server ends a poll that runs past :func:`poll_time_limit` (``statement_timeout``); a poll that gets no answer
    at all (a stalled server, a half-open connection that TCP keepalives have not caught yet) is given up
    :data:`WATCHDOG_GRACE_SECONDS` later: its socket is shut down and the poll fails with a :class:`TimeoutError`.

    :param conn_id: the Airflow connection.
    :param poll_interval: seconds between two polls.
    """

    def __init__(self, conn_id: str, poll_interval: float) -> None:
        self.conn_id = conn_id
        self.time_limit = poll_time_limit(poll_interval)
        self.conn: AsyncConnection | None = None

    async def poll(self, names: list[str]) -> dict[str, ViewState]:
        """One poll of ``names`` (connecting first if needed), or :class:`TimeoutError` if the peer stalls."""
        work = asyncio.ensure_future(self._connect_and_poll(names))
        try:
            await asyncio.wait({work}, timeout=self.time_limit + WATCHDOG_GRACE_SECONDS)
            if work.done():
                return work.result()
            if self.conn is not None:
                from airflow_matview.connections import shut_down

                shut_down(self.conn)  # the poll fails at once, without another wait on the peer
                await asyncio.wait({work}, timeout=WATCHDOG_GRACE_SECONDS)
            raise TimeoutError(
                f"no answer within {self.time_limit + WATCHDOG_GRACE_SECONDS:.0f} s (a stalled server or network); "
                "dropped the connection"
            )
        except asyncio.CancelledError:  # the trigger ends: the poll ends first, as it would have without a watchdog
            work.cancel()
            await asyncio.wait({work})
            raise
        finally:
            if not work.done():
                work.cancel()
            elif not work.cancelled():
                work.exception()  # seen: what it raised is what the poll raised, or explained by the TimeoutError

    async def _connect_and_poll(self, names: list[str]) -> dict[str, ViewState]:
        if self.conn is None or self.conn.closed:
            self.conn = await _connect(self.conn_id)
            await arun(self.conn, execute(_SET_STATEMENT_TIMEOUT, [f"{self.time_limit * 1000:.0f}ms"]))
        return await poll_views(self.conn, names)

    async def close(self) -> None:
        """Close the session, waiting at most :data:`WATCHDOG_GRACE_SECONDS` for a peer that does not answer (its
        socket is then left to the garbage collector)."""
        if self.conn is not None:
            conn, self.conn = self.conn, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), WATCHDOG_GRACE_SECONDS)


async def poll_views(conn: AsyncConnection, names: list[str]) -> dict[str, ViewState]:
    """One poll: the change signals of the views ``names`` (``schema.name`` as in SQL), in two queries."""
    return await arun(conn, poll_steps(names))


def poll_steps(names: list[str]) -> Steps[dict[str, ViewState]]:
    """The steps of :func:`poll_views`: find the views by name, then read their change signals."""
    parsed = {name: parse_qualified_name(name) for name in names}
    found = yield from catalog.find_relations.steps(list(parsed.values()))
    states: dict[str, ViewState] = {}
    oids: dict[int, str] = {}
    for name, qualified in parsed.items():
        relation = found.get(qualified)
        if relation is None:
            states[name] = ViewState(None, {}, "it does not exist (yet); watching for it to be created", False)
        elif relation.relkind != "m":
            states[name] = ViewState(None, {}, "it is not a materialized view", False)
        else:
            oids[relation.oid] = name
    if oids:
        signals = yield from read_change_signals.steps(list(oids))
        for oid, seen in signals.items():
            problem = None if seen.fingerprint else f"{seen.untracked_because}; it refreshes on its schedule only"
            states[oids[oid]] = ViewState(seen.fingerprint, seen.source_names, problem)
    return states


async def _connect(conn_id: str) -> AsyncConnection:
    """An autocommit connection (a fresh snapshot per poll, never idle in a transaction) from an Airflow
    connection, as the refresh's own (:func:`airflow_matview.connections.aconnect`: a bounded wait to connect, TCP
    keepalives)."""
    from airflow_matview.connections import aconnect

    return await aconnect(
        conn_id,
        "watch the sources of materialized views",
        autocommit=True,
        application_name=f"airflow-matview watcher ({conn_id})",
    )
