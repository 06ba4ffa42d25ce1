"""Provider metadata that Airflow's ProvidersManager reads through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_matview import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-matview",
        "name": "Materialized views",
        "description": "Keeps PostgreSQL materialized views fresh: one scheduled DAG per view.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "PostgreSQL materialized views",
                "external-doc-url": "https://www.postgresql.org/docs/current/sql-refreshmaterializedview.html",
                "tags": ["software"],
            }
        ],
        "operators": [
            {
                "integration-name": "PostgreSQL materialized views",
                "python-modules": ["airflow_matview.operators.materialized_view"],
            }
        ],
        "triggers": [
            {
                "integration-name": "PostgreSQL materialized views",
                "python-modules": [
                    "airflow_matview.triggers.deferred_refresh",
                    "airflow_matview.triggers.source_changes",
                    "airflow_matview.triggers.started_refresh",
                ],
            }
        ],
        "config": {
            "matview": {
                "description": "airflow-matview's settings of Airflow's own components.",
                "options": {
                    "triggerer_max_connections": {
                        "description": "The most connections one triggerer process keeps open to each Airflow "
                        "connection for the refreshes it runs (deferrable and start_from_trigger); a refresh beyond "
                        "that waits in the triggerer for one to come back.",
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "16",
                        "default": "16",
                    },
                    "metrics_url": {
                        "description": "A URL template linking each view of the fleet overview to its metrics (e.g. "
                        "a Grafana dashboard filtered on it); placeholders {view}, {view_metric}, {conn_id}, "
                        "{conn_metric}, {dag_id}, {task_id}, percent-encoded; http(s) only. Empty: no link.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "https://grafana.example.com/d/airflow-matview-refreshes?var-view={view_metric}",
                        "default": "",
                    },
                    "lineage_url": {
                        "description": "A URL template linking each view of the fleet overview to its lineage "
                        "(e.g. a Marquez job page); the placeholders of metrics_url; http(s) only. Empty: no link.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "https://marquez.example.com/lineage/job/airflow/{dag_id}.{task_id}",
                        "default": "",
                    },
                },
            }
        },
    }
