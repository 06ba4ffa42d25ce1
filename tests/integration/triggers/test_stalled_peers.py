"""A peer that stops answering never hangs the triggerer's work: the on_change watcher gives a stalled poll up (one
line), reconnects and sees changes again; a deferred refresh gives up connecting to a server that never answers.

The stalls are real: a TCP proxy that stops forwarding (a half-open connection), the watcher's server process
stopped with SIGSTOP (the kernel still acknowledges what it is sent), and the catalog locked by another session
(the server is up, the poll waits: its statement_timeout ends it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from airflow_matview.connections import aconnect
from airflow_matview.database.refresh_settings import RefreshSettings
from airflow_matview.exceptions import MatviewRefreshError
from airflow_matview.triggers.deferred_refresh import RefreshTrigger, error_from_event, settings_to_kwargs
from airflow_matview.triggers.source_changes import SourceChangesTrigger
from devtools.harness.pgcluster import embedded_cluster
from devtools.harness.scenario import VIEW, create_reference_scenario
from devtools.harness.stalling_proxy import StallingProxy

if TYPE_CHECKING:
    from devtools.harness.databases import Database

pytestmark = pytest.mark.timeout(600)
WATCHER_LOG = "airflow_matview.triggers.source_changes"
STALLS = ("proxied", "stopped", "locked")


def _watcher_pid(conn: psycopg.Connection, database: str) -> int | None:
    row = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name LIKE 'airflow-matview watcher%%'",
        [database],
    ).fetchone()
    return int(row[0]) if row else None


def _insert(dsn: str, user: int) -> None:
    # The session ends: its counters reach the statistics the watcher reads.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO polls_user VALUES (%s, 'after the stall', 40)", [user])


class _Lines(logging.Handler):
    """The watcher's log lines, with when they were logged."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.created, record.getMessage()))

    def of(self, conn_id: str) -> list[tuple[float, str]]:
        return [(at, line) for at, line in self.lines if f"connection {conn_id!r}" in line]

    def failed(self, conn_id: str) -> bool:
        return any(f"connection {conn_id!r}:" in line for _, line in self.lines)

    def back(self, conn_id: str) -> bool:
        return any(f"connection {conn_id!r} is back" in line for _, line in self.lines)


def test_the_watcher_gives_a_stalled_poll_up_and_reconnects(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = embedded_cluster()
    cluster.start()
    proxy = StallingProxy(cluster.port).start()
    logger, lines = logging.getLogger(WATCHER_LOG), _Lines()
    logger.addHandler(lines)
    level, logger.level = logger.level, logging.WARNING
    # Whatever an earlier test in this process left (a logging config that disabled existing loggers, a global
    # logging.disable), the watcher's lines must reach the handler.
    disabled, logger.disabled = logger.disabled, False
    globally_disabled = logging.root.manager.disable
    logging.disable(logging.NOTSET)
    stopped: list[int] = []
    try:
        for name in STALLS:
            cluster.create_database(name)
            with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
                create_reference_scenario(conn)
            port = proxy.port if name == "proxied" else cluster.port
            monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}", f"postgresql://postgres@127.0.0.1:{port}/{name}")
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            stalled_at, events = asyncio.run(_stall_and_recover(cluster, proxy, admin, lines, stopped))
    finally:
        logger.removeHandler(lines)
        logger.level, logger.disabled = level, disabled
        logging.disable(globally_disabled)
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        proxy.stop()
        cluster.destroy()
    for name in STALLS:
        (gone_at, gone), (back_at, back) = lines.of(name)
        print(f"{name}: one line {gone_at - stalled_at:.1f}s after the stall; back {back_at - gone_at:.1f}s later")
        assert gone.startswith(f"airflow-matview: cannot watch 1 view(s) on connection {name!r}: "), gone
        assert "is back after" in back
        assert back_at - gone_at < 15
        assert [event.payload["changed"] for event in events[name]] == [["public.polls_user"]], events[name]
    for name in ("proxied", "stopped"):  # no answer at all: the watchdog, 30 s + 5 s after the poll was sent
        (gone_at, gone), _ = lines.of(name)
        assert "TimeoutError: no answer within 35 s (a stalled server or network); dropped the connection" in gone
        assert 34 <= gone_at - stalled_at < 45
    (gone_at, gone), _ = lines.of("locked")  # the server answers: its statement_timeout ends the poll first
    assert "QueryCanceled: canceling statement due to statement timeout" in gone
    assert 29 <= gone_at - stalled_at < 40


async def _stall_and_recover(
    cluster: Any, proxy: StallingProxy, admin: psycopg.Connection, lines: _Lines, stopped: list[int]
) -> tuple[float, dict[str, list[Any]]]:
    """Watch each database, stall each its own way, and wait until each is watched again and fires on a change."""
    events: dict[str, list[Any]] = {name: [] for name in STALLS}

    async def collect(name: str) -> None:
        async for event in SourceChangesTrigger(name, VIEW, poll_interval=1, min_interval=0).run():
            events[name].append(event)

    async def until(condition: Any, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                logger = logging.getLogger(WATCHER_LOG)
                raise AssertionError(
                    f"{what}: not within {seconds:.0f}s; logged: {lines.lines}; logger level {logger.level}, "
                    f"disabled {logger.disabled}, enabled for warnings {logger.isEnabledFor(logging.WARNING)}, "
                    f"handlers {logger.handlers}, tasks {[task.done() for task in tasks]}"
                )
            await asyncio.sleep(0.2)

    tasks = [asyncio.ensure_future(collect(name)) for name in STALLS]
    try:
        await until(lambda: all(_watcher_pid(admin, name) for name in STALLS), 60, "three watchers")
        await asyncio.sleep(3)  # each has recorded its baseline
        locker = await asyncio.to_thread(psycopg.connect, cluster.dsn("locked"))
        stalled_at = time.time()
        assert proxy.stall() == 1
        stopped.append(_watcher_pid(admin, "stopped") or 0)
        os.kill(stopped[0], signal.SIGSTOP)
        # In a thread: the LOCK may wait for the watcher's poll, which this event loop runs.
        await asyncio.to_thread(locker.execute, "LOCK TABLE pg_catalog.pg_class IN ACCESS EXCLUSIVE MODE")
        await until(lambda: lines.failed("locked"), 90, "the locked poll given up")
        await asyncio.to_thread(locker.rollback)
        await asyncio.to_thread(locker.close)
        await until(lambda: all(lines.failed(name) for name in STALLS), 90, "every stalled poll given up")
        await until(lambda: all(lines.back(name) for name in STALLS), 60, "every watcher back")
        for user, name in enumerate(STALLS, start=100):
            await asyncio.to_thread(_insert, cluster.dsn(name), user)
        await until(lambda: all(events.values()), 60, "an event from each watcher")
        await asyncio.sleep(2)  # and no more than one
        return stalled_at, events
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def test_the_watchers_session_is_bounded(postgres_default: Database) -> None:
    from airflow_matview.triggers.source_changes import _WatcherConnection

    async def settings() -> tuple[str, dict[str, int]]:
        watcher = _WatcherConnection("postgres_default", poll_interval=1)
        try:
            await watcher.poll([VIEW])
            assert watcher.conn is not None
            row = await (await watcher.conn.execute("SHOW statement_timeout")).fetchone()
            return str(row[0]) if row else "", _socket_options(watcher.conn)
        finally:
            await watcher.close()

    timeout, options = asyncio.run(settings())
    assert timeout == "30s"
    assert options == {"keepalive": 1, "idle": 30, "interval": 10, "count": 3, "user_timeout_ms": 60000}


def _socket_options(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
    """The TCP options libpq set on the connection's socket, as the kernel has them."""
    with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
        return {
            "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            "interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            "count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            "user_timeout_ms": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
        }


def test_a_deferred_refresh_connects_with_keepalives_unless_the_extras_say_otherwise(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_PLAIN", database.uri)
    monkeypatch.setenv("AIRFLOW_CONN_TUNED", f"{database.uri}?keepalives_idle=7&tcp_user_timeout=5000")

    async def options(conn_id: str) -> dict[str, int]:
        conn = await aconnect(conn_id, "refresh public.polls_user_matt_view")
        try:
            return _socket_options(conn)
        finally:
            await conn.close()

    assert asyncio.run(options("plain")) == {
        "keepalive": 1,
        "idle": 30,
        "interval": 10,
        "count": 3,
        "user_timeout_ms": 60000,
    }
    assert asyncio.run(options("tuned")) == {
        "keepalive": 1,
        "idle": 7,
        "interval": 10,
        "count": 3,
        "user_timeout_ms": 5000,
    }


@pytest.mark.parametrize(("extras", "seconds"), [("", 10), ("?connect_timeout=3", 3)], ids=["default", "extras"])
def test_a_deferred_refresh_gives_up_connecting_to_a_silent_server(
    monkeypatch: pytest.MonkeyPatch, extras: str, seconds: float
) -> None:
    view = "public.polls_user_matt_view"
    with socket.socket() as silent:  # accepts the connection, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        monkeypatch.setenv("AIRFLOW_CONN_SILENT", f"postgresql://app@127.0.0.1:{port}/shop{extras}")
        trigger = RefreshTrigger(view, "silent", settings_to_kwargs(RefreshSettings()))

        async def first_event() -> dict[str, Any]:
            async for event in trigger.run():
                return dict(event.payload)
            raise AssertionError("no event")

        started = time.monotonic()
        event = asyncio.run(asyncio.wait_for(first_event(), 60))
        elapsed = time.monotonic() - started
    print(f"deferred refresh, silent server, connect_timeout {seconds:g}s: gave up after {elapsed:.1f}s")
    error = error_from_event(event)
    assert isinstance(error, MatviewRefreshError)
    assert str(error).startswith(
        f"Cannot connect to PostgreSQL at 127.0.0.1:{port} to refresh {view} (connection 'silent'): "
    )
    assert "timeout expired" in str(error)
    assert seconds - 0.5 <= elapsed < seconds + 10
