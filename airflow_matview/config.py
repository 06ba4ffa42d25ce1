"""The config file: one YAML document listing the materialized views to keep fresh, validated with pydantic.

Reading it touches no database, network, Airflow connection or Variable: it is safe at DAG-parse time.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from graphlib import CycleError, TopologicalSorter
from typing import TYPE_CHECKING, Annotated, Any, Literal

from croniter import CroniterError, croniter
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)

from airflow_matview import production
from airflow_matview.config_file import ConfigFileError, read_config_file, yaml_single_quoted
from airflow_matview.identifiers import (
    InvalidIdentifierError,
    QualifiedName,
    control_character,
    parse_qualified_name,
    printable,
    quote_if_needed,
)
from airflow_matview.notifiers import NotifierSpec, parse_notifiers
from airflow_matview.settings import InvalidSettingError, parse_concurrently, parse_duration, parse_flag
from airflow_matview.timezones import parse_timezone

if TYPE_CHECKING:
    from pathlib import Path

SCHEDULE_PRESETS = ("@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")
_DAG_ID = re.compile(r"[A-Za-z0-9_.-]{1,250}")
_CONN_ID = re.compile(r"[A-Za-z0-9_.-]{1,250}")
# Airflow's limits for what we pass to DAG(): airflow.sdk.definitions.dag.TAG_MAX_LEN (checked by a test).
TAG_MAX_LEN = 100
OWNER_MAX_LEN = 500
MAX_RETRIES = 1000
_DOUBLE_QUOTED = re.compile(r'"(?:[^"]|"")*"')
_ASCII_CAPITAL = re.compile("[A-Z]")


class MatviewConfigError(ValueError):
    """The config file is invalid; the message lists every problem, each naming the file, view and key.

    :param source: the file (or ``<dict>``) the config came from.
    :param problems: one line per problem.
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        listing = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"Invalid matview config {source}: {len(problems)} problem(s):\n{listing}")


def _duration(name: str, *, positive: bool = False) -> BeforeValidator:
    return BeforeValidator(lambda value: value if value is None else parse_duration(value, name, positive=positive))


def _flag(name: str) -> PlainValidator:
    return PlainValidator(lambda value: parse_flag(value, name))


def _whole_number(value: object) -> object:
    """A count: an int, or its digits as text (as a duration may be ``"90"``); never a bool or a fraction."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdecimal():
        if len(value.strip()) > 12:  # far above any limit, and below Python's limit on converting digits
            raise ValueError(f"{value.strip()[:20]!r}... is too large; use 0, 1, 2, ...")
        return int(value.strip())
    raise ValueError(f"{value!r} is not a whole number; use 0, 1, 2, ...")


def _notifiers_or_none(value: object) -> tuple[NotifierSpec, ...] | None:
    return None if value is None else parse_notifiers(value)


class ViewSettings(BaseModel):
    """Settings any view may have; ``defaults:`` sets them for every view."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    conn_id: str = "postgres_default"
    schedule: str | None = "@daily"
    concurrently: Annotated[Literal["auto"] | bool, PlainValidator(parse_concurrently)] = "auto"
    retries: Annotated[int, BeforeValidator(_whole_number), Field(ge=0, le=MAX_RETRIES)] = 2
    retry_delay: Annotated[timedelta, _duration("retry_delay")] = timedelta(minutes=5)
    retry_exponential_backoff: Annotated[bool, _flag("retry_exponential_backoff")] = False
    execution_timeout: Annotated[timedelta | None, _duration("execution_timeout", positive=True)] = timedelta(hours=1)
    lock_timeout: Annotated[timedelta | None, _duration("lock_timeout", positive=True)] = timedelta(minutes=1)
    analyze: Annotated[bool, _flag("analyze")] = False
    on_overlap: Literal["wait", "skip", "fail"] = "wait"
    skip_if_unchanged: Annotated[bool, _flag("skip_if_unchanged")] = False
    # Deferrable refreshes: the refresh runs in the triggerer instead of holding a worker slot.
    deferrable: Annotated[bool, _flag("deferrable")] = False
    tags: list[str] = Field(default_factory=lambda: ["matview"])
    owner: str = "airflow"
    # Production settings (timezone, notifiers, max_staleness, pool, queue...): see notifiers.py and production.py
    timezone: Annotated[str, PlainValidator(parse_timezone)] = "UTC"
    on_failure: Annotated[tuple[NotifierSpec, ...], PlainValidator(parse_notifiers)] = ()
    on_retry: Annotated[tuple[NotifierSpec, ...], PlainValidator(parse_notifiers)] = ()
    on_success: Annotated[tuple[NotifierSpec, ...], PlainValidator(parse_notifiers)] = ()
    on_stale: Annotated[tuple[NotifierSpec, ...] | None, PlainValidator(_notifiers_or_none)] = None
    max_staleness: Annotated[timedelta | None, PlainValidator(production.parse_max_staleness)] = None
    pool: Annotated[str | None, PlainValidator(production.parse_pool)] = None
    pool_slots: Annotated[int, PlainValidator(production.parse_pool_slots)] = 1
    priority_weight: Annotated[int, PlainValidator(production.parse_priority_weight)] = 1
    queue: Annotated[str | None, PlainValidator(production.parse_queue)] = None
    description: Annotated[str | None, PlainValidator(production.parse_description)] = None

    @property
    def stale_notifiers(self) -> tuple[NotifierSpec, ...]:
        """Who is told when the view is stale: ``on_stale``, by default the ``on_failure`` notifiers."""
        return self.on_failure if self.on_stale is None else self.on_stale

    # Refresh on change (airflow_matview.on_change): a watcher in the triggerer polls the sources' change signals.
    on_change: Annotated[bool, _flag("on_change")] = False
    poll_interval: Annotated[timedelta, _duration("poll_interval", positive=True)] = timedelta(seconds=10)
    min_interval: Annotated[timedelta, _duration("min_interval")] = timedelta(minutes=1)

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, schedule: str | None) -> str | None:
        if schedule is not None and (char := control_character(schedule)) is not None:
            raise ValueError(
                f"{schedule!r} holds the control character {char!r} (a YAML block scalar, schedule: |, ends with a "
                f"line break); write it on one line: {yaml_single_quoted(' '.join(schedule.split()))}"
            )
        if schedule is None or schedule in SCHEDULE_PRESETS or schedule == "@annually":
            return schedule
        return _valid_cron(schedule)

    @field_validator("tags")
    @classmethod
    def _valid_tags(cls, tags: list[str]) -> list[str]:
        for tag in tags:
            if not tag.strip():
                raise ValueError("a tag is empty; remove it or give it a name")
            if (char := control_character(tag)) is not None:
                raise ValueError(f"{tag[:20]!r} holds the control character {char!r}; write each tag on one line")
            if len(tag) > TAG_MAX_LEN:
                raise ValueError(f"{tag[:20]!r}... is {len(tag)} characters; Airflow allows at most {TAG_MAX_LEN}")
        return tags

    @field_validator("owner")
    @classmethod
    def _valid_owner(cls, owner: str) -> str:
        if not owner.strip():
            raise ValueError("is empty; name the team or person who looks after these DAGs, or leave it out")
        if (char := control_character(owner)) is not None:
            raise ValueError(f"{owner[:20]!r} holds the control character {char!r}; write the owner on one line")
        if len(owner) > OWNER_MAX_LEN:
            raise ValueError(f"is {len(owner)} characters; Airflow allows at most {OWNER_MAX_LEN}")
        return owner

    @field_validator("conn_id")
    @classmethod
    def _valid_conn_id(cls, conn_id: str) -> str:
        if "://" in conn_id or "=" in conn_id:
            raise ValueError(
                "this looks like a connection URI or DSN (not repeated here, as it may hold a password). The config "
                "file never holds credentials: create an Airflow connection with it and put the connection's id here"
            )
        if not _CONN_ID.fullmatch(conn_id):
            may_hold_password = bool(set(conn_id) & set("@:"))
            shown = "this value (not repeated here, as it may hold a password)" if may_hold_password else repr(conn_id)
            raise ValueError(f"{shown} is not an Airflow connection id; use letters, digits, _ . and -")
        return conn_id


class ViewConfig(ViewSettings):
    """One materialized view to keep fresh: one DAG."""

    name: str
    after: list[str] = Field(default_factory=list)
    dag_id: str | None = None

    @field_validator("name")
    @classmethod
    def _qualified_name(cls, name: str) -> str:
        return _checked_name(name)

    @field_validator("after")
    @classmethod
    def _valid_after(cls, after: list[str]) -> list[str]:
        for name in after:
            _checked_name(name)
        return after

    @model_validator(mode="after")
    def _schedule_combines_with_after(self) -> ViewConfig:
        if self.after and self.schedule in ("@once", "@continuous"):
            raise ValueError(f"schedule: {self.schedule} cannot be combined with after:; use a cron expression or null")
        if self.on_change:
            from airflow_matview.on_change import check_on_change

            check_on_change(self)
        return self

    @model_validator(mode="after")
    def _production_settings_combine(self) -> ViewConfig:
        if problems := production.view_problems(self):
            raise ValueError("; ".join(problems))
        return self

    @field_validator("dag_id")
    @classmethod
    def _valid_dag_id(cls, dag_id: str | None) -> str | None:
        if dag_id is not None and not _DAG_ID.fullmatch(dag_id):
            raise ValueError(f"{dag_id!r} is not a valid DAG id; use up to 250 letters, digits, _ . and -")
        return dag_id

    @property
    def view(self) -> QualifiedName:
        return _parse(self.name)

    @property
    def upstream(self) -> list[QualifiedName]:
        return [_parse(name) for name in self.after]

    @property
    def key(self) -> tuple[str, QualifiedName]:
        """The view's identity in a file: its connection and its name."""
        return self.conn_id, self.view

    @property
    def upstream_keys(self) -> list[tuple[str, QualifiedName]]:
        """The identities of the views in ``after:``, which live in the same database."""
        return [(self.conn_id, name) for name in self.upstream]

    @property
    def resolved_dag_id(self) -> str:
        return self.dag_id or default_dag_id(self.view)


class MatviewConfig(BaseModel):
    """The whole file: ``defaults`` and ``views``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: ViewSettings = Field(default_factory=ViewSettings)
    views: list[ViewConfig] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _apply_defaults(cls, data: object) -> object:
        if not isinstance(data, Mapping):
            raise ValueError("the file must be a mapping with 'views:' (and optionally 'defaults:')")
        if "defaults" in data and data["defaults"] is None:  # `defaults:` with every line commented out
            data = {key: value for key, value in data.items() if key != "defaults"}
        if "views" in data and data["views"] is None:
            data = {**data, "views": []}
        defaults = data.get("defaults") or {}
        views = data.get("views")
        if not isinstance(defaults, Mapping) or not isinstance(views, list):
            return data
        try:
            ViewSettings.model_validate(defaults)
        except ValidationError:
            return data  # reported once, under 'defaults', rather than again for every view
        merged = [_with_defaults(defaults, view) if isinstance(view, Mapping) else view for view in views]
        return {**data, "views": merged}


def _flag_set(value: object) -> bool:
    """Whether a flag is true; a bad value is reported by its own key's validation."""
    try:
        return parse_flag(value, "flag")
    except InvalidSettingError:
        return False


def _with_defaults(defaults: Mapping[str, Any], view: Mapping[str, Any]) -> dict[str, Any]:
    merged = {**defaults, **view}
    if view.get("after") and "schedule" not in view:
        merged["schedule"] = None  # a view with after: runs when its upstream views refresh, unless told otherwise
    if _flag_set(merged.get("on_change")) and "schedule" not in view and "schedule" not in defaults:
        merged["schedule"] = None  # likewise, a view with on_change: true runs when its sources change
    return merged


@functools.lru_cache(maxsize=1024)
def _valid_cron(schedule: str) -> str:
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


@functools.lru_cache(maxsize=65536)
def _checked_name(name: str) -> str:
    """``name`` if it is ``schema.name`` as written in SQL; else ``ValueError`` with the spelling to use."""
    if (char := control_character(name)) is not None:
        raise ValueError(
            f"{name!r} holds the control character {char!r}: PostgreSQL accepts it in a quoted name, but it would "
            "break the listings, DAG docs and logs that show the name; rename the view in PostgreSQL "
            "(ALTER MATERIALIZED VIEW ... RENAME TO ...) and write its new name here"
        )
    try:
        qualified = _parse(name)
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


def _quoted_spelling(name: str, *, keep_case: bool = False) -> str | None:
    """``name`` with each part that SQL must quote in double quotes, as a YAML single-quoted value."""
    if '"' in name and not keep_case:
        return None
    parts = [part for part in re.split(r'("(?:[^"]|"")*"|\.)', name) if part and part != "."]
    if not 1 <= len(parts) <= 2:
        return None
    quoted = [part if part.startswith('"') else quote_if_needed(part.strip()) for part in parts]
    return yaml_single_quoted(".".join(quoted))


def default_dag_id(view: QualifiedName) -> str:
    """``matview.<schema>.<name>``, with every character outside ``[A-Za-z0-9_.-]`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"matview.{view.schema}.{view.name}")


def load_config(source: str | Path | Mapping[str, Any]) -> MatviewConfig:
    """Read and validate a config file (or an already-parsed mapping).

    :raises MatviewConfigError: listing every problem, each naming the file, the view and the key.
    """
    label = "<dict>" if isinstance(source, Mapping) else printable(str(source))
    if isinstance(source, Mapping):
        data: object = source
    else:
        try:
            data = read_config_file(source)
        except ConfigFileError as exc:
            raise MatviewConfigError(label, exc.problems) from None
    try:
        config = MatviewConfig.model_validate(data)
    except ValidationError as exc:
        raise MatviewConfigError(label, [_describe(error, data) for error in exc.errors()]) from None
    problems = _cross_view_problems(config)
    if problems:
        raise MatviewConfigError(label, problems)
    return config


def _describe(error: Mapping[str, Any], data: object) -> str:
    location = list(error["loc"])
    where = "file"
    if location[:1] == ["views"] and len(location) > 1 and isinstance(location[1], int):
        index = location[1]
        views = data.get("views") if isinstance(data, Mapping) else None
        raw = views[index] if isinstance(views, list) and index < len(views) else None
        name = raw.get("name") if isinstance(raw, Mapping) else None
        where = f"views[{index}]" + (f" ({printable(str(name))})" if name else "")
        location = location[2:]
    elif location[:1] == ["defaults"]:
        where, location = "defaults", location[1:]
    key = ".".join(str(part) for part in location)
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        levels: dict[str, type[BaseModel]] = {"file": MatviewConfig, "defaults": ViewSettings}
        level = levels.get(where, ViewConfig)
        close = difflib.get_close_matches(str(location[-1]), list(level.model_fields), n=1) if location else []
        message = "unknown key; " + (f"did you mean {close[0]}? " if close else "")
        message += f"allowed keys {'at the top level ' if where == 'file' else ''}are "
        message += ", ".join(sorted(level.model_fields))
    elif error["type"] == "too_short" and key == "views":
        message = "no views configured; list at least one under 'views:'"
    elif error["type"] == "missing":
        message = "required key is missing"
    elif error["type"] in ("model_type", "dict_type"):
        shown = repr(error.get("input"))[:60]
        message = (
            f"{shown} is not a mapping; write each view as '- name: schema.view' with its keys below it"
            if where.startswith("views[")
            else f"{shown} is not a mapping; write one 'key: value' per line under it"
        )
    elif error["type"] == "string_type" and isinstance(error.get("input"), bool | int | float):
        kind = "a boolean" if isinstance(error["input"], bool) else "a number"
        message = f"YAML reads this value unquoted as {kind}, {error['input']!r}; quote it to keep it as text"
    elif error["type"] == "time_delta_type" and error.get("input") is None:
        message = "is empty (null); write a duration such as 5m, or leave the key out for its default"
    elif error["type"] == "string_type" and error.get("input") is None:
        message = "is empty (null); write a value, " + (
            "or remove the item"
            if location and isinstance(location[-1], int)
            else "or leave the key out for its default"
        )
    elif error["type"] == "string_type":
        message = f"{repr(error.get('input'))[:60]} is not text; write one value, e.g. {key.split('.')[0]}: text"
    elif error["type"] == "list_type":
        example = {"views": "- name: schema.view", "after": "after: [public.a]", "tags": "tags: [reporting]"}
        message = f"{repr(error.get('input'))[:60]} is not a list; write e.g. {example.get(key, key + ': [...]')!r}"
        if key == "views":
            message += " for each view, one per line under 'views:'"
    return f"{where}: {key}: {message}" if key else f"{where}: {message}"


def _cross_view_problems(config: MatviewConfig) -> list[str]:
    problems: list[str] = []
    by_view: dict[tuple[str, QualifiedName], int] = {}
    by_dag_id: dict[str, int] = {}
    for index, view in enumerate(config.views):
        label = f"views[{index}] ({view.name})"
        if (first := by_view.setdefault(view.key, index)) != index:
            problems.append(
                f"{label}: name: {view.view} on connection {view.conn_id!r} is listed twice (also views[{first}]); "
                "list each view once"
            )
        dag_id = view.resolved_dag_id
        if (first := by_dag_id.setdefault(dag_id, index)) != index and config.views[first].key != view.key:
            problems.append(
                f"{label}: dag_id: DAG id {dag_id!r} is also the DAG id of views[{first}] "
                f"({config.views[first].name}); set a distinct dag_id on one of them"
            )
    for index, view in enumerate(config.views):
        for upstream in view.upstream:
            if (view.conn_id, upstream) not in by_view:
                problems.append(
                    f"views[{index}] ({view.name}): after: {upstream} is not a view in this file on connection "
                    f"{view.conn_id!r}; after: may only name views listed under 'views:' with the same conn_id"
                )
    problems += production.unused_on_stale(config.defaults, config.views)
    if not problems and (cycle := _find_cycle(config)):
        problems.append(f"after: views wait for each other in a cycle: {' -> '.join(cycle)}; remove one 'after:'")
    return problems


def _find_cycle(config: MatviewConfig) -> list[str] | None:
    graph = {view.key: view.upstream_keys for view in config.views}
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        return [str(name) for _, name in reversed(exc.args[1])]
    return None


@functools.lru_cache(maxsize=65536)
def _parse(name: str) -> QualifiedName:
    """A name as parsed, cached: each view's name is read several times while validating and building DAGs."""
    try:
        return parse_qualified_name(name)
    except InvalidIdentifierError as exc:
        raise ValueError(str(exc)) from None
