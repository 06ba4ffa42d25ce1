"""The config file's model: ``defaults:`` and ``views:``, each key typed by its parser in :mod:`.fields`.

Reading it touches no database, network, Airflow connection or Variable: it is safe at DAG-parse time.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, model_validator

from airflow_matview.config import fields
from airflow_matview.config.notifier_specs import NotifierSpec, parse_notifiers
from airflow_matview.version_compat import AIRFLOW_VERSION, HAS_EVENT_DRIVEN_SCHEDULING

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

    conn_id: Annotated[str, AfterValidator(fields.check_conn_id)] = "postgres_default"
    schedule: Annotated[str | None, AfterValidator(fields.parse_schedule)] = "@daily"
    concurrently: Annotated[Literal["auto"] | bool, PlainValidator(fields.parse_concurrently)] = "auto"
    retries: Annotated[int, BeforeValidator(fields.parse_retries), Field(ge=0, le=fields.MAX_RETRIES)] = 2
    retry_delay: Annotated[timedelta, _duration("retry_delay")] = timedelta(minutes=5)
    retry_exponential_backoff: Annotated[bool, _flag("retry_exponential_backoff")] = False
    execution_timeout: Annotated[timedelta | None, _duration("execution_timeout", positive=True)] = timedelta(hours=1)
    lock_timeout: Annotated[timedelta | None, _duration("lock_timeout", positive=True)] = timedelta(minutes=1)
    analyze: Annotated[bool, _flag("analyze")] = False
    on_overlap: Literal["wait", "skip", "fail"] = "wait"
    skip_if_unchanged: Annotated[bool, _flag("skip_if_unchanged")] = False
    # Deferrable refreshes: the refresh runs in the triggerer instead of holding a worker slot.
    deferrable: Annotated[bool, _flag("deferrable")] = False
    tags: Annotated[list[str], AfterValidator(fields.check_tags)] = Field(default_factory=lambda: ["matview"])
    owner: Annotated[str, AfterValidator(fields.check_owner)] = "airflow"
    timezone: Annotated[str, PlainValidator(fields.parse_timezone)] = "UTC"
    on_failure: Notifiers = ()
    on_retry: Notifiers = ()
    on_success: Notifiers = ()
    on_stale: Annotated[tuple[NotifierSpec, ...] | None, PlainValidator(_notifiers_or_none)] = None
    max_staleness: Annotated[timedelta | None, PlainValidator(fields.parse_max_staleness)] = None
    pool: Annotated[str | None, PlainValidator(fields.parse_pool)] = None
    pool_slots: Annotated[int, PlainValidator(fields.parse_pool_slots)] = 1
    priority_weight: Annotated[int, PlainValidator(fields.parse_priority_weight)] = 1
    queue: Annotated[str | None, PlainValidator(fields.parse_queue)] = None
    description: Annotated[str | None, PlainValidator(fields.parse_description)] = None
    # Refresh on change: a watcher in the triggerer polls the sources' change signals.
    on_change: Annotated[bool, _flag("on_change")] = False
    poll_interval: Annotated[timedelta, _duration("poll_interval", positive=True)] = timedelta(seconds=10)
    min_interval: Annotated[timedelta, _duration("min_interval")] = timedelta(minutes=1)

    @property
    def stale_notifiers(self) -> tuple[NotifierSpec, ...]:
        """Who is told when the view is stale: ``on_stale``, by default the ``on_failure`` notifiers."""
        return self.on_failure if self.on_stale is None else self.on_stale


class ViewConfig(ViewSettings):
    """One materialized view to keep fresh: one DAG."""

    name: Annotated[str, AfterValidator(fields.check_view_name)]
    after: Annotated[list[str], AfterValidator(fields.check_view_names), Field(default_factory=list)]
    dag_id: Annotated[str | None, AfterValidator(fields.check_dag_id)] = None

    @model_validator(mode="after")
    def _keys_combine(self) -> ViewConfig:
        """Refuse keys of one view (its defaults merged in) that cannot work together or here."""
        if self.after and self.schedule in ("@once", "@continuous"):
            raise ValueError(f"schedule: {self.schedule} cannot be combined with after:; use a cron expression or null")
        if self.on_change:
            if not HAS_EVENT_DRIVEN_SCHEDULING:
                raise ValueError(
                    f"on_change: Airflow {AIRFLOW_VERSION} has no event-driven scheduling (AssetWatcher, "
                    "BaseEventTrigger); use a schedule, or upgrade Airflow"
                )
            if self.schedule in ("@once", "@continuous"):
                raise ValueError(
                    f"schedule: {self.schedule} cannot be combined with on_change; use a cron expression or null"
                )
        if self.max_staleness is not None and not self.stale_notifiers:
            raise ValueError(
                "max_staleness: no notifier would be told when the view is stale; list them under on_stale "
                "(or on_failure, which on_stale defaults to)"
            )
        return self

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

    defaults: Annotated[ViewSettings, Field(default_factory=lambda: ViewSettings())]
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
        except ValueError:
            return data  # reported once, under 'defaults', rather than again for every view
        merged = [_with_defaults(defaults, view) if isinstance(view, Mapping) else view for view in views]
        return {**data, "views": merged}


def _with_defaults(defaults: Mapping[str, Any], view: Mapping[str, Any]) -> dict[str, Any]:
    merged = {**defaults, **view}
    if view.get("after") and "schedule" not in view:
        merged["schedule"] = None  # a view with after: runs when its upstream views refresh, unless told otherwise
    on_change = "on_change" in merged and fields.flag_set(merged["on_change"])
    if on_change and "schedule" not in view and "schedule" not in defaults:
        merged["schedule"] = None  # likewise, a view with on_change: true runs when its sources change
    return merged
