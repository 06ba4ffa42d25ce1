"""The two Airflow Assets of a view, built and read in one place.

- ``matview://<conn_id>/<schema>/<name>`` stands for the view's contents: every successful refresh updates it, so
  views listed in ``after:`` and any other DAG can be scheduled on it, and the fleet page finds views through it.
- ``matview-sources://<conn_id>/<schema>/<name>`` stands for the view's sources: its ``AssetWatcher`` runs
  :class:`~airflow_matview.triggers.source_changes.SourceChangesTrigger` in the triggerer, whose events (which
  sources changed) start the DAG of an ``on_change`` view.

Each part is percent-encoded. Building them touches no database or Connection, so it is cheap at parse time.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from airflow.sdk import Asset, AssetWatcher

from airflow_matview.database.identifiers import QualifiedName

if TYPE_CHECKING:
    from airflow_matview.config import ViewSettings

SCHEME = "matview"
SOURCES_SCHEME = "matview-sources"


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
