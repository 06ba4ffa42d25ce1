"""The config file is read as UTF-8 whatever the locale (in a fresh interpreter under the C locale)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


def test_the_file_is_read_as_utf8_whatever_the_locale(tmp_path: Path) -> None:
    path = tmp_path / "matviews.yaml"
    path.write_text("# caf\u00e9 views\nviews:\n  - name: public.caf\u00e9\n", encoding="utf-8")
    # Without UTF-8 mode, Python's default encoding follows the locale: ASCII once LC_CTYPE is C. Airflow itself (which
    # the package imports) reads its own files in that encoding, so the locale turns to C after the import.
    env = {**os.environ, "LC_ALL": "C.UTF-8", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    env.pop("PYTHONIOENCODING", None)
    script = (
        "import locale, sys; from airflow_matview.config import load_config; "
        "locale.setlocale(locale.LC_ALL, 'C'); assert locale.getpreferredencoding(False) == 'ANSI_X3.4-1968'; "
        "print(ascii([view.view.name for view in load_config(sys.argv[1]).views]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "['caf\\xe9']\n"
