"""Refresh on change: the Asset, watched from the triggerer, that a view's DAG is scheduled on when ``on_change``.

The asset stands for the view's sources (``matview-sources://<conn_id>/<schema>/<name>``); its ``AssetWatcher``
runs :class:`~airflow_matview.triggers.source_changes.SourceChangesTrigger`, whose events (which sources changed)
start the DAG. Building it touches no database: the trigger only stores its arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from airflow.sdk import Asset

from airflow_matview.compat import AIRFLOW_VERSION, AssetWatcher, BaseEventTrigger

if TYPE_CHECKING:
    from airflow_matview.config import ViewSettings
    from airflow_matview.identifiers import QualifiedName

SCHEME = "matview-sources"


def unsupported_reason() -> str | None:
    """Why this Airflow cannot refresh on change, or ``None`` when it can."""
    if AssetWatcher is None or BaseEventTrigger is None:
        return (
            f"Airflow {AIRFLOW_VERSION} has no event-driven scheduling (AssetWatcher, BaseEventTrigger); "
            "use a schedule, or upgrade Airflow"
        )
    return None


def sources_asset(conn_id: str, view: QualifiedName, settings: ViewSettings) -> Asset:
    """The asset whose watcher fires when ``view``'s sources change; a DAG scheduled on it refreshes the view.

    :param conn_id: the Airflow connection of the view's database.
    :param view: the view, schema-qualified.
    :param settings: its ``poll_interval`` and ``min_interval``.
    """
    from airflow_matview.triggers.source_changes import SourceChangesTrigger

    assert view.schema is not None
    uri = f"{SCHEME}://" + "/".join(quote(part, safe="") for part in (conn_id, view.schema, view.name))
    trigger = SourceChangesTrigger(
        conn_id=conn_id,
        view=str(view),
        poll_interval=settings.poll_interval.total_seconds(),
        min_interval=settings.min_interval.total_seconds(),
    )
    watcher = AssetWatcher(name=f"{conn_id}.{view}.sources", trigger=trigger)
    return Asset(uri=uri, name=uri, group="matview", watchers=[watcher])


def check_on_change(settings: ViewSettings) -> None:
    """Refuse ``on_change`` where it cannot work, at validate and parse time.

    :raises ValueError: with what to do instead (the config prefixes the view and the key).
    """
    if (reason := unsupported_reason()) is not None:
        raise ValueError(f"on_change: {reason}")
    if settings.schedule in ("@once", "@continuous"):
        raise ValueError(
            f"schedule: {settings.schedule} cannot be combined with on_change; use a cron expression or null"
        )
