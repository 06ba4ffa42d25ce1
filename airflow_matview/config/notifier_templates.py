"""Rendering every notifier template once when the config is read, so that a template that parses but cannot render
(an unknown filter, ``{{ matview.typo }}``, an ``{% include %}`` of a missing file, a filter that raises) is a
config error naming the view and the key, not a notification lost when the event happens.

Each template field a ``BaseNotifier`` is given (our default subject and message included) is compiled and rendered
with Airflow's own template environment (the sandbox, Airflow's filters, ``StrictUndefined`` as a DAG has it)
against a sample context of the shape the event gets: for a task event (``on_failure``, ``on_retry``,
``on_success``) the task context (``ti``, ``dag_run``, ``params``, ``ds``, ``macros``...); for ``on_stale`` what
the lag monitor sends from the triggerer (no task, no run); both with ``matview`` as
:mod:`airflow_matview.config.notification` describes the event, and ``var`` and ``conn`` accessors that answer any
name without touching Airflow's database. A name the context lacks fails, as it would when the event happens.
Functions are given their arguments as written, so there is nothing to render.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow_matview.config.notification import describe, describe_lag, lag_event, with_default_message
from airflow_matview.config.notifier_specs import NotifierSpec, loaded_notifier
from airflow_matview.text import one_line

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

    import jinja2

    from airflow_matview.config.model import MatviewConfig, ViewConfig, ViewSettings

_SAMPLE_TIME = datetime(2026, 1, 1, 6, 0, tzinfo=timezone.utc)
_RUN_ID = "scheduled__2026-01-01T06:00:00+00:00"
# The keys of the run a missed deadline's context carries: Airflow's DAGRunResponse as JSON (models/deadline.py
# handle_miss); a unit test compares them with Airflow's model, which the API server's imports make too slow to
# read at parse time.
STALE_RUN_KEYS = (
    "bundle_version",
    "conf",
    "dag_display_name",
    "dag_id",
    "dag_run_id",
    "dag_versions",
    "data_interval_end",
    "data_interval_start",
    "duration",
    "end_date",
    "last_scheduling_decision",
    "logical_date",
    "note",
    "partition_date",
    "partition_key",
    "queued_at",
    "run_after",
    "run_type",
    "start_date",
    "state",
    "triggered_by",
    "triggering_user_name",
)
# The view the sample context describes: its view, connection and DAG id.
_SAMPLE_VIEW = ("public.sample_view", "postgres_default", "matview.public.sample_view")
_TASK_STATES = {"failure": "failed", "retry": "up_for_retry", "success": "success"}
# Attributes Jinja's sandbox asks a value for, which no sample value may claim to have.
_SANDBOX_PROBES = frozenset({"unsafe_callable", "alters_data", "jinja_pass_arg", "jinja_async_variant"})


def template_problems(config: MatviewConfig, folder: Path | None) -> list[str]:
    """One line per template that cannot be rendered, naming the view (or ``defaults``), the key, the notifier and
    the argument; each distinct notifier is rendered once per event.

    :param config: the validated config.
    :param folder: the config file's folder, where ``{% include %}`` looks (the DAG folder, when the file sits with
        its DAG file); ``None`` for a config given as a mapping, whose includes are not checked.
    """
    problems: list[str] = []
    for index, view in enumerate(config.views):
        for key, event, number, spec in _notifiers(view):
            for problem in _problems(spec, event, folder):
                where = "defaults" if _inherited(config.defaults, view, key) else f"views[{index}] ({view.name})"
                line = f"{where}: {key}: item {number}: {spec.path}: {problem}"
                if line not in problems:
                    problems.append(line)
    return problems


def _notifiers(view: ViewConfig) -> Iterator[tuple[str, str, int, NotifierSpec]]:
    """``(key, event, item number, spec)`` of each notifier the view calls."""
    for event in ("failure", "retry", "success"):
        for number, spec in enumerate(getattr(view, f"on_{event}"), 1):
            yield f"on_{event}", event, number, spec
    if view.max_staleness is not None or view.target_lag is not None:
        key = "on_stale" if view.on_stale is not None else "on_failure (as on_stale)"
        alert_key = "max_staleness" if view.max_staleness is not None else "target_lag"
        for event in ("behind", "caught_up"):
            for number, spec in enumerate(view.stale_notifiers, 1):
                yield key, lag_event(event, alert_key), number, spec


def _inherited(defaults: ViewSettings, view: ViewConfig, key: str) -> bool:
    name = key.split()[0]
    return bool(getattr(defaults, name)) and getattr(defaults, name) == getattr(view, name)


def _problems(spec: NotifierSpec, event: str, folder: Path | None) -> tuple[str, ...]:
    """Why each template field of this notifier cannot be rendered for ``event``: worked out once per notifier and
    event (a config repeats its notifiers for every view; the view's name, text in the facts, does not change
    whether a template renders). Its arguments' ``repr`` is the key: they are plain values."""
    key = (spec.path, repr(spec.kwargs), event, folder)
    if key not in _RENDERED:
        _RENDERED[key] = _rendered(spec, event, folder)
    return _RENDERED[key]


_RENDERED: dict[tuple[str, str, str, Path | None], tuple[str, ...]] = {}

#: The events of the lag monitor's notifications (:func:`~airflow_matview.config.notification.lag_event`): sent
#: from the triggerer, with no task or run in their context.
LAG_EVENTS = ("stale", "fresh_again", "behind", "caught_up")


def _rendered(spec: NotifierSpec, event: str, folder: Path | None) -> tuple[str, ...]:
    target = loaded_notifier(spec.path)
    if not target.is_notifier_class:
        return ()
    given = with_default_message(spec)
    fields = [name for name in getattr(target.obj, "template_fields", ()) if name in given]
    context = sample_context(event, *_SAMPLE_VIEW) | {name: given[name] for name in fields}
    env = _environment(folder, event in LAG_EVENTS)
    problems = []
    for name in fields:
        try:
            _render(env, given[name], tuple(getattr(target.obj, "template_ext", ())), context)
        except Exception as error:
            problems.append(f"{name}: {_describe(error, event)}; the notification would be lost when the event happens")
    return tuple(problems)


def _render(env: jinja2.Environment, value: object, extensions: tuple[str, ...], context: Mapping[str, Any]) -> None:
    """Render ``value`` as Airflow renders a template field (``Templater.render_template``): text, or each item."""
    if isinstance(value, str):
        if extensions and value.endswith(extensions):
            env.get_template(value).render(context)
        elif any(mark in value for mark in ("{{", "{%", "{#")):
            env.from_string(value).render(context)
    elif isinstance(value, list | tuple | set):
        for item in value:
            _render(env, item, extensions, context)
    elif isinstance(value, dict):
        for item in value.values():
            _render(env, item, extensions, context)


def _describe(error: Exception, event: str) -> str:
    import jinja2

    if isinstance(error, jinja2.TemplateNotFound):
        return f"the template file {error.name!r} is not in the config file's folder, where the DAG looks for it"
    if isinstance(error, TypeError) and "no loader" in str(error):
        return "on_stale is rendered in the triggerer, where a template cannot include or import a file"
    if isinstance(error, jinja2.TemplateSyntaxError):
        return f"the Jinja template does not compile ({one_line(error.message or error)}, line {error.lineno})"
    if event in LAG_EVENTS:
        what = "a stale alert" if event in ("stale", "fresh_again") else "a lag alert"
    else:
        what = f"a task {event}"
    detail = (
        one_line(error) if isinstance(error, jinja2.TemplateError) else f"{type(error).__name__}: {one_line(error)}"
    )
    return f"the template cannot be rendered for {what} ({detail[:200]})"


@functools.lru_cache(maxsize=64)
def _environment(folder: Path | None, stale: bool) -> jinja2.Environment:
    """Airflow's template environment as a DAG of ours has it (sandboxed, Airflow's filters, StrictUndefined),
    looking for included files in ``folder``; without a loader for ``on_stale``, as in the triggerer."""
    import jinja2
    from airflow.sdk import DAG

    env = DAG(dag_id="matview_template_check", schedule=None).get_template_env(force_sandboxed=True)
    if stale:
        env.loader = None
    elif folder is None:
        env.loader = jinja2.FunctionLoader(lambda name: "")  # a config given as a mapping: includes are not checked
    else:
        env.loader = jinja2.FileSystemLoader([str(folder)])
    return env


def sample_context(event: str, view: str, conn_id: str, dag_id: str) -> dict[str, Any]:
    """A context of the shape ``event``'s notifiers get, with sample values (see the module's doc)."""
    accessors = {
        "var": _sample("var", {"value": _Anything("var.value"), "json": _Anything("var.json")}),
        "conn": _Conn(),
    }
    if event in LAG_EVENTS:
        alert_key = "max_staleness" if event in ("stale", "fresh_again") else "target_lag"
        behind = event in ("stale", "behind")
        context: dict[str, Any] = {
            "matview": describe_lag(
                "behind" if behind else "caught_up",
                view,
                conn_id,
                dag_id,
                lag={"seconds": 3900.0 if behind else 0.0, "basis": "sources", "since": _SAMPLE_TIME.timestamp()},
                target=1800.0,
                reason="its sources changed at 2026-01-01T00:00:00+00:00; a run is queued and has not started"
                if behind
                else None,
                alert_after=3600.0,
                alert_key=alert_key,
            )
        }
        context["matview"]["measured_at"] = _SAMPLE_TIME.timestamp()
        return context | accessors
    context = _task_context(event, dag_id) | accessors
    context["matview"] = describe(event, view, conn_id, context)
    return context


def _task_context(event: str, dag_id: str) -> dict[str, Any]:
    from airflow.sdk.execution_time import macros
    from airflow.sdk.types import DagRunProtocol, RuntimeTaskInstanceProtocol

    from airflow_matview.exceptions import MatviewRefreshError

    ti = _sample(
        "ti",
        {
            "dag_id": dag_id,
            "task_id": "refresh",
            "run_id": _RUN_ID,
            "try_number": 1,
            "max_tries": 2,
            "map_index": -1,
            "state": _TASK_STATES[event],
            "start_date": _SAMPLE_TIME,
            "end_date": _SAMPLE_TIME + timedelta(minutes=1),
            "log_url": f"http://localhost:8080/dags/{dag_id}/runs/{_RUN_ID}/tasks/refresh",
        },
        _names(RuntimeTaskInstanceProtocol),
    )
    dag_run = _sample(
        "dag_run",
        {"dag_id": dag_id, "run_id": _RUN_ID, "run_type": "scheduled", "conf": {}, "logical_date": _SAMPLE_TIME},
        _names(DagRunProtocol),
    )
    context: dict[str, Any] = {
        "ti": ti,
        "task_instance": ti,
        "dag_run": dag_run,
        "run_id": _RUN_ID,
        "try_number": 1,
        "params": {"concurrently": "auto", "analyze": False},
        "macros": macros,
        "logical_date": _SAMPLE_TIME,
        "data_interval_start": _SAMPLE_TIME,
        "data_interval_end": _SAMPLE_TIME,
        "ds": _SAMPLE_TIME.strftime("%Y-%m-%d"),
        "ds_nodash": _SAMPLE_TIME.strftime("%Y%m%d"),
        "ts": _SAMPLE_TIME.isoformat(),
        "ts_nodash": _SAMPLE_TIME.strftime("%Y%m%dT%H%M%S"),
        "ts_nodash_with_tz": _SAMPLE_TIME.isoformat().replace("-", "").replace(":", ""),
        "task_instance_key_str": f"{dag_id}__refresh__20260101",
        "test_mode": False,
        "inlets": [],
        "outlets": [],
        "triggering_asset_events": {},
    }
    for name in ("dag", "task", "outlet_events", "inlet_events", "task_state_store", "asset_state_store"):
        context[name] = _Anything(name)
    for name in ("prev_data_interval_start_success", "prev_data_interval_end_success", "prev_start_date_success"):
        context[name] = _SAMPLE_TIME
    context |= dict.fromkeys(("prev_end_date_success", "expanded_ti_count", "map_index_template", "templates_dict"))
    context |= dict.fromkeys(("partition_key", "partition_date", "reason"))
    if event != "success":
        context["exception"] = MatviewRefreshError("sample error of the refresh")
    return context


def _sample(name: str, values: Mapping[str, Any], names: frozenset[str] = frozenset()) -> Any:
    """A :class:`_Sample` whose class Jinja names ``name`` in a message (``'ti object' has no attribute 'x'``)."""
    return type(name, (_Sample,), {"__module__": "builtins"})(name, values, names)


def _names(protocol: type) -> frozenset[str]:
    return frozenset(getattr(protocol, "__annotations__", {})) | {n for n in vars(protocol) if not n.startswith("_")}


class _Anything(str):
    """A value the sample cannot know (a Variable, a Connection's field, what Airflow fills in at run time): text
    that answers any attribute, item, call and operator, so that only a name missing from the context fails.

    :param name: where it comes from, e.g. ``var.value.x``.
    """

    def __new__(cls, name: str) -> _Anything:
        return super().__new__(cls, f"<{name}>")

    def __getattr__(self, name: str) -> _Anything:
        if name.startswith("_") or name in _SANDBOX_PROBES:
            raise AttributeError(name)
        return _Anything(f"{str.__str__(self)[1:-1]}.{name}")

    def __getitem__(self, key: object) -> _Anything:
        return _Anything(f"{str.__str__(self)[1:-1]}[{key!r}]")

    def __call__(self, *args: object, **kwargs: object) -> _Anything:
        return self

    def _same(self, *args: object) -> _Anything:
        return self

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _same
    __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = __pow__ = __neg__ = _same

    def __lt__(self, other: object) -> bool:
        return False

    __le__ = __gt__ = __ge__ = __lt__


class _Sample:
    """An object of the context (``ti``, ``dag_run``, ``var``) with sample values for some attributes and
    :class:`_Anything` for the others it has; any other attribute is missing, as on the real object.

    :param name: what Jinja calls it in a message (``'ti' object has no attribute 'x'``).
    :param values: the attributes with a sample value.
    :param names: the other attributes the real object has.
    """

    def __init__(self, name: str, values: Mapping[str, Any], names: frozenset[str] = frozenset()) -> None:
        self._name = name
        self._values = dict(values)
        self._names = names

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in _SANDBOX_PROBES:
            raise AttributeError(name)
        if name in self._values:
            return self._values[name]
        if name in self._names:
            return _Anything(f"{self._name}.{name}")
        raise AttributeError(f"{self._name!r} object has no attribute {name!r}")

    def __str__(self) -> str:
        return f"<{self._name}>"


class _Conn:
    """``conn``: any connection id gives a connection with the fields and methods of Airflow's ``Connection``."""

    def __getattr__(self, conn_id: str) -> Any:
        if conn_id.startswith("_") or conn_id in _SANDBOX_PROBES:
            raise AttributeError(conn_id)
        return self.get(conn_id)

    def get(self, conn_id: str, default_conn: object = None) -> Any:
        from airflow.sdk import Connection

        names = {n for n in dir(Connection) if not n.startswith("_")} | {"conn_id", "conn_type", "description"}
        names |= {"host", "schema", "login", "password", "port", "extra"}
        return _sample("Connection", {"conn_id": conn_id, "port": 5432}, frozenset(names))
