"""The one place that knows which Airflow 3 minor is installed, in the way Airflow's own providers do it.

``AIRFLOW_V_3_2_PLUS`` and ``AIRFLOW_V_3_3_PLUS`` say which minor this is; every name that moved between the
minors is imported here, by those booleans, and every feature that needs a newer minor is decided here. Other
modules import these names and never check a version, ``hasattr`` or ``ImportError`` of their own.
"""

from __future__ import annotations

from typing import Any

from airflow import __version__ as AIRFLOW_VERSION
from packaging.version import Version


def get_base_airflow_version_tuple() -> tuple[int, int, int]:
    """``(major, minor, micro)`` of the installed Airflow, without pre-release or local parts."""
    version = Version(AIRFLOW_VERSION)
    return version.major, version.minor, version.micro


AIRFLOW_V_3_2_PLUS: bool = get_base_airflow_version_tuple() >= (3, 2, 0)
AIRFLOW_V_3_3_PLUS: bool = get_base_airflow_version_tuple() >= (3, 3, 0)

if AIRFLOW_V_3_2_PLUS:  # the task SDK holds the exceptions a task raises, and the schedules
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable
    from airflow.sdk import exceptions as _task_exceptions
else:  # Airflow 3.1
    from airflow import exceptions as _task_exceptions  # type: ignore[no-redef,unused-ignore]
    from airflow.timetables.assets import AssetOrTimeSchedule  # type: ignore[no-redef,assignment,unused-ignore]
    from airflow.timetables.trigger import CronTriggerTimetable  # type: ignore[no-redef,assignment,unused-ignore]

AirflowException = _task_exceptions.AirflowException
AirflowFailException = _task_exceptions.AirflowFailException
AirflowNotFoundException = _task_exceptions.AirflowNotFoundException
AirflowSkipException = _task_exceptions.AirflowSkipException
AirflowTaskTimeout = _task_exceptions.AirflowTaskTimeout
TaskDeferralTimeout = _task_exceptions.TaskDeferralTimeout
TaskDeferred = _task_exceptions.TaskDeferred

#: ``BaseHook.aget_connection``: a connection looked up from the triggerer's event loop without blocking it.
HAS_ASYNC_CONNECTION_LOOKUP = AIRFLOW_V_3_2_PLUS
#: Shared trigger streams and the asset state store: one poll per connection for every watched view, and a
#: baseline that survives a triggerer restart.
HAS_SHARED_TRIGGER_STREAMS = AIRFLOW_V_3_3_PLUS
#: Refresh on change: an ``AssetWatcher`` running a custom ``BaseEventTrigger`` (every supported minor has them).
HAS_EVENT_DRIVEN_SCHEDULING = True
#: ``start_from_trigger`` as the refresh needs it: the task's templated fields (the trigger form's params) rendered
#: in the triggerer, and a trigger that ends its task itself (``TaskSuccessEvent`` with its XCom).
HAS_START_FROM_TRIGGER = AIRFLOW_V_3_3_PLUS


def require(feature: str, minimum: str, installed: str = AIRFLOW_VERSION) -> str | None:
    """Whether the installed Airflow is new enough for ``feature``: None if so, else the one line to show.

    Config keys and operator arguments that only work on a newer Airflow call this at ``validate`` and at DAG parse
    time, and report the message as a config problem (prefixed with the key) instead of failing with an ImportError
    later, e.g. ``problem = require("start_from_trigger", "3.3")``.

    :param feature: what the user asked for, as they would recognise it (a config key, an operator argument).
    :param minimum: the first Airflow version that has it, e.g. ``"3.2"``.
    :param installed: the Airflow version to judge (defaults to the installed one).
    """
    if Version(installed).release >= Version(minimum).release:
        return None
    return (
        f"{feature} needs Apache Airflow {minimum} or newer, and this is Airflow {installed}: "
        "upgrade Airflow (with its constraints file) or remove the setting"
    )


#: Why ``start_from_trigger`` cannot work here, or None.
START_FROM_TRIGGER_MISSING = None if HAS_START_FROM_TRIGGER else require("start_from_trigger", "3.3")


def asset_watcher_asset_id() -> Any:
    """The column that lists the assets with a watcher (an ``AssetWatcher`` in a DAG): ``asset_watcher.asset_id``
    on Airflow 3.2+, ``asset_trigger.asset_id`` on Airflow 3.1. Imported on call: the ORM is no parse-time cost."""
    if AIRFLOW_V_3_2_PLUS:
        from airflow.models.asset import AssetWatcherModel

        return AssetWatcherModel.asset_id
    from airflow.models.asset import asset_trigger_association_table  # type: ignore[attr-defined,unused-ignore]

    return asset_trigger_association_table.c.asset_id


def airflow_stats() -> Any:
    """Airflow's own metrics layer (StatsD, Datadog or OpenTelemetry, as ``[metrics]`` configures it), with
    ``incr``, ``gauge`` and ``timing`` taking ``tags``. Airflow 3.3 keeps it in the task SDK
    (``airflow.sdk.observability.stats``, whose backend a task runner sets up); where nothing set it up in this
    process (``dag.test()``, the triggerer's trigger runner) it is set up here from the same configuration. Airflow
    3.1 and 3.2 have ``airflow.stats.Stats``, set up on import."""
    if AIRFLOW_V_3_3_PLUS:
        from airflow.sdk._shared.observability.metrics import stats

        if getattr(stats, "_factory", None) is None:
            from airflow.sdk.configuration import conf
            from airflow.sdk.observability.metrics import stats_utils

            stats.initialize(
                factory=stats_utils.get_stats_factory(),
                export_legacy_names=conf.getboolean("metrics", "legacy_names_on", fallback=True),
            )
        return stats
    from airflow.stats import Stats  # type: ignore[attr-defined,unused-ignore]

    return Stats


__all__ = [
    "AIRFLOW_VERSION",
    "AIRFLOW_V_3_2_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "HAS_ASYNC_CONNECTION_LOOKUP",
    "HAS_EVENT_DRIVEN_SCHEDULING",
    "HAS_SHARED_TRIGGER_STREAMS",
    "HAS_START_FROM_TRIGGER",
    "START_FROM_TRIGGER_MISSING",
    "AirflowException",
    "AirflowFailException",
    "AirflowNotFoundException",
    "AirflowSkipException",
    "AirflowTaskTimeout",
    "AssetOrTimeSchedule",
    "CronTriggerTimetable",
    "TaskDeferralTimeout",
    "TaskDeferred",
    "airflow_stats",
    "asset_watcher_asset_id",
    "require",
]
