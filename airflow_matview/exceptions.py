"""Every error airflow-matview raises, worded for the person who reads it.

Two families, told apart by their base class:

- **Input errors** (``ValueError``): a value we were given is not one we accept. :class:`InvalidConfigFileError`
  lists every problem of a config file; :class:`InvalidSettingError` and :class:`InvalidIdentifierError` are one
  bad value (callers put the key or the view in front); :class:`UnreadableConfigFileError` is a file that is not
  YAML we can read; :class:`CliError` is what the command line prints, with its exit code.
- **Task errors** (Airflow exceptions, raised while a refresh task runs). Which failures Airflow retries is decided
  by the class: a retry runs the same refresh again a few minutes later, so only failures that can cure themselves
  (a lock held by someone else, a lost connection, a server restarting, an overloaded server) are
  :class:`MatviewRefreshError`. Everything that will fail the same way until someone changes the configuration, the
  privileges, the view's query or its data is an ``AirflowFailException`` and fails at once, whatever ``retries``
  says. (Airflow 3.3's retry policies would allow the same per exception, but not on 3.1 and 3.2.)

The task errors travel by class name in a deferred refresh's trigger event, which Airflow stores: a class keeps its
name, and a renamed one keeps its old name as an alias (see :data:`TASK_ERRORS`).
"""

from __future__ import annotations

from airflow_matview.version_compat import (
    AirflowException,
    AirflowFailException,
    AirflowSkipException,
    AirflowTaskTimeout,
)


class InvalidConfigFileError(ValueError):
    """The config file is invalid; the message lists every problem, each naming the file, view and key.

    :param source: the file (or ``<dict>``) the config came from.
    :param problems: one line per problem.
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        listing = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"Invalid matview config {source}: {len(problems)} problem(s):\n{listing}")


#: The name DAG files written for earlier releases catch (``dags/matviews.py``).
MatviewConfigError = InvalidConfigFileError


class UnreadableConfigFileError(ValueError):
    """The file cannot be read as a YAML config; one line per problem, without the file's name.

    :param problems: what is wrong, each naming the line.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class InvalidSettingError(ValueError):
    """A setting's value is not one we accept; the message says what is allowed."""


class InvalidIdentifierError(ValueError):
    """A view name that is not a valid ``name`` or ``schema.name``."""


class CliError(Exception):
    """A failure of ``airflow-matview``, shown as one line on stderr, with its exit code.

    :param message: what went wrong and what to do.
    :param code: the exit code.
    """

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(" ".join(message.split()))
        self.code = code


class MatviewRefreshError(AirflowException):
    """A refresh failed for a reason that a retry may cure (lock timeout, lost connection, ...)."""


class MatviewSetupError(AirflowFailException):
    """A refresh cannot work as set up (unknown view or connection, bad name, missing privilege, wrong password,
    ...); retrying will not help."""


#: The earlier name of :class:`MatviewSetupError`.
MatviewConfigurationError = MatviewSetupError


class MatviewQueryError(AirflowFailException):
    """The view's query failed on the current data or definitions (division by zero, a bad cast, a duplicate key
    with CONCURRENTLY, a dropped column or function); retrying the same query on the same data will not help."""


class MatviewOverlapError(AirflowFailException):
    """Another refresh of the view was running and ``on_overlap="fail"``: this run fails, and is not retried."""


class MatviewTimeoutError(AirflowTaskTimeout):
    """The refresh ran past the task's ``execution_timeout`` and was cancelled and rolled back (retried, as Airflow
    retries every task timeout)."""


#: The task errors by the names a trigger event carries (old names too), to raise them again in the task.
TASK_ERRORS: dict[str, type[BaseException]] = {
    "MatviewRefreshError": MatviewRefreshError,
    "MatviewSetupError": MatviewSetupError,
    "MatviewConfigurationError": MatviewSetupError,
    "MatviewQueryError": MatviewQueryError,
    "MatviewOverlapError": MatviewOverlapError,
    "MatviewTimeoutError": MatviewTimeoutError,
    "AirflowSkipException": AirflowSkipException,
}
