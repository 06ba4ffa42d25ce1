"""``airflow-matview validate``'s SETTINGS column: each setting readable on its own (``pool=p slots=3``, not
``pool=px3``, which reads as a pool named ``px3``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import yaml

from airflow_matview.cli.main import main

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize(
    ("settings", "shown"),
    [
        ({"pool": "p", "pool_slots": 3}, "pool=p slots=3"),
        ({"pool": "px", "pool_slots": 1}, "pool=px"),
        ({"pool_slots": 2}, "slots=2"),
        ({"pool": "pg_main", "pool_slots": 2, "priority_weight": -5}, "pool=pg_main slots=2 priority=-5"),
    ],
)
def test_pool_and_slots_are_two_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], settings: dict[str, object], shown: str
) -> None:
    path = tmp_path / "matviews.yaml"
    path.write_text(yaml.safe_dump({"views": [{"name": "public.a", **settings}]}))
    assert main(["validate", str(path)]) == 0
    row = capsys.readouterr().out.splitlines()[2]
    assert row.endswith(f"postgres_default  {shown}"), row


def test_a_target_lag_says_how_the_view_is_refreshed_watchable_or_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "matviews.yaml"
    path.write_text(yaml.safe_dump({"views": [{"name": "public.a", "target_lag": "2m"}, {"name": "public.b"}]}))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "target lag 2m" in out
    assert out.strip().splitlines()[-1] == (
        "note: views[0] (public.a): target_lag 2m: refreshed when its sources change, once the changes have waited "
        "up to 1m40s (less once a refresh is measured), never while nothing changes; if its sources cannot be "
        "watched (`airflow-matview check` tells), every 1m50s instead"
    )
    assert "views[1]" not in out.split("note:", 1)[1]
    assert (
        "note: and the DAG matview.freshness.postgres_default: the lag monitor of the target_lag and max_staleness "
        "views on connection 'postgres_default' (it never runs; created unpaused, it measures their lag and tells "
        "their on_stale notifiers)"
    ) in out.splitlines()
