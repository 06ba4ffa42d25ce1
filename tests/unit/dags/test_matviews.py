"""The drop-in DAG file ``dags/matviews.py`` in an Airflow DagBag: one DAG per view, or one clear import error."""

from __future__ import annotations

from typing import TYPE_CHECKING

import yaml

from devtools.harness.configs import THREE_VIEWS
from devtools.harness.dag_files import dags_folder
from devtools.harness.dag_runs import DagBag

if TYPE_CHECKING:
    from pathlib import Path


def test_dagbag_over_the_dags_folder_shows_one_dag_per_view(tmp_path: Path) -> None:
    bag = DagBag(dag_folder=str(dags_folder(tmp_path, THREE_VIEWS)))
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["matview.public.Daily_Totals", "matview.public.polls_user_matt_view", "rollup"]


def test_a_bad_file_is_one_clear_import_error_and_no_partial_dags(tmp_path: Path) -> None:
    config = yaml.safe_dump({"views": [{"name": "public.good"}, {"name": "public.bad", "schedule": "often"}]})
    bag = DagBag(dag_folder=str(dags_folder(tmp_path, config)))
    assert bag.dag_ids == []
    ((path, error),) = bag.import_errors.items()
    assert path.endswith("matviews.py")
    assert "views[1] (public.bad): schedule: 'often' is not a cron expression or preset" in error
    assert "airflow_matview/" not in error  # no traceback into our internals


def test_a_name_with_a_newline_is_one_import_error_line_and_no_dag(tmp_path: Path) -> None:
    config = yaml.safe_dump({"views": [{"name": "public.good"}, {"name": 'public."bad\nname"'}]})
    bag = DagBag(dag_folder=str(dags_folder(tmp_path, config)))
    assert bag.dag_ids == []
    ((_path, error),) = bag.import_errors.items()
    problems = [line for line in error.splitlines() if line.startswith("  - ")]
    assert problems == [
        "  - views[1] (public.\"bad\\nname\"): name: 'public.\"bad\\nname\"' holds the control character '\\n': "
        "PostgreSQL accepts it in a quoted name, but it would break the listings, DAG docs and logs that show the "
        "name; rename the view in PostgreSQL (ALTER MATERIALIZED VIEW ... RENAME TO ...) and write its new name here"
    ], error
