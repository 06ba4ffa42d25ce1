"""The one module that knows the installed Airflow minor, run on every supported minor by `make test-matrix`."""

from __future__ import annotations

import airflow
import pytest

from airflow_matview import version_compat as compat

pytestmark = pytest.mark.airflow_run  # `make test-matrix` runs these on every supported Airflow minor


def test_every_moved_name_imports_on_this_airflow() -> None:
    for name in compat.__all__:
        assert hasattr(compat, name), name
    assert airflow.__version__ == compat.AIRFLOW_VERSION


def test_a_feature_of_a_newer_airflow_is_one_clear_line() -> None:
    assert compat.require("on_change", "3.1") is None
    assert compat.require("on_change", "3.1.0", installed="3.1.8") is None
    assert compat.require("on_change", "3.2", installed="3.1.8") == (
        "on_change needs Apache Airflow 3.2 or newer, and this is Airflow 3.1.8: upgrade Airflow (with its "
        "constraints file) or remove the setting"
    )
    assert compat.require("on_change", "3.3", installed="3.3.0rc1") is None  # a release candidate has the feature
    newest = compat.require("x", "99.0")
    assert newest is not None and f"this is Airflow {airflow.__version__}" in newest
