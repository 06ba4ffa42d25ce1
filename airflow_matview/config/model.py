"""The config file's model: ``defaults:`` and ``views:``, each key typed by its parser in :mod:`.fields`.

Reading it touches no database, network, Airflow connection or Variable: it is safe at DAG-parse time.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    model_validator,
)

from airflow_matview.config import field_schemas as schemas
from airflow_matview.config import fields
from airflow_matview.config.notifier_specs import NotifierSpec, parse_notifiers
from airflow_matview.text import format_seconds
from airflow_matview.version_compat import (
    AIRFLOW_VERSION,
    HAS_EVENT_DRIVEN_SCHEDULING,
    START_FROM_TRIGGER_MISSING,
)

if TYPE_CHECKING:
    from airflow_matview.database.identifiers import QualifiedName


def _duration(name: str, *, positive: bool = False) -> BeforeValidator:
    return BeforeValidator(
        lambda value: value if value is None else fields.parse_duration(value, name, positive=positive)
    )


def _flag(name: str) -> PlainValidator:
    return PlainValidator(lambda value: fields.parse_flag(value, name))


def _notifiers_or_none(value: object) -> tuple[NotifierSpec, ...] | None:
    return None if value is None else parse_notifiers(value)


Notifiers = Annotated[tuple[NotifierSpec, ...], PlainValidator(parse_notifiers)]


class ViewSettings(BaseModel):
    """Settings any view may have; ``defaults:`` sets them for every view."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    conn_id: Annotated[
        str,
        AfterValidator(fields.check_conn_id),
        WithJsonSchema(schemas.CONN_ID),
        Field(
            description="The Airflow connection to the view's database, of type `postgres`. Never a URI or DSN: "
            "credentials live in Airflow connections, not in this file."
        ),
    ] = "postgres_default"
    schedule: Annotated[
        str | None,
        AfterValidator(fields.parse_schedule),
        WithJsonSchema(schemas.SCHEDULE),
        Field(
            description="When the DAG runs: a 5-field cron expression (read in `timezone`), a preset (`@once`, "
            "`@continuous`, `@hourly`, `@daily`, `@weekly`, `@monthly`, `@quarterly`, `@yearly`), or `null` for "
            "manual runs only. A cron that never fires (`0 0 31 2 *`), picks a random time (`R`) or has a range with "
            "equal ends (`0 3-3 * * *`) is an error; presets are lower case. A view with `after:` and no `schedule:` "
            "of its own runs only after its upstream views; one with `on_change` and no `schedule:` of its own or "
            "in `defaults:`, only when its sources change."
        ),
    ] = "@daily"
    concurrently: Annotated[
        Literal["auto"] | bool,
        PlainValidator(fields.parse_concurrently),
        WithJsonSchema(schemas.CONCURRENTLY),
        Field(
            description="`auto` uses `REFRESH ... CONCURRENTLY` when it can work (the view is populated and has a "
            "unique index on plain columns without a `WHERE` clause) and a plain refresh otherwise, logging why; "
            "`true` requires it and fails with the reason and the fix; `false` always runs a plain refresh, which "
            "blocks the view's readers while it runs."
        ),
    ] = "auto"
    retries: Annotated[
        int,
        BeforeValidator(fields.parse_retries),
        Field(
            ge=0,
            le=fields.MAX_RETRIES,
            description="Airflow retries of a failed refresh, 0 to 1000. Only failures a retry may cure are "
            "retried (a lock timeout, a lost connection, a server restart...).",
        ),
        WithJsonSchema(schemas.RETRIES),
    ] = 2
    retry_delay: Annotated[
        timedelta,
        _duration("retry_delay"),
        WithJsonSchema(schemas.duration()),
        Field(description="The wait before a retry; `0` retries at once."),
    ] = timedelta(minutes=5)
    retry_exponential_backoff: Annotated[
        bool,
        _flag("retry_exponential_backoff"),
        WithJsonSchema(schemas.FLAG),
        Field(description="Wait longer after each failed try (Airflow's `retry_exponential_backoff`)."),
    ] = False
    execution_timeout: Annotated[
        timedelta | None,
        _duration("execution_timeout", positive=True),
        WithJsonSchema(schemas.nullable(schemas.duration(minimum=0.001))),
        Field(
            description="The longest a refresh task may run, also sent to PostgreSQL as `statement_timeout`: at "
            "least `1ms`, or `null` for no limit. On expiry the statement is cancelled and rolled back, and Airflow "
            "retries."
        ),
    ] = timedelta(hours=1)
    lock_timeout: Annotated[
        timedelta | None,
        _duration("lock_timeout", positive=True),
        WithJsonSchema(schemas.nullable(schemas.duration(minimum=0.001))),
        Field(
            description="The longest wait for the view's lock, and for another refresh of the same view to finish: "
            "at least `1ms`, or `null` to wait without limit. On expiry the task fails naming the blocking session, "
            "and Airflow retries."
        ),
    ] = timedelta(minutes=1)
    analyze: Annotated[
        bool,
        _flag("analyze"),
        WithJsonSchema(schemas.FLAG),
        Field(description="Run `ANALYZE` on the view after each refresh, in the same transaction."),
    ] = False
    on_overlap: Annotated[
        Literal["wait", "skip", "fail"],
        WithJsonSchema(schemas.ON_OVERLAP),
        Field(
            description="When another refresh of the same view is running (another DAG run, a manual run, a psql "
            "session using this operator): `wait` for it (up to `lock_timeout`), `skip` this run (the task ends "
            "skipped), or `fail` it."
        ),
    ] = "wait"
    skip_if_unchanged: Annotated[
        bool,
        _flag("skip_if_unchanged"),
        WithJsonSchema(schemas.FLAG),
        Field(
            description="Skip the refresh when none of the view's sources changed since its last successful "
            "refresh; the task ends skipped and emits no asset event."
        ),
    ] = False
    history: Annotated[
        str | None,
        PlainValidator(fields.parse_history_table),
        WithJsonSchema(schemas.nullable(schemas.HISTORY_TABLE)),
        Field(
            description="Record each refresh in this table of the view's database, `schema.table` (opt-in; "
            "`airflow-matview history init` creates it and the view `<table>_latest` beside it): a success row in "
            "the refresh's own transaction, a skip or failure row after it; `null` records nothing."
        ),
    ] = None
    history_retention: Annotated[
        timedelta | None,
        _duration("history_retention", positive=True),
        WithJsonSchema(schemas.nullable(schemas.duration(minimum=1))),
        Field(
            description="With `history`: delete the view's history rows older than this, in small batches after "
            "each refresh (never blocking one); `null` keeps every row."
        ),
    ] = None
    # Deferrable refreshes: the refresh runs in the triggerer instead of holding a worker slot.
    deferrable: Annotated[
        bool,
        _flag("deferrable"),
        WithJsonSchema(schemas.FLAG),
        Field(
            description="Run the refresh in Airflow's triggerer instead of holding a worker slot; needs a running "
            "triggerer."
        ),
    ] = False
    # Refresh without a worker: the task starts in the triggerer and, where it can, ends there.
    start_from_trigger: Annotated[
        bool,
        _flag("start_from_trigger"),
        WithJsonSchema(schemas.FLAG),
        Field(
            description="Start the refresh in Airflow's triggerer, without a worker (Airflow's own "
            "`start_from_trigger`; Airflow 3.3+, a running triggerer): a successful or skipped refresh ends there, "
            "with its XCom and `on_success` notifiers; a failure, and a success whose asset event a DAG waits for "
            "(a view of this file with `after:` it, or `finish_on_worker`), are finished by a worker. Airflow pools "
            "do not apply to such a task, so `pool:` is refused with it."
        ),
    ] = False
    finish_on_worker: Annotated[
        bool,
        _flag("finish_on_worker"),
        WithJsonSchema(schemas.FLAG),
        Field(
            description="With `start_from_trigger`: finish every successful refresh on a worker, so that Airflow "
            "registers the view's asset event for DAGs outside this file scheduled on it (views of this file that "
            "follow it with `after:` get it without this key)."
        ),
    ] = False
    tags: Annotated[
        list[str],
        AfterValidator(fields.check_tags),
        WithJsonSchema(schemas.TAGS),
        Field(description="The DAG's tags, each 1 to 100 characters on one line; `matview` is always added."),
    ] = Field(default_factory=lambda: ["matview"])
    owner: Annotated[
        str,
        AfterValidator(fields.check_owner),
        WithJsonSchema(schemas.OWNER),
        Field(
            description="The DAG's owner: the team or person who looks after it, on one line, at most 500 characters."
        ),
    ] = "airflow"
    timezone: Annotated[
        str,
        PlainValidator(fields.parse_timezone),
        WithJsonSchema(schemas.TIMEZONE),
        Field(
            description="The IANA time zone the cron schedule is read in (`Europe/Berlin`, `America/New_York`). An "
            "unknown name is an error suggesting the closest valid one; `EST` and `MST`, fixed offsets without "
            "daylight saving time, are refused."
        ),
    ] = "UTC"
    on_failure: Annotated[
        Notifiers,
        WithJsonSchema(schemas.nullable(schemas.NOTIFIERS)),
        Field(
            description="Notifiers called when the refresh task fails for good: a list of mappings, each with "
            "`notifier:` (the dotted path of an Airflow `BaseNotifier` subclass, or of a function called with the "
            "task context) and the keyword arguments it takes; `null` or `[]` for none."
        ),
    ] = ()
    on_retry: Annotated[
        Notifiers,
        WithJsonSchema(schemas.nullable(schemas.NOTIFIERS)),
        Field(description="Notifiers called when the refresh fails and will be retried (as `on_failure`)."),
    ] = ()
    on_success: Annotated[
        Notifiers,
        WithJsonSchema(schemas.nullable(schemas.NOTIFIERS)),
        Field(description="Notifiers called when the refresh succeeds (as `on_failure`)."),
    ] = ()
    on_stale: Annotated[
        tuple[NotifierSpec, ...] | None,
        PlainValidator(_notifiers_or_none),
        WithJsonSchema(schemas.nullable(schemas.NOTIFIERS)),
        Field(
            description="Notifiers called when the view's lag goes over `max_staleness` (else `target_lag`) and "
            "when it is back within it (as `on_failure`); `null`: the `on_failure` notifiers. An error on a view "
            "without either, where it would never be called."
        ),
    ] = None
    max_staleness: Annotated[
        timedelta | None,
        PlainValidator(fields.parse_max_staleness),
        WithJsonSchema(schemas.nullable(schemas.duration(minimum=1))),
        Field(
            description="When the view's lag (how far behind its sources it is, as `target_lag` measures it) goes "
            "over this, the `on_stale` notifiers are told, once until it is back within it; measured by the "
            "triggerer whether or not a run exists. At least `1s`, not shorter than `target_lag`; `null` for no "
            "staleness alert (a view with `target_lag` is then alerted on at its target)."
        ),
    ] = None
    pool: Annotated[
        str | None,
        PlainValidator(fields.parse_pool),
        WithJsonSchema(schemas.nullable(schemas.POOL_OR_QUEUE)),
        Field(
            description="The Airflow pool the refresh task runs in (up to 256 letters, digits, `_`, `.` and `-`); "
            "`null`: Airflow's `default_pool`. Create it first: Airflow never runs a task whose pool does not exist."
        ),
    ] = None
    pool_slots: Annotated[
        int,
        PlainValidator(fields.parse_pool_slots),
        WithJsonSchema(schemas.POOL_SLOTS),
        Field(description="How many slots of its pool the refresh task takes: 1 or more."),
    ] = 1
    priority_weight: Annotated[
        int,
        PlainValidator(fields.parse_priority_weight),
        WithJsonSchema(schemas.PRIORITY_WEIGHT),
        Field(description="Which waiting refresh gets a free slot first: higher first."),
    ] = 1
    queue: Annotated[
        str | None,
        PlainValidator(fields.parse_queue),
        WithJsonSchema(schemas.nullable(schemas.POOL_OR_QUEUE)),
        Field(
            description="The executor queue (e.g. Celery workers near the database); `null`: the executor's default."
        ),
    ] = None
    description: Annotated[
        str | None,
        PlainValidator(fields.parse_description),
        WithJsonSchema(schemas.nullable(schemas.DESCRIPTION)),
        Field(
            description="Free text shown next to the DAG in the UI, at the top of its doc, and in `validate`'s "
            "`DESCRIPTION` column; at most 1000 characters; line breaks and tabs are fine, other control characters "
            "are refused."
        ),
    ] = None
    # Refresh on change: a watcher in the triggerer polls the sources' change signals.
    on_change: Annotated[
        bool,
        _flag("on_change"),
        WithJsonSchema(schemas.FLAG),
        Field(
            description="Also refresh when the view's sources change, as seen by a watcher in Airflow's triggerer; "
            "without a `schedule:` of its own (or in `defaults:`) such a view runs only then."
        ),
    ] = False
    poll_interval: Annotated[
        timedelta,
        BeforeValidator(fields.parse_poll_interval),
        WithJsonSchema(schemas.duration(minimum=1)),
        Field(
            description="With `on_change` (or `target_lag`, `max_staleness`: the lag monitor's polls): how often the "
            "triggerer reads the sources' change signals; at least 1s. Refused on a view without any of them (and in "
            "`defaults:` when no view has one)."
        ),
    ] = timedelta(seconds=10)
    min_interval: Annotated[
        timedelta,
        _duration("min_interval"),
        WithJsonSchema(schemas.duration()),
        Field(
            description="With `on_change`: at most one run per this long, however many changes. With `target_lag` "
            "and no `min_interval` set, no such floor: the target decides."
        ),
    ] = timedelta(minutes=1)
    target_lag: Annotated[
        timedelta | None,
        PlainValidator(fields.parse_target_lag),
        WithJsonSchema(schemas.nullable(schemas.duration(minimum=1))),
        Field(
            description="How far behind its sources the view may be (its lag: 0 when it reflects every committed "
            "change, else the time since the oldest change it does not reflect was seen). The triggerer watches the "
            "sources (as `on_change`) and starts a refresh once changes have waited as long as the target allows, "
            "given the view's measured refresh time; never while nothing changed. A view whose sources cannot be "
            "watched is refreshed on a period derived from the target. Longer than `poll_interval`; `null`: none."
        ),
    ] = None

    @property
    def watched(self) -> bool:
        """Whether a watcher in the triggerer starts this view's runs: ``on_change`` or ``target_lag``."""
        return self.on_change or self.target_lag is not None

    @property
    def watch_min_interval(self) -> timedelta:
        """The watcher's floor between two runs: ``min_interval``; with ``target_lag``, only when set."""
        if self.target_lag is not None and "min_interval" not in self.model_fields_set:
            return timedelta(0)
        return self.min_interval

    @property
    def stale_notifiers(self) -> tuple[NotifierSpec, ...]:
        """Who is told when the view is stale: ``on_stale``, by default the ``on_failure`` notifiers."""
        return self.on_failure if self.on_stale is None else self.on_stale


class ViewConfig(ViewSettings):
    """One materialized view to keep fresh: one DAG."""

    name: Annotated[
        str,
        AfterValidator(fields.check_view_name),
        WithJsonSchema(schemas.VIEW_NAME),
        Field(
            description="The materialized view, `schema.name` as written in SQL: unquoted parts fold to lower case, "
            "so quote parts with capitals, spaces or dots, and wrap a name that starts with a double quote in "
            'single quotes (`\'"Sales Report"."Q1 Totals"\'`).'
        ),
    ]
    after: Annotated[
        list[str],
        AfterValidator(fields.check_view_names),
        WithJsonSchema(schemas.VIEW_NAMES),
        Field(
            default_factory=list,
            description="Views of this file, on the same `conn_id`, that this one is built on: its DAG runs after "
            "each successful refresh of any of them (Airflow assets). Without a `schedule:` of its own such a view "
            "runs only then; with one, on either.",
        ),
    ]
    dag_id: Annotated[
        str | None,
        AfterValidator(fields.check_dag_id),
        WithJsonSchema(schemas.nullable(schemas.DAG_ID)),
        Field(
            description="The DAG's id; `null`: `matview.<schema>.<name>` with every character outside "
            "`[A-Za-z0-9_.-]` replaced by `_`. Two views with the same DAG id are an error."
        ),
    ] = None

    @model_validator(mode="after")
    def _keys_combine(self) -> ViewConfig:
        """Refuse keys of one view (its defaults merged in) that cannot work together or here."""
        if self.after and self.schedule in ("@once", "@continuous"):
            raise ValueError(f"schedule: {self.schedule} cannot be combined with after:; use a cron expression or null")
        if self.watched:
            key = "on_change" if self.on_change else "target_lag"
            if not HAS_EVENT_DRIVEN_SCHEDULING:
                raise ValueError(
                    f"{key}: Airflow {AIRFLOW_VERSION} has no event-driven scheduling (AssetWatcher, "
                    "BaseEventTrigger); use a schedule, or upgrade Airflow"
                )
            if self.schedule in ("@once", "@continuous"):
                raise ValueError(
                    f"schedule: {self.schedule} cannot be combined with {key}; use a cron expression or null"
                )
        self._check_target_lag()
        if self.start_from_trigger:
            if START_FROM_TRIGGER_MISSING:
                raise ValueError(START_FROM_TRIGGER_MISSING)
            if self.pool is not None:
                raise ValueError(
                    f"pool: {self.pool} cannot be combined with start_from_trigger: Airflow applies no pool to a task "
                    "that starts in the triggerer (the scheduler defers it before it checks pools); remove pool (the "
                    "triggerer opens at most [matview] triggerer_max_connections connections per conn_id) or "
                    "start_from_trigger"
                )
        if self.history_retention is not None and self.history is None:
            raise ValueError("history_retention: the view records no history; set history: <schema>.<table> too")
        if self.max_staleness is not None and self.target_lag is not None and self.max_staleness < self.target_lag:
            raise ValueError(
                f"max_staleness: {format_seconds(self.max_staleness.total_seconds())} is shorter than target_lag "
                f"{format_seconds(self.target_lag.total_seconds())}, so the view would be called stale while on "
                "target; lengthen max_staleness or remove it (the target_lag is then the alert's threshold)"
            )
        if self.max_staleness is not None and not self.stale_notifiers:
            raise ValueError(
                "max_staleness: no notifier would be told when the view is stale; list them under on_stale "
                "(or on_failure, which on_stale defaults to)"
            )
        return self

    def _check_target_lag(self) -> None:
        """Refuse a ``target_lag`` that the watcher cannot meet by construction."""
        if self.target_lag is None:
            return
        target = format_seconds(self.target_lag.total_seconds())
        if self.poll_interval >= self.target_lag:
            raise ValueError(
                f"target_lag: {target} is not longer than poll_interval "
                f"{format_seconds(self.poll_interval.total_seconds())}, and a change is seen up to one poll_interval "
                "after its commit; lengthen target_lag or shorten poll_interval"
            )
        if self.watch_min_interval >= self.target_lag:
            raise ValueError(
                f"min_interval: {format_seconds(self.min_interval.total_seconds())} keeps runs further apart than "
                f"target_lag {target} allows; shorten min_interval or remove it (the target then decides)"
            )

    @property
    def view(self) -> QualifiedName:
        return fields.parse_view_name(self.name)

    @property
    def upstream(self) -> list[QualifiedName]:
        return [fields.parse_view_name(name) for name in self.after]

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
        return self.dag_id or fields.default_dag_id(self.view)


class MatviewConfig(BaseModel):
    """The whole file: ``defaults`` and ``views``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: Annotated[
        ViewSettings,
        Field(
            default_factory=lambda: ViewSettings(),
            description="Settings for every view; a view's own keys override them. May be empty.",
        ),
    ]
    views: list[ViewConfig] = Field(
        min_length=1, description="The materialized views to keep fresh, one DAG each: at least one."
    )

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
        except ValueError:
            return data  # reported once, under 'defaults', rather than again for every view
        merged = [_with_defaults(defaults, view) if isinstance(view, Mapping) else view for view in views]
        return {**data, "views": merged}


def _with_defaults(defaults: Mapping[str, Any], view: Mapping[str, Any]) -> dict[str, Any]:
    merged = {**defaults, **view}
    if view.get("after") and "schedule" not in view:
        merged["schedule"] = None  # a view with after: runs when its upstream views refresh, unless told otherwise
    on_change = "on_change" in merged and fields.flag_set(merged["on_change"])
    on_change = on_change or merged.get("target_lag") is not None
    if on_change and "schedule" not in view and "schedule" not in defaults:
        merged["schedule"] = None  # likewise, a view with on_change: true or a target_lag runs on its sources' changes
    return merged
