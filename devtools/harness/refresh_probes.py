"""Watching a refresh from another session: a view slow to refresh, who is refreshing, which locks are held."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg


def make_slow_view(pg: psycopg.Connection, seconds: float) -> None:
    """``slow_view`` (over polls_user, unique index) takes ``seconds`` to refresh: its query sleeps once.

    :param pg: a connection to the scenario's database.
    :param seconds: how long a refresh takes.
    """
    pg.execute("CREATE TABLE refresh_delay (seconds float8)")
    pg.execute("INSERT INTO refresh_delay VALUES (0)")
    pg.execute(
        "CREATE MATERIALIZED VIEW slow_view AS SELECT id, name FROM polls_user "
        "WHERE (SELECT pg_sleep(seconds)::text FROM refresh_delay) = ''"
    )
    pg.execute("CREATE UNIQUE INDEX ON slow_view (id)")
    pg.execute("UPDATE refresh_delay SET seconds = %s", [seconds])


def refresh_backends(pg: psycopg.Connection) -> list[tuple[int, str]]:
    """The pid and application name of every other session running a ``REFRESH MATERIALIZED VIEW`` now.

    :param pg: a connection to the database to look at.
    """
    return pg.execute(
        "SELECT pid, application_name FROM pg_stat_activity "
        "WHERE state = 'active' AND query LIKE 'REFRESH MATERIALIZED VIEW%%' AND pid <> pg_backend_pid()"
    ).fetchall()


def locks_on(pg: psycopg.Connection, relname: str) -> int:
    """How many locks other sessions hold or wait for on the relation ``relname``.

    :param pg: a connection to the database to look at.
    :param relname: the relation's name.
    """
    row = pg.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        "WHERE c.relname = %s AND l.pid <> pg_backend_pid()",
        [relname],
    ).fetchone()
    return int(row[0]) if row else 0


def wait_for(condition: Any, timeout: float, message: str) -> float:
    """Poll ``condition`` until true; return the seconds it took.

    :param condition: a callable without arguments.
    :param timeout: seconds to wait at most.
    :param message: the assertion's message if it never becomes true.
    :raises AssertionError: after ``timeout`` seconds.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{message} (waited {timeout}s)")
