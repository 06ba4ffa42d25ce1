"""A view (or a DAG id) built by two configs: in one parse session (a DagBag over the DAG folder, as ``airflow dags
list``, ``airflow dags test`` and tests have it) the second DAG file is an import error naming both DAG files and
both configs; Airflow's own check sees only equal DAG ids, and never the config files.

(The dag-processor parses each file in a process of its own, so there the factory sees one file at a time:
``airflow-matview validate a.yaml b.yaml`` is the check for that case.)"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import yaml

from devtools.harness.dag_runs import DagBag

if TYPE_CHECKING:
    from pathlib import Path

# As dags/matviews.py does it: a config error is the file's import error, without our internals' traceback.
DAG_FILE = """from pathlib import Path
from airflow_matview.config import InvalidConfigFileError
from airflow_matview.factory import build_dags
try:
    for config in {configs!r}:
        globals().update(build_dags(Path(__file__).with_name(config)))
except InvalidConfigFileError as error:
    raise error.with_traceback(None) from None
"""


def _folder(tmp_path: Path, configs: dict[str, dict[str, Any]], dag_files: dict[str, list[str]]) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir(parents=True)
    for name, config in configs.items():
        (folder / name).write_text(yaml.safe_dump(config))
    for name, uses in dag_files.items():
        (folder / name).write_text(DAG_FILE.format(configs=uses))
    return folder


def _parse(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The DAGs a DagBag over ``folder`` keeps (DAG id -> DAG file name) and its import errors by file name."""
    bag = DagBag(dag_folder=str(folder))
    dags = {dag_id: dag.fileloc.rsplit("/", 1)[-1] for dag_id, dag in bag.dags.items()}
    return dags, {path.rsplit("/", 1)[-1]: error for path, error in bag.import_errors.items()}


def _views(*views: dict[str, Any]) -> dict[str, Any]:
    return {"views": list(views)}


def test_the_same_view_in_two_configs_is_an_import_error_naming_both_files(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {"a.yaml": _views({"name": "public.sales"}), "b.yaml": _views({"name": "public.sales", "pool": "other"})},
        {"a.py": ["a.yaml"], "b.py": ["b.yaml"]},
    )
    dags, errors = _parse(folder)
    assert dags == {"matview.public.sales": "a.py"}
    assert list(errors) == ["b.py"]
    assert (
        f"views[0] (public.sales): the view public.sales on connection 'postgres_default' (DAG id "
        f"'matview.public.sales') is also built from {folder / 'a.yaml'} by the DAG file {folder / 'a.py'} "
        "(views[0]); Airflow would keep one DAG and switch between the two at every parse: list each view in one "
        "config only"
    ) in errors["b.py"]
    assert f"Invalid matview config {folder / 'b.yaml'}: 1 problem(s):" in errors["b.py"]
    assert "airflow_matview/" not in errors["b.py"]  # no traceback into our internals


def test_the_same_view_under_another_dag_id_is_found_too(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {
            "a.yaml": _views({"name": "public.sales"}),
            "b.yaml": _views({"name": "public.sales", "dag_id": "sales_every_5_minutes"}),
        },
        {"a.py": ["a.yaml"], "b.py": ["b.yaml"]},
    )
    dags, errors = _parse(folder)
    assert dags == {"matview.public.sales": "a.py"}
    assert (
        "the view public.sales on connection 'postgres_default' (DAG id 'sales_every_5_minutes') is also built "
        in (errors["b.py"])
    )


def test_one_dag_id_for_two_views_is_named(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {
            "a.yaml": _views({"name": "public.sales", "dag_id": "refresh"}),
            "b.yaml": _views({"name": "public.stock", "dag_id": "refresh"}),
        },
        {"a.py": ["a.yaml"], "b.py": ["b.yaml"]},
    )
    dags, errors = _parse(folder)
    assert dags == {"refresh": "a.py"}
    assert (
        f"views[0] (public.stock): DAG id 'refresh' is also the DAG id of public.sales, built from "
        f"{folder / 'a.yaml'} by the DAG file {folder / 'a.py'} (views[0]); give one of them another dag_id"
    ) in errors["b.py"]


def test_one_config_loaded_by_two_dag_files_names_both_dag_files(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"matviews.yaml": _views({"name": "public.sales"})}, {"a.py": ["matviews.yaml"]})
    (folder / "copy_of_a.py").write_text((folder / "a.py").read_text())
    dags, errors = _parse(folder)
    ((kept, dag_file),) = dags.items()
    ((failed, error),) = errors.items()
    assert (kept, {dag_file, failed}) == ("matview.public.sales", {"a.py", "copy_of_a.py"})
    assert f"is also built from {folder / 'matviews.yaml'} by the DAG file {folder / dag_file} (views[0])" in error


def test_two_configs_in_one_dag_file(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {"a.yaml": _views({"name": "public.sales"}), "b.yaml": _views({"name": "public.sales"})},
        {"both.py": ["a.yaml", "b.yaml"]},
    )
    _, errors = _parse(folder)
    assert f"is also built from {folder / 'a.yaml'} by the DAG file {folder / 'both.py'}" in errors["both.py"]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # One view name in two databases is two views.
        (_views({"name": "public.sales", "conn_id": "eu"}), _views({"name": "public.sales", "conn_id": "us"})),
        (_views({"name": "public.sales"}), _views({"name": '"public"."Sales"'})),
    ],
)
def test_distinct_views_in_two_configs_are_fine(tmp_path: Path, a: dict[str, Any], b: dict[str, Any]) -> None:
    b["views"][0].setdefault("dag_id", "other")
    folder = _folder(tmp_path, {"a.yaml": a, "b.yaml": b}, {"a.py": ["a.yaml"], "b.py": ["b.yaml"]})
    dags, errors = _parse(folder)
    assert errors == {} and len(dags) == 2


def test_parsing_again_or_in_another_dagbag_is_not_a_duplicate(tmp_path: Path) -> None:
    config = {"a.yaml": _views({"name": "public.sales"})}
    first = _folder(tmp_path / "one", config, {"a.py": ["a.yaml"]})
    second = _folder(tmp_path / "two", config, {"a.py": ["a.yaml"]})
    bag = DagBag(dag_folder=str(first))
    bag.collect_dags(dag_folder=str(first), only_if_updated=False)
    assert bag.import_errors == {}
    assert _parse(second) == ({"matview.public.sales": "a.py"}, {})


def test_the_bundle_dagbag_of_airflow_dags_reserialize_sees_it_too(tmp_path: Path) -> None:
    dagbag = pytest.importorskip("airflow.dag_processing.dagbag")
    if not hasattr(dagbag, "BundleDagBag"):
        pytest.skip("no BundleDagBag on this Airflow")
    folder = _folder(
        tmp_path,
        {"a.yaml": _views({"name": "public.sales"}), "b.yaml": _views({"name": "public.sales"})},
        {"a.py": ["a.yaml"], "b.py": ["b.yaml"]},
    )
    bag = dagbag.BundleDagBag(str(folder), bundle_path=folder, bundle_name="duplicates")
    ((failed, error),) = bag.import_errors.items()
    assert failed.endswith("b.py") and f"is also built from {folder / 'a.yaml'}" in error
