"""How to refresh: the settings and the parsing of their (possibly templated) values.

Kept apart from :mod:`airflow_matview.refresh` so that building operators at DAG-parse time does not import
psycopg.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

Concurrently = Literal["auto"] | bool
OnOverlap = Literal["wait", "skip", "fail"]


class InvalidSettingError(ValueError):
    """A setting's value is not one we accept; the message says what is allowed."""


# One set of rules for every flag and duration, whether it comes from the config file, an operator argument,
# a rendered template or a trigger-form param: a config key and an operator argument never disagree.
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
DURATION_HELP = "use 500ms, 30s, 5m, 1h, 1d or a number of seconds"
# PostgreSQL's timeouts are int4 milliseconds (about 24.8 days); a longer one is as good as that.
MAX_TIMEOUT_MS = 2**31 - 1


def parse_flag(value: object, name: str) -> bool:
    """A flag: a bool, or the text ``true``/``false`` (any case) that a template or a form renders.

    Numbers and other words (``1``, ``yes``, ``"on"``) are refused rather than guessed.

    :param value: the value given.
    :param name: the setting's name (callers put it in front of the message).
    :raises InvalidSettingError: anything else.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InvalidSettingError(f"{value!r} is not allowed; use true or false")


def parse_concurrently(value: object, name: str = "concurrently") -> Concurrently:
    """``auto``, or a flag as :func:`parse_flag` reads it.

    :param value: the value given.
    :param name: the setting's name (callers put it in front of the message).
    :raises InvalidSettingError: anything else.
    """
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return parse_flag(value, name)
    except InvalidSettingError:
        raise InvalidSettingError(f"{value!r} is not allowed; use auto, true or false") from None


def parse_duration(value: object, name: str, *, positive: bool = False) -> timedelta:
    """A duration: a timedelta, a number of seconds, or text such as ``500ms``, ``30s``, ``5m``, ``1h``, ``1d``, ``90``.

    :param value: the value given (``None`` is the caller's business: it means "no limit" where that is allowed).
    :param name: the setting's name (callers put it in front of the message).
    :param positive: refuse 0 and anything under a millisecond, for limits where 0 would mean "no limit".
    :raises InvalidSettingError: anything else, a negative value, or an out-of-range one.
    """
    seconds: float
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value) if abs(value) < 1e300 else float("inf")  # float() of a huge int overflows
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip().lower())):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise InvalidSettingError(f"{value!r} is not a duration; {DURATION_HELP}")
    if seconds != seconds or seconds in (float("inf"), float("-inf")) or abs(seconds) > 10 * 365 * 86400:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        raise InvalidSettingError(f"{shown} is out of range; use at most 3650d")
    if seconds < 0:
        raise InvalidSettingError(f"{value!r} is negative; durations must be 0 or more")
    if positive and seconds < 0.001:
        raise InvalidSettingError(
            f"{value!r} is less than a millisecond, which PostgreSQL reads as 'no limit'; "
            "use at least 1ms (e.g. 30s), or null to wait without limit"
        )
    return timedelta(seconds=seconds)


def to_milliseconds(value: timedelta | float | None, name: str) -> int:
    """A timeout as whole milliseconds for PostgreSQL (at most :data:`MAX_TIMEOUT_MS`); ``None``: no limit (0)."""
    if value is None:
        return 0
    return min(round(parse_duration(value, name, positive=True).total_seconds() * 1000), MAX_TIMEOUT_MS)


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
