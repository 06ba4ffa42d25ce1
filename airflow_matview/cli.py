"""``airflow-matview``: validate a config file, check it against the database, or discover views into one.

Exit codes: 0 OK; 1 problems found (an invalid config, a view that cannot be refreshed, nothing to discover);
2 wrong arguments; 3 cannot connect to the database; 130 interrupted; 141 output pipe closed (e.g. ``| head``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import re
import sys
from datetime import datetime, timezone
from graphlib import TopologicalSorter
from typing import TYPE_CHECKING, Any, NoReturn

import psycopg
import yaml
from pydantic import ValidationError

from airflow_matview import catalog, production, search_path
from airflow_matview.config import MatviewConfigError, ViewConfig, ViewSettings, default_dag_id, load_config
from airflow_matview.exceptions import MatviewConfigurationError, MatviewRefreshError
from airflow_matview.identifiers import (
    InvalidIdentifierError,
    QualifiedName,
    control_character,
    parse_qualified_name,
    printable,
    quote_if_needed,
)
from airflow_matview.refresh import choose_mode, resolve_matview

if TYPE_CHECKING:
    from collections.abc import Sequence

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_CONNECT = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE, EXIT_INTERNAL = 130, 141, 70
# How long to wait for a server to answer, unless the DSN, the connection's extras or PGCONNECT_TIMEOUT say otherwise.
CONNECT_TIMEOUT_SECONDS = 10
# The widest description `validate` shows; a longer one ends with an ellipsis.
DESCRIPTION_WIDTH = 40
_QUOTED = re.compile(r'"([^"]*)"')
# A password in an argument libpq cannot parse: postgresql://user:PASSWORD@host, password=PASSWORD
_URI_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^:/@]*:([^@/]*)@")
_KEYWORD_PASSWORD = re.compile(r"""\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)""")


class CliError(Exception):
    """A failure shown as one line on stderr, with its exit code.

    :param message: what went wrong and what to do.
    :param code: the exit code.
    """

    def __init__(self, message: str, code: int = EXIT_PROBLEMS) -> None:
        super().__init__(" ".join(message.split()))
        self.code = code


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):  # a view name in an ASCII locale is escaped rather than a crash
            stream.reconfigure(errors="backslashreplace")
    _airflow_logs_to_stderr()
    arguments = sys.argv[1:] if argv is None else list(argv)
    secrets = _secrets_of(arguments)
    args = _parser(secrets).parse_args(arguments)
    try:
        for option in ("conn_id", "dsn"):
            if (
                getattr(args, option, None) == ""
            ):  # `--dsn "$DSN"` with DSN unset must not fall back to another database
                raise CliError(
                    f"--{option.replace('_', '-')} is empty (an unset shell variable?); give a value", EXIT_USAGE
                )
        if getattr(args, "config", None) == "":  # `validate "$CONFIG"` with CONFIG unset: not the current directory
            raise CliError("the config file argument is empty (an unset shell variable?); give a path", EXIT_USAGE)
        if getattr(args, "conn_id", None):
            _check_conn_id(args.conn_id)
        if args.command == "validate":
            return run_validate(args.config)
        if args.command == "check":
            return run_check(args.config, args.conn_id, args.dsn)
        return run_discover(args.conn_id, args.dsn, args.schema)
    except MatviewConfigError as error:
        _fail(str(error), secrets)
        return EXIT_PROBLEMS
    except CliError as error:
        _fail(f"airflow-matview {args.command}: {error}", secrets)
        return error.code
    except KeyboardInterrupt:
        _fail(f"airflow-matview {args.command}: interrupted", secrets)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly; point stdout at /dev/null so the final flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as error:  # the output cannot be written: a full disk, a device that refuses it
        _fail(f"airflow-matview {args.command}: cannot write the output: {error.strerror or error}", secrets)
        return EXIT_PROBLEMS
    except Exception as error:  # a bug of ours: still one line, never a traceback with a DSN in its locals
        _fail(f"airflow-matview {args.command}: internal error: {type(error).__name__}: {error}", secrets)
        return EXIT_INTERNAL


def _airflow_logs_to_stderr() -> None:
    """Airflow's log lines, errors only, one line each, on stderr: stdout holds only the command's output.

    Airflow's logging writes to stdout from INFO up, with tracebacks; the console script also sets Airflow's log
    level before Airflow is imported (see :mod:`airflow_matview.cli_entry`), which quiets the loggers that bypass
    the standard library.
    """
    logging.getLogger().setLevel(logging.ERROR)
    logging.getLogger("airflow").setLevel(logging.ERROR)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.__stdout__):
            handler.setStream(sys.stderr)
        handler.addFilter(_without_traceback)


def _without_traceback(record: logging.LogRecord) -> bool:
    record.exc_info, record.exc_text, record.stack_info = None, None, None
    return True


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, whose usage errors (which repeat the arguments they reject) never show a password.

    :param secrets: what must not be printed.
    """

    def __init__(self, *args: Any, secrets: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.secrets = list(secrets)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        _fail(f"{self.prog}: error: {message}", self.secrets)
        self.exit(EXIT_USAGE)


def _parser(secrets: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        secrets=secrets,
        prog="airflow-matview",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="exit codes: 0 OK, 1 problems found, 2 wrong arguments, 3 cannot connect, 130 interrupted",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="check a config file without a database; list its DAGs")
    validate.add_argument("config", help="the YAML config file")

    check = commands.add_parser("check", help="check a config file's views against the live database")
    check.add_argument("config", help="the YAML config file")
    group = check.add_mutually_exclusive_group()
    group.add_argument("--conn-id", help="connect through this Airflow connection (default: each view's conn_id)")
    group.add_argument("--dsn", help="connect with this libpq connection string or URI instead")

    discover = commands.add_parser("discover", help="print a config for the database's materialized views")
    group = discover.add_mutually_exclusive_group(required=True)
    group.add_argument("--conn-id", help="connect through this Airflow connection; also the config's conn_id")
    group.add_argument(
        "--dsn", help="connect with this libpq connection string or URI instead (the config gets postgres_default)"
    )
    discover.add_argument(
        "--schema",
        action="append",
        help="only this schema (repeat for more); folded to lower case unless double-quoted, as in SQL "
        "(default: every schema but pg_catalog and information_schema)",
    )
    for command in commands.choices.values():
        command.secrets = list(secrets)
    return parser


def _fail(message: str, secrets: list[str]) -> None:
    for secret in secrets:
        message = message.replace(secret, "***")
    with contextlib.suppress(BrokenPipeError):
        print(message, file=sys.stderr)


def _secrets_of(arguments: Sequence[str]) -> list[str]:
    """What must never be printed: each argument that holds a password (a DSN, whatever option it was given to,
    even a misspelt one), and the password itself, as written and as libpq reads it."""
    secrets: list[str] = []
    for argument in arguments:
        value = argument.split("=", 1)[1] if argument.startswith("-") and "=" in argument else argument
        passwords = [m.group(1) for m in (_URI_PASSWORD.match(value), _KEYWORD_PASSWORD.search(value)) if m]
        with contextlib.suppress(psycopg.Error):
            passwords.append(str(psycopg.conninfo.conninfo_to_dict(value).get("password") or ""))
        if passwords := [password for password in passwords if password]:
            secrets += [argument, value, *passwords, *(password.strip("'") for password in passwords)]
    return sorted({secret for secret in secrets if secret}, key=len, reverse=True)


def run_validate(path: str) -> int:
    views = load_config(path).views
    print(f"{path}: OK, {len(views)} DAG(s)")
    header = ["DAG ID", "VIEW", "SCHEDULE", "CONNECTION", "SETTINGS"]
    rows = [[v.resolved_dag_id, str(v.view), _schedule_text(v), v.conn_id, production.summary(v)] for v in views]
    if any(view.description for view in views):  # the last column, only when some view has one
        header.append("DESCRIPTION")
        for row, view in zip(rows, views, strict=True):
            row.append(_cell(view.description or "-", DESCRIPTION_WIDTH))
    _print_table(header, rows)
    return EXIT_OK


def _cell(text: str, width: int) -> str:
    """``text`` on one line (its line breaks as spaces), cut to ``width`` characters with an ellipsis."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1].rstrip() + "\u2026"


def _schedule_text(view: ViewConfig) -> str:
    parts = [
        "after " + ", ".join(str(name) for name in view.upstream) if view.after else None,
        "on change" if view.on_change else None,
        view.schedule,
    ]
    return " + ".join(part for part in parts if part) or "(manual)"


def run_check(path: str, conn_id: str | None, dsn: str | None) -> int:
    views = load_config(path).views
    if dsn:
        _dsn_options(dsn)  # a malformed --dsn is a wrong argument, not a problem of each view
    problems = 0
    pool_problems = _pool_problems(views)
    connections: dict[str, psycopg.Connection | CliError] = {}
    try:
        for view in views:
            key = "--dsn" if dsn else conn_id or view.conn_id
            label = "--dsn" if dsn else f"connection {key!r}"
            if key not in connections:
                try:
                    connections[key] = open_connection(None if dsn else key, dsn)
                except CliError as error:
                    connections[key] = error
            conn = connections[key]
            if isinstance(conn, CliError):
                ok, lines = False, [str(conn)]
            else:
                try:
                    ok, lines = check_view(conn, view, label)
                except (psycopg.Error, MatviewRefreshError, MatviewConfigurationError) as error:
                    ok, lines = False, [f"cannot check it through {label}: {_one_line(error)}"]
                    if conn.closed or conn.broken:
                        connections[key] = CliError(f"cannot check it: {label} was lost: {_one_line(error)}")
            if view.resolved_dag_id in pool_problems:
                fatal, line = pool_problems[view.resolved_dag_id]
                ok, lines = ok and not fatal, [*lines, line]
            problems += not ok
            print(f"{'OK     ' if ok else 'PROBLEM'} {view.view}")
            for line in lines:
                print(f"        {line}")
    finally:
        for conn in connections.values():
            if isinstance(conn, psycopg.Connection):
                conn.close()
    print(f"{len(views) - problems} of {len(views)} view(s) can be refreshed as configured.")
    return EXIT_PROBLEMS if problems else EXIT_OK


def _pool_problems(views: list[ViewConfig]) -> dict[str, tuple[bool, str]]:
    """Per DAG id, whether its pool stops it and what to say: a missing pool is a problem; pools that cannot be
    read (no Airflow metadata database here) are a note."""
    if not any(view.pool for view in views):
        return {}
    try:
        existing = production.airflow_pools()
    except RuntimeError as error:
        return {view.resolved_dag_id: (False, f"pool: not checked: {error}") for view in views if view.pool}
    return {dag_id: (True, line) for dag_id, line in production.missing_pools(views, existing).items()}


def check_view(conn: psycopg.Connection, view: ViewConfig, label: str) -> tuple[bool, list[str]]:
    """Whether ``view`` can be refreshed as configured, and what to say about it.

    Checks what a run would meet: the view, the mode (with the owner's TEMPORARY privilege, which CONCURRENTLY
    needs), the connecting role's right to refresh it, and the privileges PostgreSQL checks as the view's owner
    when it runs the view's query (SELECT on what it reads, EXECUTE on the functions it calls).
    """
    try:
        relation = resolve_matview(conn, view.view, label)
        indexes = catalog.usable_unique_indexes(conn, relation.oid)
        missing = catalog.missing_privileges(conn, relation.oid)
        temp_grant = next((m.grant for m in missing if m.privilege == "TEMPORARY"), None)
        mode, reason = choose_mode(relation, indexes, view.concurrently, True, label, temp_grant)
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
    blocking = [m for m in missing if mode == "concurrently" or not m.concurrently_only]
    lines.extend(f"privilege: {m.describe()}" for m in blocking)
    path_ok, path_lines = search_path.describe(
        search_path.restricted_search_path_problems(conn, relation.oid), conn.info.server_version // 10000
    )
    return permission.allowed and not blocking and path_ok, lines + path_lines


def run_discover(conn_id: str | None, dsn: str | None, schema_args: list[str] | None) -> int:
    schemas = [_schema_name(text) for text in schema_args] if schema_args else None
    conn = open_connection(conn_id, dsn)
    try:
        if schemas:
            existing = {
                row[0] for row in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", [schemas])
            }
            if missing := [name for name in schemas if name not in existing]:
                raise CliError(
                    f"schema {', '.join(map(_shown, missing))} does not exist in database {conn.info.dbname}; "
                    "--schema folds to lower case unless double-quoted, as in SQL (--schema '\"Sales\"')"
                )
        matviews = catalog.materialized_views(conn, schemas)
        reads = catalog.relations_read(conn, [m.oid for m in matviews])
        database = conn.info.dbname
    except psycopg.Error as error:
        raise CliError(f"cannot read the catalog: {_one_line(error)}") from None
    finally:
        conn.close()
    matviews = _leave_out_unprintable_names(matviews, reads)
    if not matviews:
        where = f"schema {', '.join(map(_shown, schemas))}" if schemas else "any schema"
        raise CliError(f"no materialized view in {where} of database {database}; nothing to write")
    names = {m.oid: m.name for m in matviews}
    upstream = {m.oid: [r.oid for r in reads[m.oid] if r.oid in names] for m in matviews}
    dag_ids = _distinct_dag_ids(list(names.values()))
    views: list[dict[str, object]] = []
    for oid in TopologicalSorter(upstream).static_order():
        entry: dict[str, object] = {"name": str(names[oid])}
        if upstream[oid]:
            entry["after"] = sorted(str(names[dep]) for dep in upstream[oid])
        if dag_id := dag_ids.get(str(names[oid])):
            entry["dag_id"] = dag_id
        views.append(entry)
    config = {"defaults": {"conn_id": conn_id or "postgres_default", "schedule": "@daily"}, "views": views}
    try:
        load_config(config)  # what we print, its own `validate` accepts
    except MatviewConfigError as error:
        raise CliError(f"the generated config would be invalid, please report this: {error}") from None
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"# Generated by `airflow-matview discover` from database {database} on {stamp}.\n"
        "# Views are listed in dependency order; after: names the views each one is built on.\n"
        + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    )
    if hasattr(sys.stdout, "buffer"):  # the file is UTF-8 whatever the locale, as the config loader reads it
        sys.stdout.buffer.write(text.encode())
    else:
        sys.stdout.write(text)
    sys.stdout.flush()
    return EXIT_OK


def _leave_out_unprintable_names(
    matviews: list[catalog.Relation], reads: dict[int, list[catalog.Relation]]
) -> list[catalog.Relation]:
    """The views whose names the config accepts; one line on stderr for each that it refuses (a control
    character in a quoted name), naming the views whose ``after:`` leaves it out."""
    kept = []
    for matview in matviews:
        char = control_character(str(matview.name))
        if char is None:
            kept.append(matview)
            continue
        shown = printable(str(matview.name))
        users = sorted(printable(str(m.name)) for m in matviews if any(r.oid == matview.oid for r in reads[m.oid]))
        _fail(
            f"airflow-matview discover: left out {shown}: its name holds the control character {char!r}, which "
            f"the config refuses; rename it (ALTER MATERIALIZED VIEW {shown} RENAME TO ...) and run discover again"
            + (f" (the after: of {', '.join(users)} leaves it out)" if users else ""),
            [],
        )
    return kept


def _schema_name(text: str) -> str:
    try:
        parsed = parse_qualified_name(text)
    except InvalidIdentifierError as error:
        raise CliError(f"--schema: {str(error).replace('view name', 'schema name')}", EXIT_USAGE) from None
    if parsed.schema is not None:
        raise CliError(f"--schema {text!r} is a dotted name; give one schema per --schema", EXIT_USAGE)
    return parsed.name


def _shown(schema: str) -> str:
    return quote_if_needed(schema)


def _distinct_dag_ids(names: list[QualifiedName]) -> dict[str, str]:
    """Explicit DAG ids for the views whose default DAG ids collide (names differing only in characters that
    DAG ids cannot hold): the default id plus a short digest of the exact name, stable from run to run."""
    by_default: dict[str, list[QualifiedName]] = {}
    for name in names:
        by_default.setdefault(default_dag_id(name), []).append(name)
    explicit: dict[str, str] = {}
    for default, group in by_default.items():
        if len(group) > 1:
            for name in group:
                digest = hashlib.sha256(str(name).encode()).hexdigest()[:8]
                explicit[str(name)] = f"{default[: 250 - 9]}.{digest}"
    return explicit


def open_connection(conn_id: str | None, dsn: str | None) -> psycopg.Connection:
    """A psycopg connection from a DSN, or from an Airflow connection through PostgresHook.

    :raises CliError: the connection cannot be opened; the message holds no password.
    """
    # A server that accepts the connection and never answers fails in seconds, not minutes; libpq reads this as the
    # default of connect_timeout, also for Airflow connections whose extras do not set one.
    os.environ.setdefault("PGCONNECT_TIMEOUT", str(CONNECT_TIMEOUT_SECONDS))
    if dsn:
        _dsn_options(dsn)
        try:
            return psycopg.connect(dsn, autocommit=True)
        except psycopg.Error as error:
            raise CliError(f"cannot connect with --dsn: {_one_line(error)}", EXIT_CONNECT) from None
    from airflow_matview.connection import connect

    # Look where `airflow connections get` looks: environment variables, secrets backends and the metadata database
    # (outside a server process Airflow's SDK skips the database, and would call its connections "not defined").
    os.environ["_AIRFLOW_PROCESS_CONTEXT"] = "server"
    try:
        conn = connect(conn_id or "postgres_default", "inspect the database", in_task=False)
    except (MatviewConfigurationError, MatviewRefreshError) as error:
        raise CliError(str(error), EXIT_CONNECT) from None
    except Exception as error:  # the hook's own errors: an unparsable connection URI, a wrong conn_type, ...
        raise CliError(
            f"cannot connect through Airflow connection {conn_id or 'postgres_default'!r}: "
            f"{type(error).__name__}: {_one_line(error)}",
            EXIT_CONNECT,
        ) from None
    conn.autocommit = True
    return conn


def _check_conn_id(conn_id: str) -> None:
    """``--conn-id`` follows the config's rule for ``conn_id:``; a URI there is refused without repeating it."""
    try:
        ViewSettings(conn_id=conn_id)
    except ValidationError as error:
        reason = str(error.errors()[0]["msg"]).removeprefix("Value error, ")
        raise CliError(f"--conn-id: {reason}; to connect with a connection string, use --dsn", EXIT_USAGE) from None


def _dsn_options(dsn: str) -> dict[str, str | int | None]:
    try:
        return psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error as error:
        raise CliError(
            f"--dsn is not a valid libpq connection string or URI ({_hide_quoted(_one_line(error))}); "
            "write e.g. 'host=HOST port=5432 dbname=DB user=USER' or postgresql://USER@HOST:5432/DB",
            EXIT_USAGE,
        ) from None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _hide_quoted(message: str) -> str:
    """libpq's parse errors quote pieces of the DSN, which may be a password: keep only option names."""
    keywords = {option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults()}
    return _QUOTED.sub(lambda m: m.group(0) if m.group(1) in keywords or m.group(1) == "=" else '"(hidden)"', message)


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for width, cell in zip(widths, row, strict=False)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
