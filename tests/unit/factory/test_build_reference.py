"""The DAGs built from a config that uses every key are exactly those recorded in ``build_reference.json``.

A guard for work on the parse path: any change to a DAG, its task, its asset, callbacks, params or Deadline Alert
shows up as a difference. After an intended change, record the reference again and review its diff::

    MATVIEW_RECORD_REFERENCE=1 .venv/bin/pytest tests/unit/factory/test_build_reference.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import airflow
import pytest

from airflow_matview.factory import build_dags

if TYPE_CHECKING:
    from airflow.sdk import DAG

REFERENCE = Path(__file__).with_name("build_reference.json")
SMTP = "airflow.providers.smtp.notifications.smtp.SmtpNotifier"
RECORD = "devtools.harness.recording_notifier.record"

# Every key of the config, in defaults and per view, with the branches of the factory: a cron in a time zone, a
# preset, manual runs, after: (alone and with a cron), on_change (alone and with after:), quoted names, dag_id,
# the notifier kinds (a BaseNotifier class with and without our default message, a callable), on_stale and not.
CONFIG: dict[str, Any] = {
    "defaults": {
        "conn_id": "warehouse",
        "schedule": "15 3 * * *",
        "concurrently": "auto",
        "retries": 3,
        "retry_delay": "90s",
        "retry_exponential_backoff": True,
        "execution_timeout": "2h",
        "lock_timeout": "30s",
        "analyze": False,
        "on_overlap": "wait",
        "skip_if_unchanged": False,
        "deferrable": False,
        "tags": ["reporting", "matview"],
        "owner": "data-team",
        "timezone": "Europe/Berlin",
        "on_failure": [{"notifier": SMTP, "to": "ops@example.com", "smtp_conn_id": "smtp_ops"}],
        "on_retry": [{"notifier": SMTP, "to": "ops@example.com", "subject": "retry {{ matview.view }}"}],
        "on_success": [{"notifier": RECORD, "label": "refreshed"}],
        "max_staleness": "2h",
        "pool": "pg_main",
        "pool_slots": 2,
        "priority_weight": 5,
        "queue": "refreshes",
        "description": "Kept fresh by airflow-matview",
        "poll_interval": "20s",
        "min_interval": "5m",
    },
    "views": [
        {"name": "public.orders_daily"},
        {
            "name": 'sales."Q1 Totals"',
            "dag_id": "q1_totals",
            "schedule": "@hourly",
            "concurrently": True,
            "analyze": True,
            "skip_if_unchanged": True,
            "lock_timeout": None,
            "execution_timeout": None,
            "on_overlap": "skip",
            "timezone": "UTC",
            "on_stale": [{"notifier": RECORD, "label": "stale"}],
            "max_staleness": "45m",
            "description": "Quarterly totals.\nTwo lines.",
        },
        {
            "name": "public.customer_rollup",
            "after": ["public.orders_daily", 'sales."Q1 Totals"'],
            "concurrently": False,
            "deferrable": True,
            "on_overlap": "fail",
            "pool": None,
            "queue": None,
            "priority_weight": 1,
            "pool_slots": 1,
            "on_failure": [],
            "on_retry": [],
            "on_success": [],
            "max_staleness": None,
            "description": None,
            "tags": [],
        },
        {"name": "public.rollup_on_cron", "after": ["public.orders_daily"], "schedule": "*/30 * * * *"},
        {"name": "public.watched", "on_change": True, "retry_exponential_backoff": "false"},
        {"name": "public.watched_after", "on_change": True, "after": ["public.watched"], "schedule": "0 6 * * 1"},
        {"name": "public.manual", "schedule": None, "timezone": "America/New_York"},
        {"name": "archive.yearly", "schedule": "@yearly", "conn_id": "archive_db", "owner": "archivist"},
    ],
}


def test_the_dags_built_are_the_recorded_ones() -> None:
    built = {dag_id: describe(dag) for dag_id, dag in build_dags(CONFIG).items()}
    if os.environ.get("MATVIEW_RECORD_REFERENCE"):
        REFERENCE.write_text(json.dumps(reference_of(built), indent=1, sort_keys=True) + "\n")
        pytest.skip(f"recorded {REFERENCE.name}")
    reference = json.loads(REFERENCE.read_text())
    if reference["airflow"] != airflow.__version__:
        pytest.skip(f"recorded with Airflow {reference['airflow']}, not {airflow.__version__}")
    assert list(built) == reference["order"]
    for dag_id, description in built.items():
        assert _jsonable(description) == reference["dags"][dag_id], dag_id


def test_a_task_process_builds_the_same_dag(monkeypatch: pytest.MonkeyPatch) -> None:
    """With Airflow's parsing context (a task run), the one DAG built is the one a full parse builds."""
    everything = {dag_id: _jsonable(describe(dag)) for dag_id, dag in build_dags(CONFIG).items()}
    for dag_id, description in everything.items():
        monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", dag_id)
        monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "refresh")
        (only,) = build_dags(CONFIG).values()
        assert _jsonable(describe(only)) == description, dag_id


def reference_of(built: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"airflow": airflow.__version__, "order": list(built), "dags": _jsonable(built)}


def describe(dag: DAG) -> dict[str, Any]:
    """What a DAG is: Airflow's serialized form (what the scheduler and UI read), and the attributes of the DAG and
    its task that serialization leaves out or reduces (callbacks, the operator's own settings, the deadline)."""
    from airflow.serialization.serialized_objects import DagSerialization

    serialized = DagSerialization.to_dict(dag)["dag"]
    for machine_specific in ("fileloc", "relative_fileloc", "_processor_dags_folder"):
        serialized.pop(machine_specific, None)
    if not dag.tasks:  # a lag monitor: its watcher's arguments are in the serialized form
        return {"serialized": serialized, "dag": {"type": type(dag).__name__, "tags": sorted(dag.tags)}}
    (task,) = dag.tasks
    return {
        "serialized": serialized,
        "dag": {
            "type": type(dag).__name__,
            "schedule": dag.schedule if dag.schedule is None or isinstance(dag.schedule, str) else "(object)",
            "timetable": type(dag.timetable).__name__,
            "tags": sorted(dag.tags),
            "doc_md": dag.doc_md,
            "description": dag.description,
            "default_args": dag.default_args,
            "params": {key: (param.value, param.schema, param.description) for key, param in dag.params.items()},
            "deadline": [_deadline(alert) for alert in dag.deadline or ()],
            "max_active_runs": dag.max_active_runs,
            "catchup": dag.catchup,
            "start_date": dag.start_date,
        },
        "task": {
            "type": f"{type(task).__module__}.{type(task).__qualname__}",
            **{
                name: getattr(task, name)
                for name in (
                    "task_id",
                    "view",
                    "postgres_conn_id",
                    "concurrently",
                    "with_data",
                    "analyze",
                    "lock_timeout",
                    "on_overlap",
                    "skip_if_unchanged",
                    "record_freshness",
                    "deferrable",
                    "owner",
                    "retries",
                    "retry_delay",
                    "retry_exponential_backoff",
                    "execution_timeout",
                    "pool",
                    "pool_slots",
                    "queue",
                    "priority_weight",
                    "weight_rule",
                    "trigger_rule",
                    "params",
                    "inlets",
                )
            },
            "outlets": [_asset(outlet) for outlet in task.outlets],
            **{
                f"on_{event}_callback": [_callback(callback) for callback in _listed(task, f"on_{event}_callback")]
                for event in ("failure", "retry", "success", "execute", "skipped")
            },
        },
    }


def _listed(task: Any, name: str) -> list[Any]:
    value = getattr(task, name)
    return [] if value is None else list(value) if isinstance(value, list | tuple) else [value]


def _callback(callback: Any) -> dict[str, Any]:
    return {
        "type": type(callback).__name__,
        "event": callback.event,
        "path": callback.spec.path,
        "kwargs": callback.spec.kwargs,
        "view": callback.view,
        "conn_id": callback.conn_id,
    }


def _asset(asset: Any) -> dict[str, Any]:
    return {
        "type": type(asset).__name__,
        "uri": asset.uri,
        "name": asset.name,
        "group": asset.group,
        "extra": asset.extra,
        "watchers": [
            {"name": watcher.name, "trigger": list(watcher.trigger.serialize())} for watcher in asset.watchers
        ],
    }


def _deadline(alert: Any) -> dict[str, Any]:
    return {
        "reference": type(alert.reference).__name__,
        "interval": alert.interval,
        "name": getattr(alert, "name", None),
        "callback": type(alert.callback).__name__,
        "callback_path": alert.callback.path,
        "callback_kwargs": alert.callback.kwargs,
    }


def _jsonable(value: Any) -> Any:
    """``value`` as JSON would give it back: dict keys as text, tuples as lists, other objects as their repr."""
    return json.loads(json.dumps(value, sort_keys=True, default=repr))
