"""``airflow-matview``: validate a config file, check it against the database, or discover views into one."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from graphlib import TopologicalSorter
from typing import TYPE_CHECKING

import yaml

from airflow_matview import catalog
from airflow_matview.config import MatviewConfigError, ViewConfig, load_config
from airflow_matview.exceptions import MatviewConfigurationError, MatviewRefreshError
from airflow_matview.refresh import choose_mode, resolve_matview

if TYPE_CHECKING:
    from collections.abc import Sequence

    import psycopg


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="airflow-matview", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="check a config file without a database; list its DAGs")
    validate.add_argument("config")

    check = commands.add_parser("check", help="check a config file's views against the live database")
    check.add_argument("config")
    _add_connection_options(check, required=False)

    discover = commands.add_parser("discover", help="print a config for the database's materialized views")
    _add_connection_options(discover, required=True)
    discover.add_argument("--schema", action="append", help="only this schema (repeat for more)")

    args = parser.parse_args(argv)
    try:
        if args.command == "validate":
            return run_validate(args.config)
        if args.command == "check":
            return run_check(args.config, args.conn_id, args.dsn)
        return run_discover(args.conn_id, args.dsn, args.schema)
    except (MatviewConfigError, MatviewConfigurationError, MatviewRefreshError) as error:
        print(error, file=sys.stderr)
        return 1


def _add_connection_options(parser: argparse.ArgumentParser, required: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--conn-id", help="an Airflow connection id (default: each view's conn_id)")
    group.add_argument("--dsn", help="a libpq connection string or URI, instead of an Airflow connection")


def run_validate(path: str) -> int:
    views = load_config(path).views
    print(f"{path}: OK, {len(views)} DAG(s)")
    _print_table(
        ["DAG ID", "VIEW", "SCHEDULE", "AFTER", "CONNECTION"],
        [
            [v.resolved_dag_id, str(v.view), v.schedule or "(manual)", ", ".join(v.after) or "-", v.conn_id]
            for v in views
        ],
    )
    return 0


def run_check(path: str, conn_id: str | None, dsn: str | None) -> int:
    views = load_config(path).views
    problems = 0
    connections: dict[str, psycopg.Connection] = {}
    try:
        for view in views:
            key = dsn or conn_id or view.conn_id
            if key not in connections:
                connections[key] = open_connection(conn_id or (None if dsn else view.conn_id), dsn)
            ok, lines = check_view(connections[key], view, f"connection {key!r}" if not dsn else "--dsn")
            problems += not ok
            print(f"{'OK     ' if ok else 'PROBLEM'} {view.view}")
            for line in lines:
                print(f"        {line}")
    finally:
        for conn in connections.values():
            conn.close()
    print(f"{len(views) - problems} of {len(views)} view(s) can be refreshed as configured.")
    return 1 if problems else 0


def check_view(conn: psycopg.Connection, view: ViewConfig, label: str) -> tuple[bool, list[str]]:
    """Whether ``view`` can be refreshed as configured, and what to say about it."""
    try:
        relation = resolve_matview(conn, view.view, label)
        indexes = catalog.usable_unique_indexes(conn, relation.oid)
        mode, reason = choose_mode(relation, indexes, view.concurrently, True, label)
    except MatviewConfigurationError as error:
        return False, [str(error)]
    lines = [f"refresh: {mode} ({reason})"]
    permission = catalog.refresh_permission(conn, relation.oid)
    if permission.by_maintain:
        lines.append(f"permission: role {permission.role} holds MAINTAIN on the view")
    elif permission.allowed:
        lines.append(f"permission: role {permission.role} owns the view (owner {permission.owner})")
    else:
        lines.append(
            f"permission: role {permission.role} may not refresh it: only the owner ({permission.owner}) may, "
            "or on PostgreSQL 17+ a role granted MAINTAIN "
            f"(GRANT MAINTAIN ON {relation.name} TO {permission.role})"
        )
    return permission.allowed, lines


def run_discover(conn_id: str | None, dsn: str | None, schemas: list[str] | None) -> int:
    conn = open_connection(conn_id, dsn)
    try:
        matviews = catalog.materialized_views(conn, schemas)
        reads = catalog.relations_read(conn, [m.oid for m in matviews])
        database = conn.info.dbname
    finally:
        conn.close()
    names = {m.oid: str(m.name) for m in matviews}
    upstream = {m.oid: [r.oid for r in reads[m.oid] if r.oid in names] for m in matviews}
    views: list[dict[str, object]] = []
    for oid in TopologicalSorter(upstream).static_order():
        entry: dict[str, object] = {"name": names[oid]}
        if upstream[oid]:
            entry["after"] = sorted(names[dep] for dep in upstream[oid])
        views.append(entry)
    config = {"defaults": {"conn_id": conn_id or "postgres_default", "schedule": "@daily"}, "views": views}
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# Generated by `airflow-matview discover` from database {database} on {stamp}.")
    print("# Views are listed in dependency order; after: names the views each one is built on.")
    print(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), end="")
    return 0


def open_connection(conn_id: str | None, dsn: str | None) -> psycopg.Connection:
    """A psycopg connection from a DSN, or from an Airflow connection through PostgresHook."""
    import psycopg

    if dsn:
        return psycopg.connect(dsn, autocommit=True)
    from airflow_matview.connection import connect

    conn = connect(conn_id or "postgres_default", "inspect the database")
    conn.autocommit = True
    return conn


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for width, cell in zip(widths, row, strict=False)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
