"""Errors raised by airflow-matview, worded for the person reading the task log."""

from __future__ import annotations

from airflow_matview.compat import AirflowException, AirflowFailException


class MatviewRefreshError(AirflowException):
    """A refresh failed for a reason that a retry may cure (lock timeout, lost connection, ...)."""


class MatviewConfigurationError(AirflowFailException):
    """A refresh cannot work as configured (unknown view or connection, bad name, ...); retrying will not help."""
