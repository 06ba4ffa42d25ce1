"""The two Airflow Assets of a view, built and read in one place.

- ``matview://<conn_id>/<schema>/<name>`` stands for the view's contents: every successful refresh updates it, so
  views listed in ``after:`` and any other DAG can be scheduled on it, and the fleet page finds views through it.
- ``matview-sources://<conn_id>/<schema>/<name>`` stands for the view's sources: its ``AssetWatcher`` runs
  :class:`~airflow_matview.triggers.source_changes.SourceChangesTrigger` in the triggerer, whose events (which
  sources changed) start the DAG of an ``on_change`` view.
- ``matview-freshness://<conn_id>`` stands for the lag of a config's views with ``target_lag`` on one connection:
  its watcher runs :class:`~airflow_matview.triggers.freshness_monitor.FreshnessTrigger`, which measures and alerts
  and never fires, and its state store holds what it measured.

Each part is percent-encoded. Building them touches no database or Connection, so it is cheap at parse time.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from airflow.sdk import Asset, AssetWatcher

from airflow_matview.database.identifiers import QualifiedName

if TYPE_CHECKING:
    from airflow_matview.config import ViewSettings

SCHEME = "matview"
SOURCES_SCHEME = "matview-sources"
FRESHNESS_SCHEME = "matview-freshness"


# What percent-encoding leaves as it is (RFC 3986's unreserved characters): most names need no quote() call.
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


def _uri(scheme: str, conn_id: str, view: QualifiedName) -> str:
    if view.schema is None:
        raise ValueError(f"the asset of {view} needs a schema-qualified name")
    return f"{scheme}://" + "/".join(
        part if _UNRESERVED.fullmatch(part) else quote(part, safe="") for part in (conn_id, view.schema, view.name)
    )


def matview_asset_uri(conn_id: str, view: QualifiedName) -> str:
    """``matview://<conn_id>/<schema>/<name>``, each part percent-encoded."""
    return _uri(SCHEME, conn_id, view)


def matview_asset(conn_id: str, view: QualifiedName) -> Asset:
    """The Asset for ``view`` reached through Airflow connection ``conn_id``; other DAGs may schedule on it."""
    return Asset(uri=matview_asset_uri(conn_id, view), group="matview")


def parse_matview_uri(uri: str) -> tuple[str, QualifiedName] | None:
    """``(conn_id, view)`` of a ``matview://`` URI; ``None`` for a URI that is not one of ours: another scheme, not
    exactly three non-empty parts (as another team's ``matview://team-b/exports`` may be), or parts that
    :func:`matview_asset_uri` would not have written (bad or needless percent-encoding)."""
    if not uri.startswith(f"{SCHEME}://"):
        return None
    try:
        parts = [unquote(part, errors="strict") for part in uri[len(SCHEME) + 3 :].split("/")]
    except UnicodeDecodeError:
        return None
    if len(parts) != 3 or not all(parts):
        return None
    conn_id, schema, name = parts
    view = QualifiedName(schema, name)
    return (conn_id, view) if matview_asset_uri(conn_id, view) == uri else None


def sources_asset(conn_id: str, view: QualifiedName, settings: ViewSettings) -> Asset:
    """The asset whose watcher fires when ``view``'s sources change; a DAG scheduled on it refreshes the view.

    :param conn_id: the Airflow connection of the view's database.
    :param view: the view, schema-qualified.
    :param settings: its ``poll_interval``, ``min_interval`` and ``target_lag``.
    """
    from airflow_matview.triggers.source_changes import SourceChangesTrigger

    uri = _uri(SOURCES_SCHEME, conn_id, view)
    trigger = SourceChangesTrigger(
        conn_id=conn_id,
        view=str(view),
        poll_interval=settings.poll_interval.total_seconds(),
        min_interval=settings.watch_min_interval.total_seconds(),
        target_lag=None if settings.target_lag is None else settings.target_lag.total_seconds(),
    )
    watcher = AssetWatcher(name=f"{conn_id}.{view}.sources", trigger=trigger)
    return Asset(uri=uri, name=uri, group="matview", watchers=[watcher])


def freshness_asset_uri(conn_id: str) -> str:
    """``matview-freshness://<conn_id>``, percent-encoded."""
    return f"{FRESHNESS_SCHEME}://" + (conn_id if _UNRESERVED.fullmatch(conn_id) else quote(conn_id, safe=""))


def freshness_asset(conn_id: str, poll_interval: float, views: list[dict[str, Any]]) -> Asset:
    """The asset whose watcher measures the lag of ``views`` on ``conn_id`` (see :func:`freshness_asset_uri`).

    :param poll_interval: seconds between polls: it joins the shared poll of the views watched with the same.
    :param views: :class:`~airflow_matview.triggers.freshness_monitor.FreshnessTrigger`'s ``views``.
    """
    from airflow_matview.triggers.freshness_monitor import FreshnessTrigger

    uri = freshness_asset_uri(conn_id)
    trigger = FreshnessTrigger(conn_id=conn_id, poll_interval=poll_interval, views=views)
    watcher = AssetWatcher(name=f"{conn_id}.freshness", trigger=trigger)
    return Asset(uri=uri, name=uri, group="matview", watchers=[watcher])
