"""Metric names: a view's and a connection's names as parts of a StatsD name Airflow's validator accepts."""

from __future__ import annotations

import pytest

from airflow_matview.refresh_metrics import name_part


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("public.polls_user_matt_view", "public__polls_user_matt_view"),
        ('"Sales Report"."Q1 Totals"', "_Sales_Report____Q1_Totals_"),
        ("warehouse-eu", "warehouse-eu"),
        ("ventes_été", "ventes__t_"),
    ],
)
def test_a_name_part_holds_only_what_statsd_names_may(text: str, expected: str) -> None:
    assert name_part(text) == expected
