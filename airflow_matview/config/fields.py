"""Every config field's parser, in one place: the config file, an operator argument, a rendered template and a
trigger-form param follow the same rules, so a config key and an operator argument never disagree.

Each parser takes the value as given and returns it typed, or raises ``ValueError`` (:class:`InvalidSettingError`
for flags and durations) whose message says what is allowed; the caller puts the key in front.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from croniter import CroniterError, croniter

from airflow_matview.database.identifiers import control_character, parse_qualified_name, quote_if_needed
from airflow_matview.exceptions import InvalidIdentifierError, InvalidSettingError
from airflow_matview.text import shown, yaml_single_quoted

if TYPE_CHECKING:
    from airflow_matview.database.identifiers import QualifiedName
    from airflow_matview.database.refresh_settings import Concurrently

# --- flags and durations
# One set of rules for every flag and duration, whether it comes from the config file, an operator argument,
# a rendered template or a trigger-form param: a config key and an operator argument never disagree.
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?")


_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


DURATION_HELP = "use 500ms, 30s, 5m, 1h, 1d or a number of seconds"


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
    if isinstance(value, str):
        return _text_duration(value, positive)
    return _duration(value, positive)


@functools.lru_cache(maxsize=1024)
def _text_duration(value: str, positive: bool) -> timedelta:
    """A duration written as text, read once per distinct text: a config repeats its defaults for every view."""
    return _duration(value, positive)


def _duration(value: object, positive: bool) -> timedelta:
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


def parse_poll_interval(value: object) -> timedelta:
    """How often the on_change watcher polls: a duration of at least a second (each poll queries the database)."""
    duration = parse_duration(value, "poll_interval", positive=True)
    if duration < timedelta(seconds=1):
        raise ValueError(
            f"{value!r} is under a second: every poll is a catalog query on the view's database, and the watcher "
            "would run it many times a second; use at least 1s (default 10s)"
        )
    return duration


# --- counts and names
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,256}")


_INT32 = 2**31 - 1


MAX_RETRIES = 1000


_WHOLE_NUMBER = re.compile(r"\s*[-+]?[0-9]+\s*")
# Far above any limit, and below Python's limit on converting digits to an int.
_MAX_DIGITS = 12


def whole_number(value: object) -> int | None:
    """A count as a config writes it: an int, or its ASCII digits as text (``"3"``, ``"-5"``, as a duration may be
    ``"90"``); ``None`` for anything else (a bool, a fraction, other digits such as ``١٢``) and for a number of more
    than 12 digits. The caller says what is allowed."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _WHOLE_NUMBER.fullmatch(value) and len(value.strip().lstrip("+-")) <= _MAX_DIGITS:
        return int(value)
    return None


def parse_retries(value: object) -> int:
    """How many times Airflow retries a failed refresh: 0 to :data:`MAX_RETRIES`."""
    number = whole_number(value)
    if number is None:
        if isinstance(value, str) and _WHOLE_NUMBER.fullmatch(value):
            raise ValueError(f"{value.strip()[:20]!r}... is too large; use 0, 1, 2, ...")
        raise ValueError(f"{value!r} is not a whole number; use 0, 1, 2, ...")
    return number


def parse_pool(value: object) -> str | None:
    """An Airflow pool name; ``None`` for Airflow's ``default_pool``."""
    return _name(value, "pool", "pg_main")


def parse_queue(value: object) -> str | None:
    """An executor queue name; ``None`` for the default queue."""
    return _name(value, "queue", "refreshes")


def _name(value: object, what: str, example: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and _NAME.fullmatch(value):
        return value
    raise ValueError(f"{shown(value)} is not a {what} name; use up to 256 letters, digits, _ . and - (e.g. {example})")


def parse_history_table(value: object) -> str | None:
    """The refresh history table, ``schema.table`` as written in SQL; ``None`` records no history."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{shown(value)} is not a table name; use schema.table, e.g. ops.matview_history")
    from airflow_matview.database.history import MAX_TABLE_NAME

    try:
        table = parse_view_name(value)
    except ValueError as exc:
        raise ValueError(f"{exc} (the history table, e.g. ops.matview_history)") from None
    if table.schema is None:
        raise ValueError(f"{value!r} has no schema; use schema.table, e.g. ops.matview_history")
    if len(table.name.encode()) > MAX_TABLE_NAME:
        raise ValueError(
            f"{value!r}: the table's name is longer than {MAX_TABLE_NAME} bytes, which leaves no room for the view "
            "beside it (<table>_latest) in PostgreSQL's 63; use a shorter name"
        )
    return value


def parse_pool_slots(value: object) -> int:
    """How many slots of its pool the refresh takes: a whole number from 1, written ``2`` or ``"2"``."""
    number = whole_number(value)
    if number is not None and 1 <= number <= _INT32:
        return number
    raise ValueError(f"{shown(value)} is not allowed; use a whole number of slots from 1 to {_INT32} (default 1)")


def parse_priority_weight(value: object) -> int:
    """Airflow's priority_weight: a whole number, written ``5`` or ``"5"``; higher runs first when slots are short."""
    number = whole_number(value)
    if number is not None and -_INT32 - 1 <= number <= _INT32:
        return number
    raise ValueError(
        f"{shown(value)} is not allowed; use a whole number from {-_INT32 - 1} to {_INT32} (higher runs first when "
        "slots are short)"
    )


def parse_description(value: object) -> str | None:
    """Free text shown next to the DAG in the UI and in its doc; it may span lines."""
    if isinstance(value, str) and (char := control_character(re.sub(r"[\t\n\r]", " ", value))) is not None:
        raise ValueError(
            f"{value[:40]!r}{'...' if len(value) > 40 else ''} holds the control character {char!r}, which would "
            "garble the listings that show it; remove it (line breaks and tabs are fine)"
        )
    if isinstance(value, str) and not value.strip():
        raise ValueError("is blank; write a description, or leave the key out")
    if value is None or (isinstance(value, str) and len(value) <= 1000):
        return value
    if isinstance(value, str):
        raise ValueError(f"is {len(value)} characters long; use at most 1000 (put more in a comment)")
    raise ValueError(f"{value!r} is not text; write the description as a string")


def parse_max_staleness(value: object) -> timedelta | None:
    """How far behind its sources the view may fall (its lag, see :mod:`airflow_matview.freshness`) before its
    ``on_stale`` notifiers are told; ``None``: no staleness alert."""
    if value is None:
        return None
    try:
        duration = parse_duration(value, "max_staleness")
    except InvalidSettingError as error:
        raise ValueError(str(error)) from None
    if duration < timedelta(seconds=1):
        raise ValueError(
            f"{value!r} is under a second, sooner than any refresh can run; "
            "use a duration such as 20s, 30m or 1h, or null for no staleness alert"
        )
    return parse_duration(value, "max_staleness", positive=True)


def parse_target_lag(value: object) -> timedelta | None:
    """How far behind its sources a view may be (its lag, see :mod:`airflow_matview.freshness`); ``None``: no target."""
    if value is None:
        return None
    try:
        duration = parse_duration(value, "target_lag", positive=True)
    except InvalidSettingError as error:
        raise ValueError(str(error)) from None
    if duration < timedelta(seconds=1):
        raise ValueError(
            f"{value!r} is under a second, sooner than a change can be seen; "
            "use a duration such as 30s, 5m or 1h, or null for no target"
        )
    return duration


# --- schedules and time zones
SCHEDULE_PRESETS = ("@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")


@functools.lru_cache(maxsize=1024)
def check_cron(schedule: str) -> str:
    """``schedule`` if it is a 5-field cron expression that fires at predictable times; else ``ValueError``.

    Cached: a file of thousands of views has a handful of distinct expressions.
    """
    if schedule.strip().lower() in SCHEDULE_PRESETS:
        raise ValueError(f"{schedule!r} is not a preset as written; write {schedule.strip().lower()!r}")
    if len(schedule.split()) != 5 or not croniter.is_valid(schedule):
        raise ValueError(
            f"{schedule!r} is not a cron expression or preset; use 5 cron fields such as '*/5 * * * *', "
            f"one of {', '.join(SCHEDULE_PRESETS)}, or null for manual runs only"
        )
    fields = schedule.lower().split()
    if any(_RANDOM_ITEM.match(item) for field in fields for item in field.split(",")):
        raise ValueError(
            f"{schedule!r} uses R (a random time), which would move at every parse of the DAG file; "
            "write the minute and hour you want"
        )
    for index, field in enumerate(schedule.split()):
        for item in field.split(","):
            low, dash, high = item.partition("/")[0].partition("-")
            if dash and _cron_number(low.lower(), index) == _cron_number(high.lower(), index) is not None:
                raise ValueError(
                    f"{schedule!r} has the range {item.partition('/')[0]}, whose two ends are the same "
                    f"{_CRON_FIELDS[index]}: Airflow's cron library (croniter) reads that as every "
                    f"{_CRON_FIELDS[index]}, not the one; write {low}"
                )
    try:
        croniter(schedule, start_time=_CRON_START).get_next(datetime)
    except CroniterError:
        raise ValueError(
            f"{schedule!r} never fires (no date matches it, e.g. February 31st); check the day and month fields"
        ) from None
    return schedule


_CRON_START = datetime(2024, 1, 1, tzinfo=timezone.utc)


_CRON_FIELDS = ("minute", "hour", "day of the month", "month", "day of the week")


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


_CRON_NAMES: tuple[dict[str, int], ...] = (
    {},
    {},
    {},
    {name: number for number, name in enumerate(_MONTHS, 1)},
    {name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))},
)


# croniter's random values: R, R(0-30), R/5 (a month or day name such as MAR or FRI is not one)
_RANDOM_ITEM = re.compile(r"r(?:$|[(/])")


def _cron_number(text: str, field: int) -> int | None:
    """A cron field's value written as a number or a month or day name; ``None`` for anything else."""
    if text.isdigit():
        return int(text)
    return _CRON_NAMES[field].get(text)


# Abbreviations people write for a zone: none is the zone they mean (PST is not an IANA name; EST and MST are, but
# as fixed offsets that never change for daylight saving time).
_ABBREVIATIONS = {
    "PST": "America/Los_Angeles",
    "PDT": "America/Los_Angeles",
    "EST": "America/New_York",
    "EDT": "America/New_York",
    "CST": "America/Chicago",
    "CDT": "America/Chicago",
    "MST": "America/Denver",
    "MDT": "America/Denver",
    "BST": "Europe/London",
    "CEST": "Europe/Berlin",
    "IST": "Asia/Kolkata",
    "JST": "Asia/Tokyo",
    "AEST": "Australia/Sydney",
    "AEDT": "Australia/Sydney",
}


_FIXED_OFFSET_LOOKALIKES = {"EST": "Etc/GMT+5", "MST": "Etc/GMT+7"}


def parse_timezone(value: object) -> str:
    """The IANA name of a zone that ``zoneinfo`` (and so pendulum and Airflow's timetables) knows on every machine.

    :param value: the value given, e.g. ``Europe/Berlin``.
    :raises ValueError: naming the closest valid zone when there is one.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not a time zone; use an IANA name such as Europe/Berlin or UTC")
    name = value.strip()
    if name.upper() in _FIXED_OFFSET_LOOKALIKES:
        raise ValueError(
            f"{name!r} is a fixed offset that ignores daylight saving time, not the local time it usually means; "
            f"use {_ABBREVIATIONS[name.upper()]} (or {_FIXED_OFFSET_LOOKALIKES[name.upper()]} for a fixed offset)"
        )
    if name in _portable_zones():
        return name
    if hint := _fixed_offset_hint(name):
        raise ValueError(f"{name!r} is a fixed offset, not an IANA time zone; {hint}")
    suggestion = closest_timezone(name)
    hint = f"did you mean {suggestion}?" if suggestion else "use an IANA name such as Europe/Berlin or UTC"
    raise ValueError(f"{name!r} is not an IANA time zone; {hint}")


# An offset written as a zone: UTC+2, GMT-05:00, UTC +5:30, +02:00.
_OFFSET = re.compile(r"(?:UTC|GMT|UT)?\s*([+-])\s*([0-9]{1,2})(?::?([0-9]{2}))?", re.IGNORECASE)
# Regions whose clocks people mean by an offset, for the hint (each is checked against the offset asked for).
_OFFSET_EXAMPLES = (
    "Europe/London",
    "Europe/Berlin",
    "Europe/Athens",
    "Europe/Moscow",
    "Asia/Dubai",
    "Asia/Karachi",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Dhaka",
    "Asia/Bangkok",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Australia/Adelaide",
    "Australia/Sydney",
    "Pacific/Auckland",
    "America/Sao_Paulo",
    "America/Halifax",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
    "America/St_Johns",
    "Asia/Tehran",
    "Asia/Kabul",
    "Africa/Lagos",
    "Africa/Nairobi",
)


def _fixed_offset_hint(name: str) -> str | None:
    """What to write for an offset such as ``UTC+2``: the ``Etc/GMT`` zone with POSIX's inverted sign, or a region."""
    match = _OFFSET.fullmatch(name)
    if match is None:
        return None
    sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3) or 0)
    if hours == minutes == 0:
        return "write UTC"
    offset = timedelta(hours=hours, minutes=minutes) * (1 if sign == "+" else -1)
    shown = f"UTC{sign}{hours:02d}:{minutes:02d}"
    regions = [zone for zone in _OFFSET_EXAMPLES if offset in _offsets_of(zone)]
    region = "the region whose local time you mean" + (f", such as {' or '.join(regions[:2])}" if regions else "")
    etc = f"Etc/GMT{'-' if sign == '+' else '+'}{hours}"
    if minutes or etc not in _portable_zones():
        return f"no Etc/GMT zone has the offset {shown}; write {region}"
    return f"write {etc} for {shown} all year (POSIX sign: {etc} is {shown}), or {region}"


@functools.lru_cache(maxsize=64)
def _offsets_of(zone: str) -> frozenset[timedelta]:
    """The UTC offsets of ``zone`` in winter and in summer."""
    tz = zoneinfo.ZoneInfo(zone)
    moments = (datetime(2026, 1, 15, tzinfo=timezone.utc), datetime(2026, 7, 15, tzinfo=timezone.utc))
    return frozenset(moment.astimezone(tz).utcoffset() or timedelta(0) for moment in moments)


_POSIX_OFFSET = re.compile(r"Etc/GMT([+-])([0-9]{1,2})")


def timezone_note(zone: str) -> str | None:
    """What to tell about a zone accepted as written but easily misread: ``Etc/GMT+2`` is two hours *behind* UTC
    (POSIX's sign), so whoever meant UTC+2 gets runs four hours off; ``None`` for any other zone."""
    match = _POSIX_OFFSET.fullmatch(zone)
    if match is None or int(match.group(2)) == 0:
        return None
    sign, hours = match.group(1), int(match.group(2))
    real = "-" if sign == "+" else "+"
    note = (
        f"{zone} is UTC{real}{hours:02d}:00, {hours} hour(s) {'behind' if sign == '+' else 'ahead of'} UTC (POSIX "
        "inverts the sign of Etc/GMT zones)"
    )
    if (meant := f"Etc/GMT{real}{hours}") in _portable_zones():
        note += f"; if you meant UTC{sign}{hours:02d}:00, write {meant}"
    return note


@functools.lru_cache(maxsize=1)
def _portable_zones() -> frozenset[str]:
    """The zones of the IANA database (the ``tzdata`` package Airflow installs, or the system's copy): not
    ``localtime`` or another file of this machine's zoneinfo directory, whose meaning differs between machines."""
    return frozenset(zoneinfo.available_timezones() - {"localtime", "posixrules", "Factory"})


def closest_timezone(name: str) -> str | None:
    """The known zone name closest to ``name`` (case-insensitive), if any is close enough."""
    if name.upper() in _ABBREVIATIONS:
        return _ABBREVIATIONS[name.upper()]
    zones = {zone.lower(): zone for zone in _portable_zones()}
    wanted = name.lower().replace(" ", "_")
    if wanted in zones:
        return zones[wanted]
    import difflib

    matches = difflib.get_close_matches(wanted, zones, n=1, cutoff=0.6)
    return zones[matches[0]] if matches else None


# --- view names
_DOUBLE_QUOTED = re.compile(r'"(?:[^"]|"")*"')


_ASCII_CAPITAL = re.compile("[A-Z]")


@functools.lru_cache(maxsize=65536)
def check_view_name(name: str) -> str:
    """``name`` if it is ``schema.name`` as written in SQL; else ``ValueError`` with the spelling to use."""
    if (char := control_character(name)) is not None:
        raise ValueError(
            f"{name!r} holds the control character {char!r}: PostgreSQL accepts it in a quoted name, but it would "
            "break the listings, DAG docs and logs that show the name; rename the view in PostgreSQL "
            "(ALTER MATERIALIZED VIEW ... RENAME TO ...) and write its new name here"
        )
    try:
        qualified = parse_view_name(name)
    except ValueError as exc:
        hint = _quoted_spelling(name)
        raise ValueError(str(exc) + (f" Here that is {hint}." if hint else "")) from None
    if qualified.schema is None:
        if "." in qualified.name:  # '"Sales Report.Q1 Totals"': one quoted identifier holding the dot
            parts = ".".join(quote_if_needed(part) for part in qualified.name.split(".", 1))
            raise ValueError(
                f"{name!r} has no schema: the dot is inside the double quotes, so this is one name; quote each "
                f"part on its own: {yaml_single_quoted(parts)}"
            )
        raise ValueError(f"{name!r} has no schema; write schema.name, e.g. public.{name}")
    if _ASCII_CAPITAL.search(_DOUBLE_QUOTED.sub("", name) if '"' in name else name):
        keep = _quoted_spelling(name, keep_case=True)
        raise ValueError(
            f"{name!r} has capitals outside double quotes, which PostgreSQL folds to lower case ({qualified}); "
            f"write {yaml_single_quoted(str(qualified))} if that is the view, or {keep} to keep the case"
        )
    return name


def check_view_names(names: list[str]) -> list[str]:
    """Each of ``names`` as :func:`check_view_name` checks it (``after:``)."""
    for name in names:
        check_view_name(name)
    return names


def _quoted_spelling(name: str, *, keep_case: bool = False) -> str | None:
    """``name`` with each part that SQL must quote in double quotes, as a YAML single-quoted value."""
    if '"' in name and not keep_case:
        return None
    parts = [part for part in re.split(r'("(?:[^"]|"")*"|\.)', name) if part and part != "."]
    if not 1 <= len(parts) <= 2:
        return None
    quoted = [part if part.startswith('"') else quote_if_needed(part.strip()) for part in parts]
    return yaml_single_quoted(".".join(quoted))


@functools.lru_cache(maxsize=65536)
def parse_view_name(name: str) -> QualifiedName:
    """A name as parsed, cached: each view's name is read several times while validating and building DAGs."""
    try:
        return parse_qualified_name(name)
    except InvalidIdentifierError as exc:
        raise ValueError(str(exc)) from None


# --- the keys pydantic checks with these parsers
_DAG_ID = re.compile(r"[A-Za-z0-9_.-]{1,250}")
_CONN_ID = re.compile(r"[A-Za-z0-9_.-]{1,250}")
# Airflow's limits for what we pass to DAG(): airflow.sdk.definitions.dag.TAG_MAX_LEN (checked by a test).
TAG_MAX_LEN = 100
OWNER_MAX_LEN = 500


def parse_schedule(schedule: str | None) -> str | None:
    """A preset, a 5-field cron expression that fires at predictable times, or ``None`` (manual runs only)."""
    if schedule is not None and (char := control_character(schedule)) is not None:
        raise ValueError(
            f"{schedule!r} holds the control character {char!r} (a YAML block scalar, schedule: |, ends with a "
            f"line break); write it on one line: {yaml_single_quoted(' '.join(schedule.split()))}"
        )
    if schedule is None or schedule in SCHEDULE_PRESETS or schedule == "@annually":
        return schedule
    return check_cron(schedule)


def check_tags(tags: list[str]) -> list[str]:
    """DAG tags Airflow accepts and the UI shows on one line."""
    for tag in tags:
        _check_label(tag, "a tag is empty; remove it or give it a name", "write each tag on one line")
        if len(tag) > TAG_MAX_LEN:
            raise ValueError(f"{tag[:20]!r}... is {len(tag)} characters; Airflow allows at most {TAG_MAX_LEN}")
    return tags


def check_owner(owner: str) -> str:
    """The DAG's owner: who looks after it, on one line."""
    _check_label(
        owner,
        "is empty; name the team or person who looks after these DAGs, or leave it out",
        "write the owner on one line",
    )
    if len(owner) > OWNER_MAX_LEN:
        raise ValueError(f"is {len(owner)} characters; Airflow allows at most {OWNER_MAX_LEN}")
    return owner


def _check_label(text: str, if_empty: str, if_garbled: str) -> None:
    """A short label the UI shows on one line: not blank, no control character."""
    if not text.strip():
        raise ValueError(if_empty)
    if (char := control_character(text)) is not None:
        raise ValueError(f"{text[:20]!r} holds the control character {char!r}; {if_garbled}")


def check_conn_id(conn_id: str) -> str:
    """An Airflow connection id; a URI or DSN (which may hold a password) is refused without being repeated."""
    if "://" in conn_id or "=" in conn_id:
        raise ValueError(
            "this looks like a connection URI or DSN (not repeated here, as it may hold a password). The config "
            "file never holds credentials: create an Airflow connection with it and put the connection's id here"
        )
    if not _CONN_ID.fullmatch(conn_id):
        may_hold_password = bool(set(conn_id) & set("@:"))
        what = "this value (not repeated here, as it may hold a password)" if may_hold_password else repr(conn_id)
        raise ValueError(f"{what} is not an Airflow connection id; use letters, digits, _ . and -")
    return conn_id


def check_dag_id(dag_id: str | None) -> str | None:
    """A DAG id Airflow accepts, or ``None`` for the default one."""
    if dag_id is not None and not _DAG_ID.fullmatch(dag_id):
        raise ValueError(f"{dag_id!r} is not a valid DAG id; use up to 250 letters, digits, _ . and -")
    return dag_id


@functools.lru_cache(maxsize=65536)
def default_dag_id(view: QualifiedName) -> str:
    """``matview.<schema>.<name>``, with every character outside ``[A-Za-z0-9_.-]`` replaced by ``_`` (cached: the
    file's rules and the DAG factory each ask for every view's)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"matview.{view.schema}.{view.name}")


def flag_set(value: object) -> bool:
    """Whether a flag is true; a bad value is reported by its own key's validation."""
    try:
        return parse_flag(value, "flag")
    except InvalidSettingError:
        return False
