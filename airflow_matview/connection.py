"""Open a psycopg connection from an Airflow connection id, with errors that say what to do."""

from __future__ import annotations

import psycopg
from airflow.providers.postgres.hooks.postgres import PostgresHook
from psycopg import IsolationLevel
from psycopg.rows import tuple_row

from airflow_matview.compat import AirflowNotFoundException
from airflow_matview.exceptions import MatviewConfigurationError, MatviewRefreshError


def connect(conn_id: str, purpose: str) -> psycopg.Connection:
    """Connect through the postgres provider's :class:`PostgresHook`.

    :param conn_id: the Airflow connection id.
    :param purpose: what the connection is for, for error messages, e.g. ``refresh public.sales``.
    :raises MatviewConfigurationError: the connection is not defined, or its driver is not psycopg 3.
    :raises MatviewRefreshError: the server cannot be reached (a retry may succeed).
    """
    try:
        conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
    except AirflowNotFoundException:
        raise MatviewConfigurationError(
            f"Cannot {purpose}: Airflow connection {conn_id!r} is not defined. Create it in the UI "
            f"(Admin > Connections), with `airflow connections add {conn_id} --conn-uri "
            f"postgresql://USER@HOST:5432/DB`, or as an AIRFLOW_CONN_{conn_id.upper()} environment variable."
        ) from None
    except psycopg.OperationalError as exc:
        raise MatviewRefreshError(
            f"Cannot connect to PostgreSQL to {purpose} (connection {conn_id!r}): "
            f"{str(exc).strip().splitlines()[-1]}. Check that the server is up and the connection's host, "
            "port and credentials; Airflow will retry."
        ) from None
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
