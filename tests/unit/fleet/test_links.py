"""The fleet page's links to a view's metrics and lineage, from [matview] metrics_url and lineage_url."""

from __future__ import annotations

import logging

import pytest

from airflow_matview.fleet.links import view_links


def test_templates_fill_in_the_view_percent_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW__MATVIEW__METRICS_URL", "https://grafana.example/d/x?var-view={view_metric}&var-conn_id={conn_id}"
    )
    monkeypatch.setenv("AIRFLOW__MATVIEW__LINEAGE_URL", "http://marquez:3000/lineage/job/airflow/{dag_id}.{task_id}")
    links = view_links('"Sales Report".q1', "warehouse", "matview.x&y", "refresh")
    assert links == {
        "metrics": "https://grafana.example/d/x?var-view=_Sales_Report___q1&var-conn_id=warehouse",
        "lineage": "http://marquez:3000/lineage/job/airflow/matview.x%26y.refresh",
    }


def test_no_template_no_link(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__MATVIEW__METRICS_URL", raising=False)
    monkeypatch.delenv("AIRFLOW__MATVIEW__LINEAGE_URL", raising=False)
    assert view_links("public.v", "c", "d", "refresh") == {}


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("javascript:alert({view})", "is not an http(s) URL"),
        ("https://grafana.example/?v={schema}", "names unknown placeholders (schema;"),
        ("https://grafana.example/?v={view", "cannot be read as a URL template"),
    ],
)
def test_a_template_that_cannot_make_a_safe_link_shows_none(
    template: str, why: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIRFLOW__MATVIEW__METRICS_URL", template)
    monkeypatch.delenv("AIRFLOW__MATVIEW__LINEAGE_URL", raising=False)
    with caplog.at_level(logging.WARNING, logger="airflow_matview.fleet.links"):
        assert view_links("public.v", "c", "d", "refresh") == {}
    assert any(why in record.getMessage() for record in caplog.records)
