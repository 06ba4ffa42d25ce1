"""The Airflow Asset that stands for a materialized view's contents: updated by every successful refresh."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from airflow.sdk import Asset

if TYPE_CHECKING:
    from airflow_matview.identifiers import QualifiedName

SCHEME = "matview"


def matview_asset_uri(conn_id: str, view: QualifiedName) -> str:
    """``matview://<conn_id>/<schema>/<name>``, each part percent-encoded.

    Built from names only (no database or Connection access), so it is stable and cheap at parse time.
    """
    if view.schema is None:
        raise ValueError(f"the asset of {view} needs a schema-qualified name")
    parts = (conn_id, view.schema, view.name)
    return f"{SCHEME}://" + "/".join(quote(part, safe="") for part in parts)


def matview_asset(conn_id: str, view: QualifiedName) -> Asset:
    """The Asset for ``view`` reached through Airflow connection ``conn_id``; other DAGs may schedule on it."""
    return Asset(uri=matview_asset_uri(conn_id, view), group="matview")
