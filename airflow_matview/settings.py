"""How to refresh: the settings and the parsing of their (possibly templated) values.

Kept apart from :mod:`airflow_matview.refresh` so that building operators at DAG-parse time does not import
psycopg.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from airflow_matview.exceptions import MatviewConfigurationError

Concurrently = Literal["auto"] | bool
OnOverlap = Literal["wait", "skip", "fail"]

_TRUE_WORDS = {"true", "yes", "on", "1"}
_FALSE_WORDS = {"false", "no", "off", "0"}


def parse_concurrently(value: object) -> Concurrently:
    """Accept ``"auto"``, a bool, or the text a template renders (``"true"``, ``"False"``, ...)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text in _TRUE_WORDS:
        return True
    if text in _FALSE_WORDS:
        return False
    raise MatviewConfigurationError(f"concurrently must be 'auto', true or false, not {value!r}.")


def parse_bool(value: object, name: str) -> bool:
    """Accept a bool or the text a template renders for one."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE_WORDS:
        return True
    if text in _FALSE_WORDS:
        return False
    raise MatviewConfigurationError(f"{name} must be true or false, not {value!r}.")


# PostgreSQL's timeouts are int4 milliseconds (about 24.8 days); a longer one is as good as that.
MAX_TIMEOUT_MS = 2**31 - 1


def to_milliseconds(value: timedelta | float | None, name: str) -> int:
    """A timeout as whole milliseconds for PostgreSQL (at most :data:`MAX_TIMEOUT_MS`); ``None`` or 0: no limit."""
    if value is None:
        return 0
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise MatviewConfigurationError(f"{name} must not be negative, got {value!r}.")
    return min(round(seconds * 1000), MAX_TIMEOUT_MS)


@dataclass(frozen=True)
class RefreshSettings:
    """How to refresh.

    :param concurrently: ``"auto"``, ``True`` or ``False``; see :func:`choose_mode`.
    :param with_data: ``False`` runs ``WITH NO DATA``, emptying the view.
    :param analyze: run ``ANALYZE`` on the view after the refresh.
    :param lock_timeout: longest wait for the view's lock, and for another refresh of it to finish.
    :param statement_timeout: longest run of any statement, enforced by the server; ``None`` for no limit.
    :param on_overlap: when another refresh of the view is running: ``wait`` (up to ``lock_timeout``),
        ``skip`` this one, or ``fail``.
    :param application_name: how the session shows in ``pg_stat_activity``.
    :param skip_if_unchanged: skip the refresh (``AirflowSkipException``) when ``previous_fingerprint`` shows
        that no source of the view changed since the refresh that recorded it.
    :param previous_fingerprint: :attr:`RefreshResult.fingerprint` of the last successful refresh, if known.
    """

    concurrently: Concurrently = "auto"
    with_data: bool = True
    analyze: bool = False
    lock_timeout: timedelta | float | None = timedelta(minutes=1)
    statement_timeout: timedelta | float | None = None
    on_overlap: OnOverlap = "wait"
    application_name: str | None = None
    skip_if_unchanged: bool = False
    previous_fingerprint: dict[str, Any] | None = None
