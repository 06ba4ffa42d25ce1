"""A database of its own for each test on a test server, and the sessions that write to it and read from it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg

if TYPE_CHECKING:
    from devtools.harness.pgcluster import PostgresCluster


class Database:
    """A fresh database on the test server.

    :param server: the server it lives on.
    :param name: its name.
    """

    def __init__(self, server: PostgresCluster, name: str) -> None:
        self.server = server
        self.name = name
        self.dsn = server.dsn(name)
        self.uri = server.uri(name)

    def connect(self, **kwargs: object) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True, **kwargs)  # type: ignore[arg-type]


def publish_statistics(session: psycopg.Connection) -> None:
    """Hand the session's table statistics to the shared statistics now, not up to 10 s later when idle.

    :param session: the session whose counters to publish.
    """
    session.execute("SELECT pg_stat_force_next_flush()")
    session.execute("SELECT 1")


def write(database: Database, statement: str) -> None:
    """A change from another session, committed and handed to the statistics system as a session ends.

    :param database: where to write.
    :param statement: the change.
    """
    with database.connect() as writer:
        writer.execute(statement)
        publish_statistics(writer)


def query(database: Database, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """One statement on a session of its own that ends at once: an idle session of the database would make a
    skip_if_unchanged check wait up to 10.5 s for counters it might not have published yet.

    :param database: where to run it.
    :param statement: the statement, with ``%s`` for each of ``params``.
    :param params: its parameters.
    """
    with database.connect() as conn:
        cursor = conn.execute(statement, params or None)
        return cursor.fetchall() if cursor.description else []
