"""Open a psycopg connection from an Airflow connection id, with errors that say what to do.

:func:`connect` opens a synchronous one through the postgres provider's ``PostgresHook`` (on a worker);
:func:`aconnect` an asynchronous one with the same arguments and the same errors (in the triggerer).
"""

from __future__ import annotations

from copy import deepcopy
from typing import TYPE_CHECKING, Any

import psycopg
from airflow.providers.postgres.hooks.postgres import PostgresHook
from psycopg import IsolationLevel
from psycopg.rows import tuple_row
from psycopg.types.json import register_default_adapters

from airflow_matview.compat import AirflowNotFoundException
from airflow_matview.exceptions import MatviewConfigurationError, MatviewRefreshError
from airflow_matview.pgerrors import describe_connect_failure, sentence

if TYPE_CHECKING:
    from airflow.sdk import Connection as AirflowConnection

# The connection types whose host, port, login and schema mean a PostgreSQL server (Airflow spells a
# postgresql:// URI as "postgres").
POSTGRES_CONN_TYPES = ("postgres", "postgresql")

# What libpq reports for failures that every later try would repeat, and the fix for each; anything else
# (refused, timed out, server starting up or shutting down, too many clients) may pass, and Airflow retries.
_TRANSIENT_FAILURES = ("too many connections", "too many clients", "starting up", "shutting down", "in recovery")
_PERMANENT_FAILURES = (
    ("password authentication failed", "the connection's login or password is wrong"),
    ("authentication failed", "the server refused the connection's credentials"),
    ("no pg_hba.conf entry", "the server's pg_hba.conf does not let this host, user and database connect"),
    ('role "', "the connection's login names a role that does not exist on the server"),
    ('database "', "the connection's schema (database) names a database that does not exist on the server"),
    ("permission denied for database", "the connection's login lacks CONNECT on the database"),
    ("no password supplied", "the server asks for a password and the connection has none"),
    ("invalid connection option", "the connection's extras hold an option libpq does not know"),
    ("invalid sslmode value", "the connection's sslmode extra is not valid"),
)


def connect(conn_id: str, purpose: str) -> psycopg.Connection:
    """Connect through the postgres provider's :class:`PostgresHook`.

    :param conn_id: the Airflow connection id.
    :param purpose: what the connection is for, for error messages, e.g. ``refresh public.sales``.
    :raises MatviewConfigurationError: the connection is not defined, is not a PostgreSQL connection, or the server
        refuses it for good (wrong password, no such database or role); retrying will not help.
    :raises MatviewRefreshError: the server cannot be reached now (a retry may succeed).
    """
    hook = PostgresHook(postgres_conn_id=conn_id)
    try:
        airflow_connection = hook.connection
    except AirflowNotFoundException:
        raise _undefined(conn_id, purpose) from None
    _check_type(airflow_connection, conn_id, purpose)
    try:
        conn = hook.get_conn()
    except psycopg.OperationalError as exc:
        raise _connect_failed(exc, airflow_connection, conn_id, purpose) from None
    if not isinstance(conn, psycopg.Connection):
        conn.close()
        raise MatviewConfigurationError(
            f"Connection {conn_id!r} gave a {type(conn).__module__} connection; airflow-matview needs psycopg 3 "
            "(installed with apache-airflow-providers-postgres>=6 and SQLAlchemy 2)."
        )
    # Whatever the connection's extras or the role's defaults say: rows as tuples, and a fresh snapshot for each
    # statement, so that a refresh that waited for another one reads what that one committed.
    conn.row_factory = tuple_row
    conn.isolation_level = IsolationLevel.READ_COMMITTED
    return conn


async def aconnect(conn_id: str, purpose: str) -> psycopg.AsyncConnection:
    """:func:`connect`, asynchronous: the arguments ``PostgresHook.get_conn`` would pass, the same errors.

    :param conn_id: the Airflow connection id.
    :param purpose: what the connection is for, for error messages, e.g. ``refresh public.sales``.
    """
    try:
        airflow_connection = await aget_airflow_connection(conn_id)
    except AirflowNotFoundException:
        raise _undefined(conn_id, purpose) from None
    _check_type(airflow_connection, conn_id, purpose)
    try:
        conn = await psycopg.AsyncConnection.connect(**hook_arguments(airflow_connection))
    except psycopg.OperationalError as exc:
        raise _connect_failed(exc, airflow_connection, conn_id, purpose) from None
    register_default_adapters(conn)
    conn.row_factory = tuple_row
    await conn.set_isolation_level(IsolationLevel.READ_COMMITTED)
    return conn


async def aget_airflow_connection(conn_id: str) -> AirflowConnection:
    """The Airflow connection ``conn_id``, looked up from the event loop.

    :raises AirflowNotFoundException: it is not defined.
    """
    from airflow.sdk import BaseHook

    if hasattr(BaseHook, "aget_connection"):
        return await BaseHook.aget_connection(conn_id)
    return BaseHook.get_connection(conn_id)  # Airflow before 3.2: the triggerer lets a trigger make this call


def hook_arguments(airflow_connection: AirflowConnection) -> dict[str, Any]:
    """The arguments ``PostgresHook.get_conn`` connects with: host, port, login, password, database (schema), and
    the extras that are libpq options (``connect_timeout``, ``sslmode``, ``options``...); with an ``iam`` extra, the
    hook's IAM token as the password."""
    connection = deepcopy(airflow_connection)
    if connection.extra_dejson.get("iam", False):
        connection.login, connection.password, connection.port = PostgresHook(
            postgres_conn_id=connection.conn_id
        ).get_iam_token(connection)
    arguments: dict[str, Any] = {
        "host": connection.host,
        "user": connection.login,
        "password": connection.password,
        "dbname": connection.schema,
        "port": connection.port,
    }
    extras = connection.extra_dejson
    arguments.update({name: value for name, value in extras.items() if name not in PostgresHook.ignored_extra_options})
    return arguments


def _undefined(conn_id: str, purpose: str) -> MatviewConfigurationError:
    return MatviewConfigurationError(
        f"Cannot {purpose}: Airflow connection {conn_id!r} is not defined. Create it in the UI "
        f"(Admin > Connections), with `airflow connections add {conn_id} --conn-uri "
        f"postgresql://USER@HOST:5432/DB`, or as an AIRFLOW_CONN_{conn_id.upper()} environment variable."
    )


def _check_type(airflow_connection: Any, conn_id: str, purpose: str) -> None:
    conn_type = airflow_connection.conn_type or ""
    if conn_type.lower() not in POSTGRES_CONN_TYPES:
        raise MatviewConfigurationError(
            f"Cannot {purpose}: Airflow connection {conn_id!r} is of type {conn_type or '(none)'!r}, not a PostgreSQL "
            "connection. Point postgres_conn_id (conn_id: in the config) at a connection of type 'postgres' "
            "(a postgresql:// URI)."
        )


def _connect_failed(
    exc: psycopg.OperationalError, airflow_connection: Any, conn_id: str, purpose: str
) -> MatviewConfigurationError | MatviewRefreshError:
    """A refused connection: not retried when every try would fail the same way, else retried."""
    where = f"{airflow_connection.host or 'localhost'}:{airflow_connection.port or 5432}"
    cause = describe_connect_failure(exc, airflow_connection.password)
    permanent = None
    if not any(marker in cause for marker in _TRANSIENT_FAILURES):
        permanent = next((fix for marker, fix in _PERMANENT_FAILURES if marker in cause), None)
    if permanent is not None:
        return MatviewConfigurationError(
            f"Cannot connect to PostgreSQL at {where} to {purpose} (connection {conn_id!r}): {sentence(cause)} "
            f"{permanent[0].upper()}{permanent[1:]}: fix the Airflow connection {conn_id!r} (or the server), "
            "then clear the task. Not retried: every try would fail the same way."
        )
    return MatviewRefreshError(
        f"Cannot connect to PostgreSQL at {where} to {purpose} (connection {conn_id!r}): {sentence(cause)} "
        "Check that the server is up and reachable from the worker; Airflow will retry."
    )
