"""The one place that knows which Airflow 3 minor is installed: everything that moved between 3.1 and 3.3.

Every other module imports these names from here, never with version checks of its own.
"""

from __future__ import annotations

from typing import Any

from airflow import __version__ as AIRFLOW_VERSION
from packaging.version import Version

try:  # Airflow 3.2+: the task SDK holds the exceptions a task raises
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowNotFoundException,
        AirflowSkipException,
        AirflowTaskTimeout,
    )
except ImportError:  # Airflow 3.1
    from airflow.exceptions import (  # type: ignore[no-redef,attr-defined,unused-ignore]
        AirflowException,
        AirflowFailException,
        AirflowNotFoundException,
        AirflowSkipException,
        AirflowTaskTimeout,
    )

try:  # where a task's deferral is raised from moved separately from the other exceptions
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow 3.1
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef,attr-defined,unused-ignore]

try:  # Airflow 3.2+
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable
except ImportError:  # Airflow 3.1
    from airflow.timetables.assets import AssetOrTimeSchedule  # type: ignore[no-redef,assignment,unused-ignore]
    from airflow.timetables.trigger import CronTriggerTimetable  # type: ignore[no-redef,assignment,unused-ignore]

# Deadline Alerts (max_staleness) as we use them: an AsyncCallback that gets the run in its context, Airflow 3.3+.
_AIRFLOW_MINOR = tuple(int(part) for part in AIRFLOW_VERSION.split(".")[:2] if part.isdigit())
DEADLINE_ALERTS_MISSING = (
    None
    if _AIRFLOW_MINOR >= (3, 3)
    else f"needs Airflow 3.3 or newer (Deadline Alerts); this is Airflow {AIRFLOW_VERSION}: "
    "remove max_staleness or upgrade Airflow"
)


def deadline_alert_model() -> Any:
    """Airflow 3.2+'s ``deadline_alert`` table (one row per Deadline Alert of a serialized DAG), or ``None`` on
    Airflow 3.1, which keeps the alerts inside the serialized DAG. Imported on call: the ORM is no parse-time cost."""
    try:
        from airflow.models.deadline_alert import DeadlineAlert
    except ImportError:  # Airflow 3.1
        return None
    return DeadlineAlert


def asset_watcher_asset_id() -> Any:
    """The column that lists the assets with a watcher (an ``AssetWatcher`` in a DAG): ``asset_watcher.asset_id``
    on Airflow 3.2+, ``asset_trigger.asset_id`` on Airflow 3.1. Imported on call, as :func:`deadline_alert_model`."""
    try:
        from airflow.models.asset import AssetWatcherModel
    except ImportError:  # Airflow 3.1
        from airflow.models.asset import asset_trigger_association_table  # type: ignore[attr-defined]

        return asset_trigger_association_table.c.asset_id
    return AssetWatcherModel.asset_id


# Refresh on change needs event-driven scheduling (a trigger that fires Asset events from the triggerer).
try:
    from airflow.sdk import AssetWatcher
    from airflow.triggers.base import BaseEventTrigger
except ImportError:  # an Airflow without event-driven scheduling: on_change is refused at validate/parse
    AssetWatcher = None  # type: ignore[assignment,misc,unused-ignore]
    BaseEventTrigger = None  # type: ignore[assignment,misc,unused-ignore]


def require(feature: str, minimum: str, installed: str = AIRFLOW_VERSION) -> str | None:
    """Whether the installed Airflow is new enough for ``feature``: None if so, else the one line to show.

    Config keys and operator arguments that only work on a newer Airflow call this at ``validate`` and at DAG parse
    time, and report the message as a config problem (prefixed with the key) instead of failing with an ImportError
    later, e.g. ``problem = require("on_change (AssetWatcher with a custom trigger)", "3.2")``.

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


__all__ = [
    "AIRFLOW_VERSION",
    "DEADLINE_ALERTS_MISSING",
    "AirflowException",
    "AirflowFailException",
    "AirflowNotFoundException",
    "AirflowSkipException",
    "AirflowTaskTimeout",
    "AssetOrTimeSchedule",
    "AssetWatcher",
    "BaseEventTrigger",
    "CronTriggerTimetable",
    "TaskDeferred",
    "asset_watcher_asset_id",
    "deadline_alert_model",
    "require",
]
