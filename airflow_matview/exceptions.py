"""Errors raised by airflow-matview, worded for the person reading the task log.

Which failures Airflow retries is decided by the class: a retry runs the same refresh again a few minutes later,
so only failures that can cure themselves (a lock held by someone else, a lost connection, a server restarting,
an overloaded server) are :class:`MatviewRefreshError`. Everything that will fail the same way until someone
changes the configuration, the privileges, the view's query or its data is an ``AirflowFailException`` and fails
at once, whatever ``retries`` says. (Airflow 3.3's retry policies would allow the same per exception, but not on
3.1 and 3.2, which this package supports.)
"""

from __future__ import annotations

from airflow_matview.compat import AirflowException, AirflowFailException, AirflowTaskTimeout


class MatviewRefreshError(AirflowException):
    """A refresh failed for a reason that a retry may cure (lock timeout, lost connection, ...)."""


class MatviewConfigurationError(AirflowFailException):
    """A refresh cannot work as configured (unknown view or connection, bad name, missing privilege, wrong password,
    ...); retrying will not help."""


class MatviewQueryError(AirflowFailException):
    """The view's query failed on the current data or definitions (division by zero, a bad cast, a duplicate key
    with CONCURRENTLY, a dropped column or function); retrying the same query on the same data will not help."""


class MatviewOverlapError(AirflowFailException):
    """Another refresh of the view was running and ``on_overlap="fail"``: this run fails, and is not retried."""


class MatviewTimeoutError(AirflowTaskTimeout):
    """The refresh ran past the task's ``execution_timeout`` and was cancelled and rolled back (retried, as Airflow
    retries every task timeout)."""
