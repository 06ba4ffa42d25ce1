"""What parsing the DAG file leaves behind: no driver or hook imported, the garbage collector as it was."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import pytest

from airflow_matview.config import InvalidConfigFileError, load_config
from devtools.harness.paths import REPO

if TYPE_CHECKING:
    from pathlib import Path

CONFIG = {
    "defaults": {"retry_delay": "1m"},
    "views": [{"name": "public.a"}, {"name": "public.b", "after": ["public.a"]}],
}


def test_parsing_imports_no_driver_hook_or_connection(tmp_path: Path) -> None:
    """A parse in a fresh interpreter (as the dag-processor's) imports neither psycopg nor the postgres hook."""
    (tmp_path / "matviews.yaml").write_text(json.dumps(CONFIG))
    (tmp_path / "matviews.py").write_text((REPO / "dags" / "matviews.py").read_text())
    script = textwrap.dedent(
        f"""
        import json, runpy, sys
        module = runpy.run_path({str(tmp_path / "matviews.py")!r})
        heavy = ["psycopg", "airflow.providers.postgres.hooks.postgres", "airflow_matview.connections"]
        print(json.dumps({{"dags": sorted(k for k in module if k.startswith("matview.")),
                           "imported": [name for name in heavy if name in sys.modules]}}))
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.splitlines()[-1])
    assert result == {"dags": ["matview.public.a", "matview.public.b"], "imported": []}


@pytest.mark.parametrize("valid", [True, False], ids=["valid", "invalid"])
def test_reading_a_config_leaves_the_garbage_collector_on(tmp_path: Path, valid: bool) -> None:
    path = tmp_path / "matviews.yaml"
    path.write_text(json.dumps(CONFIG if valid else {"views": [{"name": "no_schema"}]}))
    assert gc.isenabled()
    if valid:
        load_config(path)
    else:
        with pytest.raises(InvalidConfigFileError):
            load_config(path)
    assert gc.isenabled()


def test_reading_a_config_leaves_a_paused_garbage_collector_paused(tmp_path: Path) -> None:
    path = tmp_path / "matviews.yaml"
    path.write_text(json.dumps(CONFIG))
    gc.disable()
    try:
        load_config(path)
        assert not gc.isenabled()
    finally:
        gc.enable()
