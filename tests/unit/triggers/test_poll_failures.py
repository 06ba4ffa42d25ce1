"""A failed poll is said, not kept silent: the shared poll yields, for each view it was for, a state saying why (one
line naming the connection, no traceback) and logs once per outage; the watchers skip such a state (no event, no
line of their own); the lag monitor turns the lag unknown with that reason at its next measurement, and tells the
notifiers once, and once more when a poll succeeds again. No server: the polls are fed to each consumer."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from airflow_matview.exceptions import MatviewRefreshError, MatviewSetupError
from airflow_matview.triggers import freshness_monitor, source_changes
from airflow_matview.triggers.freshness_monitor import FreshnessTrigger, Watched, measurement_bound, stale_after
from airflow_matview.triggers.source_changes import SourceChangesTrigger, ViewState, failure_reason
from devtools.harness.fingerprints import signals as _signals

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

VIEW = "public.v"
REFUSED = (
    'connection failed: connection to server at "127.0.0.1", port 5432 failed: Connection refused\n'
    "\tIs the server running on that host and accepting TCP/IP connections?"
)


def _connect_error(libpq: str, secret: str = "Sup3rSecret") -> MatviewRefreshError:
    """What :func:`airflow_matview.connections.aconnect` raises: its own error (the password masked), from None,
    while handling libpq's."""
    masked = " ".join(libpq.replace(secret, "***").split())
    try:
        try:
            raise psycopg.OperationalError(libpq)
        except psycopg.OperationalError:
            raise MatviewRefreshError(f"Cannot connect to PostgreSQL at 127.0.0.1:5432 (...): {masked}") from None
    except MatviewRefreshError as error:
        return error


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (_connect_error(REFUSED), "cannot reach the database of connection 'app': connection refused"),
        (
            _connect_error(
                'connection failed: connection to server at "10.0.0.1", port 5432 failed: FATAL:  password '
                'authentication failed for user "app"'
            ),
            "cannot reach the database of connection 'app': password authentication failed for user \"app\"",
        ),
        (
            _connect_error('connection failed: invalid sslmode value: "Sup3rSecret"'),
            "cannot reach the database of connection 'app': Cannot connect to PostgreSQL at 127.0.0.1:5432 (...): "
            'connection failed: invalid sslmode value: "***"',
        ),
        (
            psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
            "cannot reach the database of connection 'app': terminating connection due to administrator command",
        ),
        (
            psycopg.OperationalError(
                "server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally"
            ),
            "cannot reach the database of connection 'app': server closed the connection unexpectedly",
        ),
        (
            psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
            "a poll of connection 'app' ran past its time limit (30s) and was canceled: canceling statement due to "
            "statement timeout",
        ),
        (
            TimeoutError("no answer within 35 s (a stalled server or network); dropped the connection"),
            "the database of connection 'app' does not answer: no answer within 35 s (a stalled server or network); "
            "dropped the connection",
        ),
        (
            MatviewSetupError("Cannot watch ...: Airflow connection 'app' is not defined.\nDefine it."),
            "cannot poll connection 'app': MatviewSetupError: Define it.",
        ),
    ],
    ids=["refused", "auth", "masked", "shutdown", "closed", "time-limit", "watchdog", "undefined"],
)
def test_why_a_poll_failed_is_one_line_naming_the_connection(error: BaseException, reason: str) -> None:
    assert failure_reason("app", error, 30.0) == reason


class _Failing:
    """A watcher connection whose polls fail ``failures`` times, then answer."""

    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures
        self.time_limit = 30.0
        self.polls = 0

    async def poll(self, names: list[str]) -> dict[str, ViewState]:
        self.polls += 1
        if self.failures:
            raise self.failures.pop(0)
        return {name: ViewState(_signals(0), {}) for name in names}

    async def close(self) -> None:
        pass


def test_the_poll_yields_each_failure_for_every_view_logs_once_and_resumes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    failing = _Failing([_connect_error(REFUSED), psycopg.errors.QueryCanceled("canceling statement")])
    monkeypatch.setattr(source_changes, "_WatcherConnection", lambda conn_id, poll_interval: failing)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(source_changes.asyncio, "sleep", sleep)

    async def first(count: int) -> list[dict[str, ViewState]]:
        stream = source_changes._poll("app", 1.0, Counter({VIEW: 1, "public.w": 2, "public.gone": 0}))
        try:
            return [await anext(stream) for _ in range(count)]
        finally:
            await stream.aclose()

    with caplog.at_level(logging.WARNING, logger=source_changes.__name__):
        refused, canceled, back = asyncio.run(first(3))
    assert refused == {
        name: ViewState(None, {}, failure="cannot reach the database of connection 'app': connection refused")
        for name in ("public.v", "public.w")
    }
    assert {state.failure for state in canceled.values()} == {
        "a poll of connection 'app' ran past its time limit (30s) and was canceled: canceling statement"
    }
    assert all(state.failure is None and state.fingerprint for state in back.values())
    assert slept[:2] == [1.0, 2.0], "the backoff is unchanged"
    assert [record.getMessage().split(":")[1] for record in caplog.records] == [
        " cannot watch 2 view(s) on connection 'app'",
        " connection 'app' is back after 0 s; watching 2 view(s) again",
    ]


def test_a_watcher_skips_a_failed_poll_without_an_event_or_a_line(caplog: pytest.LogCaptureFixture) -> None:
    # With a target, a view whose signals cannot be read is refreshed on a period: a failed poll must not count.
    trigger = SourceChangesTrigger("app", VIEW, poll_interval=1, min_interval=0, target_lag=20)
    failed = ViewState(None, {}, failure="cannot reach the database of connection 'app': connection refused")

    async def stream() -> AsyncIterator[dict[str, ViewState]]:
        for _ in range(3):
            yield {VIEW: failed}

    async def events() -> list[Any]:
        return [event async for event in trigger._fire_on_change(stream())]

    with caplog.at_level(logging.INFO):
        assert asyncio.run(events()) == []
    assert [record.getMessage() for record in caplog.records if VIEW in record.getMessage()] == []


def test_the_monitor_reports_a_failed_poll_at_once_and_the_recovery_once(monkeypatch: pytest.MonkeyPatch) -> None:
    trigger = FreshnessTrigger("app", 1.0, [{"view": VIEW, "dag_id": "d", "target": 20.0, "after": []}])
    sent: list[tuple[str, Any, str | None]] = []

    async def notify(event: str, spec: Any, conn_id: str, lag: Any, reason: str | None, now: float) -> list[str]:
        sent.append((event, lag, reason))
        return []

    async def nothing(*args: Any) -> None:
        return None

    monkeypatch.setattr("airflow_matview.alerting.lag_alerts.notify_lag", notify)
    monkeypatch.setattr(FreshnessTrigger, "_store_call", nothing)
    monkeypatch.setattr(FreshnessTrigger, "_cover", lambda self, view, upstream: None)
    view = Watched(trigger.views[0], stale_after=stale_after(1.0))
    view.record.covered, view.record.refreshed_at = _signals(0), 90.0
    why = "cannot reach the database of connection 'app': connection refused"

    async def measure(now: float, state: ViewState | None) -> None:
        reader = asyncio.get_running_loop().create_future()  # the poll still runs
        latest = {VIEW: (now, state)} if state is not None else {}
        await trigger._measure([view], latest, now, reader)
        await asyncio.gather(*trigger._sending)

    async def scenario() -> None:
        await measure(100.0, ViewState(_signals(0), {}))
        await measure(101.0, ViewState(None, {}, failure=why))
        await measure(102.0, None)  # backing off: nothing new, still unknown with why
        await measure(103.0, ViewState(None, {}, failure=why))
        await measure(104.0, ViewState(_signals(0), {}))
        await measure(105.0, ViewState(_signals(0), {}))
        # A poll that says nothing at all: unknown after the monitor's own bound, not the page's (a heartbeat more).
        await measure(105.0 + measurement_bound(1.0), None)
        await measure(105.5 + measurement_bound(1.0), None)

    asyncio.run(scenario())
    assert [(event, lag.seconds, reason) for event, lag, reason in sent] == [
        ("behind", None, f"its lag cannot be measured: {why}"),
        ("caught_up", 0.0, None),
        ("behind", None, "its lag cannot be measured: no measurement for 42s"),
    ]
    assert view.state(150.0)["record"]["failure"] is None


def test_the_monitor_alerts_on_a_silent_poll_within_its_own_bound_and_the_page_allows_a_heartbeat_more() -> None:
    # At poll_interval 1s: a poll's time limit (30 s), the watchdog's wait and its wait after dropping the
    # connection (5 s each), one poll: 41 s; within target_lag + poll_interval + 30 s from a target of 10 s.
    assert measurement_bound(1.0) == 41.0
    assert stale_after(1.0) == 41.0 + freshness_monitor.HEARTBEAT_SECONDS
    assert measurement_bound(10.0) == 30.0 + 10.0 + 10.0
    assert measurement_bound(100.0) == 300.0 + 10.0 + 100.0
