"""Open a psycopg connection from an Airflow connection id, with errors that say what to do.

:func:`connect` opens a synchronous one through the postgres provider's ``PostgresHook`` (on a worker);
:func:`aconnect` an asynchronous one with the same arguments and the same errors (in the triggerer).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import socket
from contextlib import suppress
from copy import deepcopy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from airflow.providers.postgres.hooks.postgres import PostgresHook
from psycopg import IsolationLevel
from psycopg.rows import tuple_row
from psycopg.types.json import register_default_adapters

from airflow_matview.database.pgerrors import describe_connect_failure, sentence
from airflow_matview.exceptions import MatviewRefreshError, MatviewSetupError
from airflow_matview.version_compat import HAS_ASYNC_CONNECTION_LOOKUP, AirflowNotFoundException

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
    ("invalid port number", "the connection's port is not valid (use 1 to 65535, e.g. 5432)"),
    ("invalid integer value", "an extra of the connection that takes a number has another value"),
)


# How long the triggerer's connections wait for the server to answer while connecting, and how they notice a peer
# that went silent (a lost host, a dropped route): TCP keepalives after 30 s without traffic, every 10 s, the peer
# dead after 3 missed (about a minute); data unacknowledged for 60 s drops the connection (tcp_user_timeout, where
# libpq and the system have it). The connection's extras override each of them.
CONNECT_TIMEOUT_SECONDS = 10
KEEPALIVES: dict[str, int] = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
TCP_USER_TIMEOUT_MS = 60_000


def connect(conn_id: str, purpose: str, *, in_task: bool = True) -> psycopg.Connection:
    """Connect through the postgres provider's :class:`PostgresHook`.

    :param conn_id: the Airflow connection id.
    :param purpose: what the connection is for, for error messages, e.g. ``refresh public.sales``.
    :param in_task: whether a task connects (its messages speak of retries and clearing the task), or a command.
    :raises MatviewSetupError: the connection is not defined, is not a PostgreSQL connection, or the server
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
        raise _connect_failed(exc, airflow_connection, conn_id, purpose, in_task) from None
    if not isinstance(conn, psycopg.Connection):
        conn.close()
        raise MatviewSetupError(
            f"Connection {conn_id!r} gave a {type(conn).__module__} connection; airflow-matview needs psycopg 3 "
            "(installed with apache-airflow-providers-postgres>=6 and SQLAlchemy 2)."
        )
    # Whatever the connection's extras or the role's defaults say: rows as tuples, and a fresh snapshot for each
    # statement, so that a refresh that waited for another one reads what that one committed.
    conn.row_factory = tuple_row
    conn.isolation_level = IsolationLevel.READ_COMMITTED
    return conn


async def aconnect(
    conn_id: str,
    purpose: str,
    *,
    autocommit: bool = False,
    application_name: str | None = None,
    connect_timeout: int = CONNECT_TIMEOUT_SECONDS,
) -> psycopg.AsyncConnection:
    """:func:`connect`, asynchronous: the arguments ``PostgresHook.get_conn`` would pass, the same errors; and,
    unless the connection's extras say otherwise, a bounded wait to connect and TCP keepalives (see
    :data:`KEEPALIVES`), so that a peer that stops answering is noticed.

    :param conn_id: the Airflow connection id.
    :param purpose: what the connection is for, for error messages, e.g. ``refresh public.sales``.
    :param autocommit: each statement its own transaction (a watcher that must never sit idle in a transaction).
    :param application_name: how the session shows in ``pg_stat_activity`` from the start.
    :param connect_timeout: seconds to wait for the server, unless the connection's extras say otherwise.
    """
    target = await aconnection_target(conn_id, purpose)
    return await target.aconnect(
        purpose, autocommit=autocommit, application_name=application_name, connect_timeout=connect_timeout
    )


@dataclass(frozen=True)
class ConnectionTarget:
    """Where an Airflow connection leads: what it holds, and the arguments ``PostgresHook.get_conn`` would pass.

    :param conn_id: the Airflow connection id.
    :param airflow_connection: the connection as Airflow looked it up.
    :param arguments: the libpq arguments (:func:`hook_arguments`).
    """

    conn_id: str
    airflow_connection: Any
    arguments: dict[str, Any] = field(repr=False)

    @property
    def digest(self) -> str:
        """A hash of the arguments (password included, never shown): equal while the connection is unchanged."""
        return hashlib.sha256(json.dumps(self.arguments, sort_keys=True, default=str).encode()).hexdigest()

    async def aconnect(
        self,
        purpose: str,
        *,
        autocommit: bool = False,
        application_name: str | None = None,
        connect_timeout: int = CONNECT_TIMEOUT_SECONDS,
    ) -> psycopg.AsyncConnection:
        """A new asynchronous connection, set up as :func:`connect` sets up its own; the same errors."""
        arguments: dict[str, Any] = {
            "application_name": application_name,
            "connect_timeout": connect_timeout,
            **KEEPALIVES,
            **({"tcp_user_timeout": TCP_USER_TIMEOUT_MS} if _libpq_knows("tcp_user_timeout") else {}),
        }
        arguments.update(self.arguments)
        try:
            conn = await psycopg.AsyncConnection.connect(
                **{name: value for name, value in arguments.items() if value is not None}, autocommit=autocommit
            )
        except psycopg.OperationalError as exc:
            raise _connect_failed(exc, self.airflow_connection, self.conn_id, purpose) from None
        register_default_adapters(conn)
        conn.row_factory = tuple_row
        # Also in autocommit mode: the transactions the refresh opens begin with it (BEGIN ISOLATION LEVEL ...).
        await conn.set_isolation_level(IsolationLevel.READ_COMMITTED)
        return conn


async def aconnection_target(conn_id: str, purpose: str) -> ConnectionTarget:
    """Look ``conn_id`` up from the event loop and check it, with :func:`connect`'s errors.

    :raises MatviewSetupError: it is not defined, or not a PostgreSQL connection Airflow can read.
    """
    try:
        airflow_connection = await aget_airflow_connection(conn_id)
    except AirflowNotFoundException:
        # Environment variables only: no call that would block the triggerer's event loop.
        raise _undefined(conn_id, purpose, local_only=True) from None
    _check_type(airflow_connection, conn_id, purpose)
    return ConnectionTarget(conn_id, airflow_connection, hook_arguments(airflow_connection))


def shut_down(conn: psycopg.AsyncConnection) -> None:
    """Shut the connection's socket down both ways, without closing it: whatever waits on it (a statement to a peer
    that stopped answering) gets end-of-file at once, instead of a cancel request or a goodbye sent to that peer."""
    # Already closed or broken: nothing waits on it.
    with suppress(Exception), socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
        sock.shutdown(socket.SHUT_RDWR)


@functools.cache
def _libpq_knows(option: str) -> bool:
    """Whether the libpq psycopg uses has the connection option ``option`` (``tcp_user_timeout``: libpq 12+)."""
    return any(default.keyword.decode() == option for default in psycopg.pq.Conninfo.get_defaults())


async def aget_airflow_connection(conn_id: str) -> AirflowConnection:
    """The Airflow connection ``conn_id``, looked up from the event loop.

    :raises AirflowNotFoundException: it is not defined.
    """
    from airflow.sdk import BaseHook

    if HAS_ASYNC_CONNECTION_LOOKUP:
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


def _undefined(conn_id: str, purpose: str, *, local_only: bool = False) -> MatviewSetupError:
    """Airflow found no connection ``conn_id``; one it cannot read is named as such (:func:`unreadable_connection`)."""
    if unreadable := unreadable_connection(conn_id, local_only=local_only):
        return MatviewSetupError(f"Cannot {purpose}: Airflow connection {conn_id!r} {unreadable}")
    return MatviewSetupError(
        f"Cannot {purpose}: Airflow connection {conn_id!r} is not defined. Create it in the UI "
        f"(Admin > Connections), with `airflow connections add {conn_id} --conn-uri "
        f"postgresql://USER@HOST:5432/DB`, or as an AIRFLOW_CONN_{conn_id.upper()} environment variable."
    )


def _check_type(airflow_connection: Any, conn_id: str, purpose: str) -> None:
    """A PostgreSQL connection, whose extras Airflow can read (it would silently drop extras that are not JSON)."""
    conn_type = airflow_connection.conn_type or ""
    if not conn_type:
        raise MatviewSetupError(
            f"Cannot {purpose}: Airflow connection {conn_id!r} has no connection type (is it a URI such as "
            f"{_URI_FORM}?). Give it the type 'postgres'."
        )
    if conn_type.lower() not in POSTGRES_CONN_TYPES:
        raise MatviewSetupError(
            f"Cannot {purpose}: Airflow connection {conn_id!r} is of type {conn_type!r}, not a PostgreSQL "
            "connection. Point postgres_conn_id (conn_id: in the config) at a connection of type 'postgres' "
            "(a postgresql:// URI)."
        )
    if problem := _extras_problem(airflow_connection.extra):
        raise MatviewSetupError(
            f"Cannot {purpose}: the extras of Airflow connection {conn_id!r} {problem}, and Airflow would ignore "
            'them all (sslmode, options, ...). Write them as a JSON object, e.g. {"sslmode": "require"}.'
        )


def _connect_failed(
    exc: psycopg.OperationalError, airflow_connection: Any, conn_id: str, purpose: str, in_task: bool = True
) -> MatviewSetupError | MatviewRefreshError:
    """A refused connection: not retried when every try would fail the same way, else retried."""
    port = airflow_connection.port
    where = f"{airflow_connection.host or 'localhost'}:{5432 if port is None else port}"
    cause = describe_connect_failure(exc, airflow_connection.password)
    permanent = None
    if not any(marker in cause for marker in _TRANSIENT_FAILURES):
        permanent = next((fix for marker, fix in _PERMANENT_FAILURES if marker in cause), None)
    if permanent is not None:
        return MatviewSetupError(
            f"Cannot connect to PostgreSQL at {where} to {purpose} (connection {conn_id!r}): {sentence(cause)} "
            f"{permanent[0].upper()}{permanent[1:]}: fix the Airflow connection {conn_id!r} (or the server)"
            + (", then clear the task. Not retried: every try would fail the same way." if in_task else ".")
        )
    return MatviewRefreshError(
        f"Cannot connect to PostgreSQL at {where} to {purpose} (connection {conn_id!r}): {sentence(cause)} "
        + (
            "Check that the server is up and reachable from the worker; Airflow will retry."
            if in_task
            else "Check that the server is up and reachable from here."
        )
    )


# Airflow's reasons for refusing a connection it found, in words that repeat no part of it (a URI's "port" may be
# the tail of a password holding an unencoded / or @).
_PORT_NOT_A_NUMBER = re.compile(r"port could not be cast to integer|expected integer value for `port`", re.IGNORECASE)
_PORT_OUT_OF_RANGE = re.compile(r"port out of range", re.IGNORECASE)
_UNKNOWN_FIELD = re.compile(r"unexpected keyword argument '(\w{1,40})'")
_QUOTED_TEXT = re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`")
_URI_FORM = "postgresql://USER:PASSWORD@HOST:5432/DB"
_JSON_FORM = (
    '{"conn_type": "postgres", "host": "HOST", "port": 5432, "login": "USER", "password": "...", "schema": "DB"}'
)


def unreadable_connection(conn_id: str, *, local_only: bool = False) -> str | None:
    """Why a connection that a secrets backend holds cannot be read, as the end of a sentence naming it, with the
    fix; ``None`` when no backend holds it.

    Airflow's lookup skips a backend that fails to read a connection (a URI whose port is not a number, JSON that
    does not parse) and then says the connection "isn't defined"; this asks each backend again to tell the two apart.
    The message never repeats the connection's value, which may hold a password.

    :param conn_id: the Airflow connection id that Airflow reported as not defined.
    :param local_only: ask only the environment variables (in the triggerer's event loop, where asking a backend
        that calls the API server would block).
    """
    variable = f"AIRFLOW_CONN_{conn_id.upper()}"
    if variable in os.environ and not os.environ[variable].strip():  # Airflow skips it as if it were not set
        return (
            f"is the environment variable {variable}, which is empty (a variable set from an unset one?). "
            f"Give it a URI such as {_URI_FORM}."
        )
    from airflow.sdk.execution_time.supervisor import ensure_secrets_backend_loaded

    unreadable_database = None
    for backend in ensure_secrets_backend_loaded():
        if local_only and type(backend).__name__ != "EnvironmentVariablesBackend":
            continue
        try:
            backend.get_connection(conn_id=conn_id)
        except AirflowNotFoundException:
            continue
        except Exception as error:
            kind = type(backend).__name__
            if kind == "MetastoreBackend":  # the database is unreadable, not the connection
                unreadable_database = _QUOTED_TEXT.sub("(hidden)", " ".join(str(getattr(error, "orig", error)).split()))
                continue
            if kind == "EnvironmentVariablesBackend":
                return (
                    f"exists (environment variable {variable}) but cannot be read: {_reason(error)}. "
                    f"Fix {variable}: a URI such as {_URI_FORM} (percent-encode / : @ in the password, "
                    f"e.g. / as %2F) or JSON such as {_JSON_FORM}."
                )
            return (
                f"exists (secrets backend {kind}) but cannot be read: {_reason(error)}. "
                "Fix the connection where that backend keeps it."
            )
    if unreadable_database:
        return (
            "is not defined in the environment or a secrets backend, and Airflow's metadata database, which holds "
            f"the connections made with `airflow connections add` or the UI, cannot be read ({unreadable_database}). "
            "Point AIRFLOW_HOME or AIRFLOW__DATABASE__SQL_ALCHEMY_CONN at the Airflow installation's database, or "
            f"define the connection as the environment variable AIRFLOW_CONN_{conn_id.upper()}."
        )
    return None


def _extras_problem(extra: str | None) -> str | None:
    """Why a connection's extras are not a JSON object, which Airflow would read as no extras at all."""
    if not extra:
        return None
    try:
        extras = json.loads(extra)
    except json.JSONDecodeError as error:
        return f"are not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
    return None if isinstance(extras, dict) else f"are a JSON {type(extras).__name__}, not an object"


def _reason(error: Exception) -> str:
    text = " ".join(str(error).split())
    if _PORT_NOT_A_NUMBER.search(text):
        return "its port is not a number (or its password holds an unencoded / or @, which cuts the URI short)"
    if _PORT_OUT_OF_RANGE.search(text):
        return "its port is out of range (use 1 to 65535, e.g. 5432)"
    if isinstance(error, json.JSONDecodeError):
        return f"it is not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
    if isinstance(error, TypeError) and (field := _UNKNOWN_FIELD.search(text)):
        return (
            f"its JSON has the key {field.group(1)!r}, which Airflow connections do not have (use conn_type, host, "
            "port, login, password, schema, extra, description)"
        )
    return f"{type(error).__name__}: {_QUOTED_TEXT.sub('(hidden)', text)}"
