"""A view's asset: its URI, stable and computed without a database."""

from __future__ import annotations

from airflow_matview.assets import matview_asset_uri
from airflow_matview.database.identifiers import QualifiedName

VIEW_URI = matview_asset_uri("postgres_default", QualifiedName("public", "polls_user_matt_view"))


def test_asset_identity_is_stable_and_needs_no_database() -> None:
    assert VIEW_URI == "matview://postgres_default/public/polls_user_matt_view"
    odd = matview_asset_uri("warehouse", QualifiedName("Sales Report", "Q1/Totals"))
    assert odd == "matview://warehouse/Sales%20Report/Q1%2FTotals"
