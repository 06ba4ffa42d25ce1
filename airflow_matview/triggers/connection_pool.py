"""Connections reused in the triggerer: a bounded pool of asynchronous connections per Airflow connection.

A refresh that runs in the triggerer (``deferrable`` or ``start_from_trigger``) borrows a connection here instead of
opening one: on a warm connection a tiny refresh costs its statements and little more, where a new one costs the
connection (a few milliseconds and a new server process with cold caches). At most
``[matview] triggerer_max_connections`` connections per Airflow connection are open in one triggerer process; a
refresh beyond that waits in the event loop for one to come back.

Not psycopg_pool: it opens connections in the background and retries failed ones there, so that a refresh waiting
for a connection would only learn "no connection in time", where a refresh must fail at once with what the server
said (a wrong password is not retried, a server that is down is). Here a refresh that finds no idle connection opens
one itself, with :func:`airflow_matview.connections.aconnect`'s errors.

Every connection comes back in autocommit mode with no transaction open (the refresh opens its own); one left in a
transaction, broken or closed is dropped. The Airflow connection is looked up again after
:data:`LOOKUP_SECONDS`: when it changed (a new password, another host), the connections to the old one are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_matview.text import error_line

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from psycopg import AsyncConnection

    from airflow_matview.connections import ConnectionTarget

log = logging.getLogger(__name__)

CONFIG_SECTION = "matview"
MAX_CONNECTIONS_OPTION = "triggerer_max_connections"
DEFAULT_MAX_CONNECTIONS = 16
#: How long a looked-up Airflow connection is used before it is looked up again.
LOOKUP_SECONDS = 30.0
#: An idle connection is closed after this long; any connection after MAX_AGE_SECONDS.
MAX_IDLE_SECONDS = 60.0
MAX_AGE_SECONDS = 1800.0
#: A connection idle longer than this is checked with one query before it is lent again.
CHECK_AFTER_IDLE_SECONDS = 5.0


def max_connections() -> int:
    """``[matview] triggerer_max_connections`` (at least 1)."""
    from airflow.configuration import conf

    return max(1, conf.getint(CONFIG_SECTION, MAX_CONNECTIONS_OPTION, fallback=DEFAULT_MAX_CONNECTIONS))


@dataclass
class _Idle:
    conn: AsyncConnection
    digest: str
    opened_at: float
    idle_since: float


@dataclass
class PoolStats:
    """What one pool did: connections opened, loans served by an idle connection, and the most lent at once."""

    opened: int = 0
    reused: int = 0
    most_in_use: int = 0


@dataclass
class ConnectionPool:
    """The connections of one Airflow connection in one event loop.

    :param conn_id: the Airflow connection id.
    :param size: the most connections lent at once.
    """

    conn_id: str
    size: int
    stats: PoolStats = field(default_factory=PoolStats)
    _target: ConnectionTarget | None = None
    _looked_up_at: float = 0.0
    _idle: list[_Idle] = field(default_factory=list)
    _opened_at: dict[int, float] = field(default_factory=dict)
    _in_use: int = 0

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.size)

    @contextlib.asynccontextmanager
    async def connection(self, purpose: str) -> AsyncIterator[AsyncConnection]:
        """Lend a connection (waiting while ``size`` are lent), and take it back whatever happens.

        :param purpose: what it is for, for error messages, e.g. ``refresh public.sales``.
        :raises MatviewSetupError, MatviewRefreshError: as :func:`airflow_matview.connections.aconnect`.
        """
        async with self._slots:
            conn, digest = await self._borrow(purpose)
            self._in_use += 1
            self.stats.most_in_use = max(self.stats.most_in_use, self._in_use)
            try:
                yield conn
            finally:
                self._in_use -= 1
                await self._give_back(conn, digest)

    async def _borrow(self, purpose: str) -> tuple[AsyncConnection, str]:
        target = await self._current_target(purpose)
        now = time.monotonic()
        while self._idle:
            idle = self._idle.pop()
            if idle.digest != target.digest or now - idle.opened_at > MAX_AGE_SECONDS or not await _usable(idle, now):
                await _close(idle.conn)
                continue
            self.stats.reused += 1
            return idle.conn, idle.digest
        conn = await target.aconnect(purpose, autocommit=True)
        self._opened_at[id(conn)] = time.monotonic()
        self.stats.opened += 1
        return conn, target.digest

    async def _current_target(self, purpose: str) -> ConnectionTarget:
        from airflow_matview.connections import aconnection_target

        if self._target is None or time.monotonic() - self._looked_up_at > LOOKUP_SECONDS:
            self._target = await aconnection_target(self.conn_id, purpose)
            self._looked_up_at = time.monotonic()
        return self._target

    async def _give_back(self, conn: AsyncConnection, digest: str) -> None:
        from psycopg.pq import TransactionStatus

        opened_at = self._opened_at.pop(id(conn), None)
        if opened_at is None:  # lent from the idle list: it kept its opening time there
            opened_at = time.monotonic()
        clean = not conn.closed and not conn.broken and conn.info.transaction_status == TransactionStatus.IDLE
        if clean and self._target is not None and digest == self._target.digest:
            self._idle.append(_Idle(conn, digest, opened_at, time.monotonic()))
        else:
            await _close(conn)
        now = time.monotonic()
        for idle in [idle for idle in self._idle if now - idle.idle_since > MAX_IDLE_SECONDS]:
            self._idle.remove(idle)
            await _close(idle.conn)

    async def close(self) -> None:
        """Close every idle connection (one lent now is closed when it comes back)."""
        idle, self._idle = self._idle, []
        self._target = None
        for item in idle:
            await _close(item.conn)


async def _usable(idle: _Idle, now: float) -> bool:
    if idle.conn.closed or idle.conn.broken:
        return False
    if now - idle.idle_since <= CHECK_AFTER_IDLE_SECONDS:
        return True
    try:
        await idle.conn.execute("SELECT 1")
    except Exception as exc:  # the server closed it, or went away: open another
        log.info("airflow-matview: an idle pooled connection is gone (%s); opening another", error_line(exc))
        return False
    return True


async def _close(conn: AsyncConnection) -> None:
    with contextlib.suppress(Exception):
        await conn.close()


# One registry per event loop: a connection belongs to the loop that opened it.
_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, ConnectionPool]] = weakref.WeakKeyDictionary()


def pool_for(conn_id: str) -> ConnectionPool:
    """The pool of ``conn_id`` in the running event loop, created on first use."""
    pools = _POOLS.setdefault(asyncio.get_running_loop(), {})
    if conn_id not in pools:
        pools[conn_id] = ConnectionPool(conn_id, max_connections())
    return pools[conn_id]


async def close_pools() -> None:
    """Close the idle connections of every pool of the running event loop (tests, benchmarks)."""
    for pool in _POOLS.pop(asyncio.get_running_loop(), {}).values():
        await pool.close()
