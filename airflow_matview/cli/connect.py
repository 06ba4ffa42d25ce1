"""Open the command's database connection: from a libpq DSN, or from an Airflow connection through PostgresHook;
every message without the password."""

from __future__ import annotations

import os
import re

import psycopg
from pydantic import ValidationError

from airflow_matview.cli.output import EXIT_CONNECT, EXIT_USAGE
from airflow_matview.config import ViewSettings
from airflow_matview.exceptions import CliError, MatviewRefreshError, MatviewSetupError
from airflow_matview.text import one_line

# How long to wait for a server to answer, unless the DSN, the connection's extras or PGCONNECT_TIMEOUT say otherwise.
CONNECT_TIMEOUT_SECONDS = 10
_QUOTED = re.compile(r'"([^"]*)"')


def open_connection(conn_id: str | None, dsn: str | None) -> psycopg.Connection:
    """A psycopg connection from a DSN, or from an Airflow connection through PostgresHook.

    :raises CliError: the connection cannot be opened; the message holds no password.
    """
    # A server that accepts the connection and never answers fails in seconds, not minutes; libpq reads this as the
    # default of connect_timeout, also for Airflow connections whose extras do not set one.
    os.environ.setdefault("PGCONNECT_TIMEOUT", str(CONNECT_TIMEOUT_SECONDS))
    if dsn:
        dsn_options(dsn)
        try:
            return psycopg.connect(dsn, autocommit=True)
        except psycopg.Error as error:
            raise CliError(f"cannot connect with --dsn: {one_line(error)}", EXIT_CONNECT) from None
    from airflow_matview.connections import connect

    # Look where `airflow connections get` looks: environment variables, secrets backends and the metadata database
    # (outside a server process Airflow's SDK skips the database, and would call its connections "not defined").
    os.environ["_AIRFLOW_PROCESS_CONTEXT"] = "server"
    try:
        conn = connect(conn_id or "postgres_default", "inspect the database", in_task=False)
    except (MatviewSetupError, MatviewRefreshError) as error:
        raise CliError(str(error), EXIT_CONNECT) from None
    except Exception as error:  # the hook's own errors: an unparsable connection URI, a wrong conn_type, ...
        raise CliError(
            f"cannot connect through Airflow connection {conn_id or 'postgres_default'!r}: "
            f"{type(error).__name__}: {one_line(error)}",
            EXIT_CONNECT,
        ) from None
    conn.autocommit = True
    return conn


def check_conn_id(conn_id: str) -> None:
    """``--conn-id`` follows the config's rule for ``conn_id:``; a URI there is refused without repeating it."""
    try:
        ViewSettings(conn_id=conn_id)
    except ValidationError as error:
        reason = str(error.errors()[0]["msg"]).removeprefix("Value error, ")
        raise CliError(f"--conn-id: {reason}; to connect with a connection string, use --dsn", EXIT_USAGE) from None


def dsn_options(dsn: str) -> dict[str, str | int | None]:
    try:
        return psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error as error:
        raise CliError(
            f"--dsn is not a valid libpq connection string or URI ({_hide_quoted(one_line(error))}); "
            "write e.g. 'host=HOST port=5432 dbname=DB user=USER' or postgresql://USER@HOST:5432/DB",
            EXIT_USAGE,
        ) from None


def _hide_quoted(message: str) -> str:
    """libpq's parse errors quote pieces of the DSN, which may be a password: keep only option names."""
    keywords = {option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults()}
    return _QUOTED.sub(lambda m: m.group(0) if m.group(1) in keywords or m.group(1) == "=" else '"(hidden)"', message)
