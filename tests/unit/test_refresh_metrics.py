"""Metric names: a view's and a connection's names as parts of a StatsD name Airflow's validator accepts; the
statsd_exporter mapping and the Grafana dashboard shipped in docs/observability/ cover every metric sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_matview import refresh_metrics, version_compat
from airflow_matview.refresh_metrics import name_part

DOCS = Path(__file__).resolve().parents[2] / "docs" / "observability"


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


class _Recorder:
    """Records the names sent, as Airflow's stats layer would receive them."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bool]] = []

    def _record(self, name: str, *_: object, tags: dict[str, str] | None = None) -> None:
        self.sent.append((name, tags is not None))

    incr = gauge = timing = _record


def _mapping(name: str, mappings: list[dict[str, Any]]) -> dict[str, Any]:
    """The first statsd_exporter glob mapping matching ``name`` (``*`` is one dot-separated part)."""
    parts = name.split(".")
    for mapping in mappings:
        pattern = mapping["match"].split(".")
        if len(pattern) == len(parts) and all(p in ("*", part) for p, part in zip(pattern, parts, strict=True)):
            return mapping
    raise AssertionError(f"no mapping for {name}")


def test_the_statsd_exporter_mapping_labels_every_metric_by_view(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(version_compat, "airflow_stats", lambda: recorder)
    result = {"view": "public.v", "mode": "concurrently", "seconds": 1.5, "rows": 3, "lock_wait": 0.0}
    refresh_metrics.refreshed("warehouse.eu", result)
    refresh_metrics.skipped("warehouse.eu", "public.v")
    refresh_metrics.failed("warehouse.eu", "public.v")
    refresh_metrics.lag("warehouse.eu", "public.v", 12.5, 30.0)
    refresh_metrics.lag("warehouse.eu", "public.v", None, 30.0)
    mappings = yaml.safe_load((DOCS / "statsd_exporter.yml").read_text())["mappings"]
    labelled = set()
    for name, tagged in recorder.sent:
        mapping = _mapping(f"airflow.{name}", mappings)
        if tagged:
            assert mapping.get("action") == "drop", name
        else:
            assert mapping["labels"]["view"] == "$" + str(mapping["match"].count("*")), name
            labelled.add(mapping["name"])
    assert labelled == {
        "matview_refresh_duration_seconds",
        "matview_refresh_lock_wait_seconds",
        "matview_refresh_mode_total",
        "matview_refresh_total",
        "matview_rows",
        "matview_lag_seconds",
        "matview_lag_unknown",
        "matview_target_lag_seconds",
    }
    assert len(recorder.sent) == 2 * (7 + 3 + 2), "a lag that is unknown sends no lag gauge"


def test_the_grafana_dashboard_reads_the_mapped_metrics() -> None:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = " ".join(target["expr"] for panel in dashboard["panels"] for target in panel["targets"])
    for metric in (
        "matview_refresh_total",
        "matview_refresh_duration_seconds_bucket",
        "matview_rows",
        "matview_lag_seconds",
    ):
        assert metric in exprs
