"""``airflow-matview``: validate a config file, check it against the database, discover views into one, or print
the config's JSON Schema.

Exit codes: 0 OK; 1 problems found (an invalid config, a view that cannot be refreshed, nothing to discover);
2 wrong arguments; 3 cannot connect to the database; 130 interrupted; 141 output pipe closed (e.g. ``| head``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import psycopg

from airflow_matview.cli.check import run_check
from airflow_matview.cli.connect import check_conn_id
from airflow_matview.cli.discover import run_discover
from airflow_matview.cli.history import run_history_init
from airflow_matview.cli.output import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    fail,
)
from airflow_matview.cli.validate import run_validate
from airflow_matview.config.schema import schema_text
from airflow_matview.exceptions import CliError, InvalidConfigFileError

if TYPE_CHECKING:
    from collections.abc import Sequence

# A password in an argument libpq cannot parse: postgresql://user:PASSWORD@host, password=PASSWORD
_URI_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^:/@]*:([^@/]*)@")
_KEYWORD_PASSWORD = re.compile(r"""\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)""")


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):  # a view name in an ASCII locale is escaped rather than a crash
            stream.reconfigure(errors="backslashreplace")
    _airflow_logs_to_stderr()
    arguments = sys.argv[1:] if argv is None else list(argv)
    secrets = _secrets_of(arguments)
    parser = _parser(secrets)
    args = parser.parse_args(arguments)
    if args.command == "validate" and (dsns := [path for path in args.config[1:] if path in secrets]):
        # A connection string after the config file is not a second config file: a wrong argument, as before
        # validate took several files (and never read as a file, whose error would repeat it).
        parser.error(f"unrecognized arguments: {' '.join(dsns)}")
    try:
        for option in ("conn_id", "dsn"):
            if (
                getattr(args, option, None) == ""
            ):  # `--dsn "$DSN"` with DSN unset must not fall back to another database
                raise CliError(
                    f"--{option.replace('_', '-')} is empty (an unset shell variable?); give a value", EXIT_USAGE
                )
        configs = getattr(args, "config", None)
        if "" in (configs if isinstance(configs, list) else [configs]):  # `validate "$CONFIG"` with CONFIG unset
            raise CliError("the config file argument is empty (an unset shell variable?); give a path", EXIT_USAGE)
        if getattr(args, "conn_id", None):
            check_conn_id(args.conn_id)
        if args.command == "validate":
            return run_validate(args.config, secrets)
        if args.command == "check":
            return run_check(args.config, args.conn_id, args.dsn)
        if args.command == "history":
            return run_history_init(args.config, args.conn_id, args.dsn, args.refresh_role, args.reporting_role)
        if args.command == "schema":
            sys.stdout.write(schema_text())
            return EXIT_OK
        return run_discover(args.conn_id, args.dsn, args.schema)
    except InvalidConfigFileError as error:
        fail(str(error), secrets)
        return EXIT_PROBLEMS
    except CliError as error:
        fail(f"airflow-matview {args.command}: {error}", secrets)
        return error.code
    except KeyboardInterrupt:
        fail(f"airflow-matview {args.command}: interrupted", secrets)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly; point stdout at /dev/null so the final flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as error:  # the output cannot be written: a full disk, a device that refuses it
        fail(f"airflow-matview {args.command}: cannot write the output: {error.strerror or error}", secrets)
        return EXIT_PROBLEMS
    except Exception as error:  # a bug of ours: still one line, never a traceback with a DSN in its locals
        fail(f"airflow-matview {args.command}: internal error: {type(error).__name__}: {error}", secrets)
        return EXIT_INTERNAL


def _airflow_logs_to_stderr() -> None:
    """Airflow's log lines, errors only, one line each, on stderr: stdout holds only the command's output.

    Airflow's logging writes to stdout from INFO up, with tracebacks; the console script also sets Airflow's log
    level before Airflow is imported (see :mod:`airflow_matview.cli.entry`), which quiets the loggers that bypass
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
        fail(f"{self.prog}: error: {message}", self.secrets)
        self.exit(EXIT_USAGE)


def _parser(secrets: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        secrets=secrets,
        prog="airflow-matview",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="exit codes: 0 OK, 1 problems found, 2 wrong arguments, 3 cannot connect, 130 interrupted",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser(
        "validate", help="check config files without a database; list their DAGs and views built twice"
    )
    validate.add_argument("config", nargs="+", help="the YAML config file(s): all that one DAG folder loads")

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
    history = commands.add_parser(
        "history", help="set up the refresh history tables a config file names (history:)"
    ).add_subparsers(dest="action", required=True)
    init = history.add_parser(
        "init",
        help="create each history table and the view beside it, and print the GRANTs for its roles",
        description="Create each table named by history: in the config (CREATE ... IF NOT EXISTS; its schema too) "
        "and the view <table>_latest beside it, on each view's connection, then print the GRANTs the refreshing "
        "role and a reporting role need (not run: review them, run them as the tables' owner).",
    )
    init.add_argument("config", help="the YAML config file")
    group = init.add_mutually_exclusive_group()
    group.add_argument("--conn-id", help="connect through this Airflow connection (default: each view's conn_id)")
    group.add_argument("--dsn", help="connect with this libpq connection string or URI instead")
    init.add_argument("--refresh-role", help="the role the refreshes connect as (default: the role connected as)")
    init.add_argument("--reporting-role", default="reporting", help="the role that reads the history")
    commands.add_parser(
        "schema",
        help="print the config file's JSON Schema, for editors that check YAML against one",
        description="Print the config file's JSON Schema (draft 2020-12) on stdout, e.g. "
        "`airflow-matview schema > matviews.schema.json`, then point the config at it with a first line "
        "`# yaml-language-server: $schema=matviews.schema.json`.",
    )
    for command in [*commands.choices.values(), init]:
        command.secrets = list(secrets)
    return parser


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
