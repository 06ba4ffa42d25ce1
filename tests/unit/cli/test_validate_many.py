"""``airflow-matview validate a.yaml b.yaml``: each file is validated and listed, and a view or DAG id that two of
them build is a problem naming both files (exit 1), as two DAG files loading them would flip one DAG."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

from airflow_matview.cli.main import main

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def _write(tmp_path: Path, name: str, *views: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"views": list(views)}))
    return path


def test_two_files_listing_one_view_are_a_problem_naming_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _write(tmp_path, "a.yaml", {"name": "public.sales"}, {"name": "public.stock"})
    b = _write(tmp_path, "b.yaml", {"name": "public.orders"}, {"name": "public.sales", "dag_id": "sales_fast"})
    assert main(["validate", str(a), str(b)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == f"{a}: OK, 2 DAG(s)"
    assert err.splitlines() == [
        f"Invalid matview config {b}: 1 problem(s):",
        f"  - views[1] (public.sales): the view public.sales on connection 'postgres_default' (DAG id 'sales_fast') "
        f"is also built from {a} (views[0]); Airflow would keep one DAG and switch between the two at every "
        "parse: list each view in one config only",
    ]


def test_a_dag_id_of_two_files_is_a_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write(tmp_path, "a.yaml", {"name": "public.sales", "dag_id": "nightly"})
    b = _write(tmp_path, "b.yaml", {"name": "public.stock", "dag_id": "nightly"})
    assert main(["validate", str(a), str(b)]) == 1
    assert (
        f"views[0] (public.stock): DAG id 'nightly' is also the DAG id of public.sales, built from {a} (views[0]); "
        "give one of them another dag_id"
    ) in capsys.readouterr().err


def test_distinct_files_are_each_listed_and_a_bad_one_does_not_hide_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _write(tmp_path, "a.yaml", {"name": "public.sales"})
    bad = _write(tmp_path, "bad.yaml", {"name": "public.x", "schedule": "often"})
    c = _write(tmp_path, "c.yaml", {"name": "public.sales", "conn_id": "replica", "dag_id": "sales_replica"})
    assert main(["validate", str(a), str(bad), str(c)]) == 1
    out, err = capsys.readouterr()
    assert [line for line in out.splitlines() if ": OK, " in line] == [f"{a}: OK, 1 DAG(s)", f"{c}: OK, 1 DAG(s)"]
    assert err.startswith(f"Invalid matview config {bad}: 1 problem(s):")
    assert main(["validate", str(a), str(c)]) == 0


def test_one_file_is_validated_as_before(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write(tmp_path, "a.yaml", {"name": "public.sales"})
    assert main(["validate", str(a)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{a}: OK, 1 DAG(s)"
