"""What the operator tells OpenLineage: the view as the output and the tables it reads (directly, through plain
views, partitions' parents, other materialized views) as the inputs, each with its columns as a schema facet.

START and FAIL name the view only (its inputs are known once the refresh has read the catalog); COMPLETE names
both, and reads their columns on a short connection of its own (only when OpenLineage asks: a run without the
provider or with it disabled never opens it). A failure to read the columns leaves the schema facets out, with one
logged line; lineage never fails the task.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow_matview.database.identifiers import QualifiedName, parse_qualified_name

if TYPE_CHECKING:
    from collections.abc import Mapping

log = logging.getLogger(__name__)


class Lineage(NamedTuple):
    """A refresh's lineage: where its database is (OpenLineage's namespace and database) and what it read and wrote.

    :param namespace: ``postgres://host:port``.
    :param database: the database's name.
    :param view: the view refreshed.
    :param sources: the relations it reads.
    """

    namespace: str
    database: str
    view: str
    sources: list[str]


def view_only(conn_id: str, view: str) -> Any:
    """START's and FAIL's lineage: the view as output, located by its Airflow connection (no database round trip);
    ``None`` when the connection cannot be read."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    try:
        from airflow.sdk import BaseHook

        connection = BaseHook.get_connection(conn_id)
        namespace = f"postgres://{connection.host}:{connection.port or 5432}"
        lineage = Lineage(namespace, str(connection.schema or ""), view, [])
    except Exception as exc:
        log.warning("OpenLineage: could not read connection %r for %s: %s", conn_id, view, exc)
        return None
    return OperatorLineage(inputs=[], outputs=[_dataset(lineage, view, None)])


def on_complete(lineage: Lineage, conn_id: str) -> Any:
    """COMPLETE's lineage: the view as output, its sources as inputs, with their columns."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    columns = _columns(conn_id, [lineage.view, *lineage.sources])
    return OperatorLineage(
        inputs=[_dataset(lineage, name, columns) for name in lineage.sources],
        outputs=[_dataset(lineage, lineage.view, columns)],
    )


def _columns(conn_id: str, names: list[str]) -> Mapping[QualifiedName, list[tuple[str, str]]] | None:
    from airflow_matview.connections import connect
    from airflow_matview.database.catalog import relation_columns

    try:
        with connect(conn_id, "read the columns for OpenLineage") as conn:
            return relation_columns(conn, [parse_qualified_name(name) for name in names])
    except Exception as exc:  # lineage is a side channel: never the reason a refresh task fails
        log.warning("OpenLineage: could not read the columns of %s (connection %r): %s", names[0], conn_id, exc)
        return None


def _dataset(lineage: Lineage, name: str, columns: Mapping[QualifiedName, list[tuple[str, str]]] | None) -> Any:
    from airflow.providers.common.compat.openlineage.facet import (
        Dataset,
        SchemaDatasetFacet,
        SchemaDatasetFacetFields,
    )

    parsed = parse_qualified_name(name)
    facets: dict[str, Any] = {}
    if columns is not None and parsed in columns:
        fields = [SchemaDatasetFacetFields(name=column, type=type_name) for column, type_name in columns[parsed]]
        facets["schema"] = SchemaDatasetFacet(fields=fields)
    return Dataset(namespace=lineage.namespace, name=f"{lineage.database}.{parsed.schema}.{parsed.name}", facets=facets)
