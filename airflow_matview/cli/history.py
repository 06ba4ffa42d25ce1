"""``airflow-matview history init``: create the refresh history tables a config file names (``history:``), with the
view beside each, and print the GRANTs its refreshing and reporting roles need."""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from airflow_matview.cli.connect import dsn_options, open_connection
from airflow_matview.cli.output import EXIT_OK, EXIT_PROBLEMS
from airflow_matview.config import load_config
from airflow_matview.database import history
from airflow_matview.database.identifiers import parse_qualified_name
from airflow_matview.exceptions import CliError
from airflow_matview.text import one_line

if TYPE_CHECKING:
    from airflow_matview.database.identifiers import QualifiedName


def run_history_init(
    path: str, conn_id: str | None, dsn: str | None, refresh_role: str | None, reporting_role: str
) -> int:
    """Create each history table of the config (``IF NOT EXISTS``) on its view's connection; print the GRANTs.

    :param refresh_role: the role the refreshes connect as; by default the role this command connects as.
    :param reporting_role: the role that reads the history (a BI tool, a dashboard).
    """
    if dsn:
        dsn_options(dsn)
    targets: dict[str, set[str]] = {}
    for view in load_config(path).views:
        if view.history is not None:
            targets.setdefault("--dsn" if dsn else conn_id or view.conn_id, set()).add(view.history)
    if not targets:
        print("No view of this config records history: set history: <schema>.<table> (in defaults: or a view).")
        return EXIT_PROBLEMS
    failed = 0
    for key, tables in targets.items():
        label = "--dsn" if dsn else f"connection {key!r}"
        try:
            conn = open_connection(None if dsn else key, dsn)
        except CliError as error:
            print(f"PROBLEM {label}: {error}")
            failed += len(tables)
            continue
        with conn:
            for table in sorted(tables):
                failed += not _init_table(conn, parse_qualified_name(table), label, refresh_role, reporting_role)
    return EXIT_PROBLEMS if failed else EXIT_OK


def _init_table(
    conn: psycopg.Connection, table: QualifiedName, label: str, refresh_role: str | None, reporting_role: str
) -> bool:
    latest = history.latest_name(table)
    try:
        with conn.transaction():
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(table.schema or "public")))
            for statement in history.create_statements(table):
                conn.execute(statement)
        row = conn.execute("SELECT current_user").fetchone()
    except psycopg.Error as error:
        print(f"PROBLEM {table} ({label}): cannot create it: {one_line(error)}")
        return False
    role = refresh_role or (str(row[0]) if row else "<refresh role>")
    print(f"OK      {table} and {latest} ({label})")
    print(f"        -- the refreshes' role ({role}) writes and prunes rows; {reporting_role} reads them:")
    for grant in history.grant_statements(table, role, reporting_role):
        print(f"        {grant.as_string(conn)};")
    return True
