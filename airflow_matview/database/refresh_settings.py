"""How to refresh: the settings a refresh takes, kept apart from :mod:`airflow_matview.database.refresh` so that
building operators and reading configs (at DAG-parse time) imports no psycopg."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from airflow_matview.exceptions import InvalidSettingError

if TYPE_CHECKING:
    from airflow_matview.database.history import HistoryTarget

Concurrently = Literal["auto"] | bool
OnOverlap = Literal["wait", "skip", "fail"]
#: The fields of a refresh's result kept out of its XCom value: what the records of ``skip_if_unchanged`` and of
#: lag need.
RECORD_ONLY = ("fingerprint", "signals_read_at", "committed_at")
# PostgreSQL's timeouts are int4 milliseconds (about 24.8 days); a longer one is as good as that.
MAX_TIMEOUT_MS = 2**31 - 1


@dataclass(frozen=True)
class RefreshSettings:
    """How to refresh.

    :param concurrently: ``"auto"``, ``True`` or ``False``; see :func:`~airflow_matview.database.refresh.choose_mode`.
    :param with_data: ``False`` runs ``WITH NO DATA``, emptying the view.
    :param analyze: run ``ANALYZE`` on the view after the refresh.
    :param lock_timeout: longest wait for the view's lock, and for another refresh of it to finish (a timedelta or
        seconds).
    :param statement_timeout: longest run of any statement, enforced by the server; ``None`` for no limit.
    :param on_overlap: when another refresh of the view is running: ``wait`` (up to ``lock_timeout``),
        ``skip`` this one, or ``fail``.
    :param application_name: how the session shows in ``pg_stat_activity``.
    :param skip_if_unchanged: skip the refresh (``AirflowSkipException``) when ``previous_fingerprint`` shows
        that no source of the view changed since the refresh that recorded it.
    :param previous_fingerprint: the ``fingerprint`` of the last successful refresh's result, if known.
    :param read_signals: read the sources' change signals in the refresh's transaction even without
        ``skip_if_unchanged``, so that the result says what the view now reflects (``target_lag``'s measurement).
    :param history: where to record the refresh's history row (see :mod:`airflow_matview.database.history`);
        ``None`` records none.
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
    read_signals: bool = False
    history: HistoryTarget | None = None


def to_milliseconds(value: timedelta | float | None, name: str) -> int:
    """A timeout as whole milliseconds for PostgreSQL (at most :data:`MAX_TIMEOUT_MS`); ``None``: no limit (0).

    :raises InvalidSettingError: a value under a millisecond, which PostgreSQL would read as "no limit".
    """
    if value is None:
        return 0
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not seconds >= 0.001:
        raise InvalidSettingError(
            f"{name}: {value!r} is less than a millisecond, which PostgreSQL reads as 'no limit'; use at least 1ms"
        )
    return min(round(seconds * 1000), MAX_TIMEOUT_MS)
