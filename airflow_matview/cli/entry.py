"""The ``airflow-matview`` console script (and ``python -m airflow_matview``): quiet on Ctrl-C from the very first
moment, and one line when Airflow itself cannot start.

The command imports Airflow and psycopg, which takes a second or two; a Ctrl-C in that time must end the command
with exit code 130 and no traceback, like a Ctrl-C later on (see :func:`airflow_matview.cli.main.main`). Importing
Airflow also sets it up from its configuration (its metadata database first), which fails with a traceback when
that configuration is broken: ``validate`` (and ``--help``, and a usage error) reads only the config file, so it
imports Airflow without that set-up; ``check`` and ``discover`` look connections up in Airflow, and say in one line
what is wrong instead.
"""

from __future__ import annotations

import os
import sys
import warnings

# Exit code when Airflow cannot start (as cli.output.EXIT_CONNECT, which cannot be imported before Airflow is):
# the command cannot reach Airflow's connections.
EXIT_AIRFLOW_BROKEN = 3
_METADATA_URL = (
    "Airflow's metadata database URL (sql_alchemy_conn in [database], e.g. the environment variable "
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN)"
)


def main() -> int:
    """Run :func:`airflow_matview.cli.main.main`, ending quietly with 130 when interrupted while it is imported."""
    # The output is our lines only: Airflow's own log lines ("Skipping masking for a secret as it's too short", ...)
    # and warnings would go to stdout among them. Airflow reads its log level when first imported, just below; its
    # errors still show (on stderr, see cli.main).
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "ERROR"
    warnings.simplefilter("ignore")
    command = next((argument for argument in sys.argv[1:] if not argument.startswith("-")), None)
    needs_airflow = command in ("check", "discover") and not {"-h", "--help"} & set(sys.argv[1:])
    without_settings = not needs_airflow and "_AIRFLOW__AS_LIBRARY" not in os.environ
    if without_settings:  # Airflow's own switch: import it without its ORM, logging and plugins set up
        os.environ["_AIRFLOW__AS_LIBRARY"] = "1"
    try:
        from airflow_matview.cli.main import main as cli_main
    except KeyboardInterrupt:
        print("airflow-matview: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # Airflow's set-up failed: its configuration is broken
        print(f"airflow-matview{f' {command}' if command else ''}: {airflow_cannot_start(error)}", file=sys.stderr)
        return EXIT_AIRFLOW_BROKEN
    finally:
        if without_settings:  # only the import above reads it; nothing the command starts inherits it
            del os.environ["_AIRFLOW__AS_LIBRARY"]
    return cli_main()


def airflow_cannot_start(error: Exception) -> str:
    """Why importing Airflow failed, in one line that repeats no part of the metadata database URL.

    :param error: what the import raised.
    """
    url = _configured_metadata_url()
    problem = None if url is None else _url_problem(url)
    if problem:
        return (
            f"Airflow cannot start: {_METADATA_URL} {problem}. Set it to the Airflow installation's database, e.g. "
            "postgresql+psycopg2://USER:PASSWORD@HOST:5432/airflow (`airflow-matview validate` needs none)."
        )
    reason = " ".join(str(error).split())
    if url:
        reason = reason.replace(url, "(the URL)")
    return (
        f"Airflow cannot start with its configuration ({type(error).__name__}: {reason[:300]}). Fix the setting it "
        "names, in airflow.cfg or an AIRFLOW__... environment variable (`airflow-matview validate` needs none)."
    )


def _configured_metadata_url() -> str | None:
    """The metadata database URL Airflow's configuration holds (read before the failed set-up), if it can be read."""
    configuration = sys.modules.get("airflow.configuration")
    try:
        if configuration is not None:
            return str(configuration.conf.get("database", "sql_alchemy_conn"))
    except Exception:  # a _cmd or _secret setting that fails: not the URL itself
        return None
    return os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")


def _url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a SQLAlchemy URL, without repeating it, or ``None``."""
    from sqlalchemy.engine import make_url

    if not url.strip():
        return "is empty"
    try:
        parsed = make_url(url)
    except ValueError:  # the port is not a number
        return "has a port that is not a number"
    except Exception:
        return "is not a database URL"
    try:
        dialect = parsed.get_dialect()
    except Exception:
        return f"names a database driver that SQLAlchemy does not know ({parsed.drivername})"
    try:
        dialect.import_dbapi()
    except ImportError as error:
        return f"needs the Python package of its driver ({parsed.drivername}), which is not installed ({error})"
    return None
