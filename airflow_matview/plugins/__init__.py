"""Airflow plugins shipped with airflow-matview (registered through the ``airflow.plugins`` entry point)."""

from __future__ import annotations
