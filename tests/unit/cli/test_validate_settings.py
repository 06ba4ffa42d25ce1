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
