"""Run some tests on other Airflow versions and Pythons, each in its own venv built with our constraints.

``python -m devtools.matrix 3.1.8:python3.10 3.2.2:python3.13 -- -m airflow_run`` builds (or reuses)
``.venv-matrix/af3.1.8-py3.10`` and ``.venv-matrix/af3.2.2-py3.13`` with ``constraints/airflow-<minor>.txt``,
runs pytest with the arguments after ``--`` in each, and prints one line per cell with its result and times.
Cells run two at a time (``MATRIX_JOBS``; each has its own venv, PostgreSQL server, ``AIRFLOW_HOME`` and free
ports), each into ``.venv-matrix/<cell>.log``, printed once all have ended. A Python that is not installed is
replaced by the interpreter running this script (the Airflow minor is what must be covered), and the summary says
so. Exits 1 if any cell failed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
ROOT = REPO / ".venv-matrix"
#: The server every cell's DB tests run on: a wheel for every Python (pgserver's 16 has none for 3.13).
PG_MAJOR = "17"
#: Cells run at once: two keep a 2-core machine busy (most of a cell's time waits on pip or on Airflow).
JOBS = int(os.environ.get("MATRIX_JOBS", "2"))


@dataclass
class Cell:
    airflow: str
    python: str
    note: str = ""
    result: str = "not run"
    install_s: float = 0.0
    test_s: float = 0.0
    log: Path | None = None

    @property
    def minor(self) -> str:
        return ".".join(self.airflow.split(".")[:2])


def _python_version(python: str) -> str:
    out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True)
    return out.stdout.decode().strip() if out.returncode == 0 else ""


def find_python(name: str) -> str | None:
    """``python3.12`` on PATH if it runs (a pyenv shim may not), else pyenv's own copy of that version."""
    wanted = name.removeprefix("python")
    found = shutil.which(name)
    if found and _python_version(found) == wanted:
        return found
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    for candidate in sorted(pyenv_root.glob(f"versions/{wanted}.*/bin/{name}"), reverse=True):
        if _python_version(str(candidate)) == wanted:
            return str(candidate)
    return None


def build(cell: Cell, log: IO[str]) -> Path:
    """The cell's venv, created and installed if its stamp is older than the constraints or pyproject."""
    interpreter = find_python(cell.python)
    if interpreter is None:
        cell.note = f"{cell.python} not installed here: ran on {sys.executable}"
        interpreter = sys.executable
    venv = ROOT / f"af{cell.airflow}-py{_python_version(interpreter)}"
    stamp = venv / ".installed"
    constraints = REPO / "constraints" / f"airflow-{cell.minor}.txt"
    inputs = [constraints, REPO / "pyproject.toml"]
    if stamp.exists() and all(stamp.stat().st_mtime >= path.stat().st_mtime for path in inputs):
        return venv
    started = time.monotonic()
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    requirements = ["-c", str(constraints), "-e", f"{REPO}[dev]", f"apache-airflow=={cell.airflow}"]
    for command in (
        [interpreter, "-m", "venv", "--clear", str(venv)],
        [*pip, "--upgrade", "pip"],
        [*pip, *requirements],
    ):
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)
    stamp.touch()
    cell.install_s = time.monotonic() - started
    return venv


def run(cell: Cell, pytest_args: list[str]) -> bool:
    ROOT.mkdir(exist_ok=True)
    with (ROOT / f"af{cell.airflow}-{cell.python}.log").open("w") as log:
        cell.log = Path(log.name)
        try:
            venv = build(cell, log)
        except subprocess.CalledProcessError as error:
            cell.result = f"install failed ({error.cmd[-1]})"
            return False
        started = time.monotonic()
        env = {**os.environ, "MATVIEW_PG": PG_MAJOR}
        command = [str(venv / "bin" / "python"), "-m", "pytest", "-p", "no:cacheprovider", *pytest_args]
        print(f"=== Airflow {cell.airflow}, {venv.name}: {' '.join(command[1:])}", file=log, flush=True)
        done = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    cell.test_s = time.monotonic() - started
    cell.result = "passed" if done.returncode == 0 else f"FAILED (pytest exit {done.returncode})"
    return done.returncode == 0


def main(argv: list[str]) -> int:
    if "--" in argv:
        split = argv.index("--")
        specs, pytest_args = argv[:split], argv[split + 1 :]
    else:
        specs, pytest_args = argv, ["-m", "airflow_run"]
    cells = [Cell(airflow, python) for airflow, python in (spec.split(":", 1) for spec in specs)]
    # Cells that would share a venv (a Python missing here runs on this interpreter) run one after the other.
    by_venv: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        interpreter = find_python(cell.python) or sys.executable
        by_venv.setdefault((cell.airflow, _python_version(interpreter)), []).append(cell)
    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        runs = pool.map(lambda group: [run(cell, pytest_args) for cell in group], by_venv.values())
        ok = [passed for group in runs for passed in group]
    for cell in cells:
        if cell.log is not None:
            print(f"\n{cell.log.read_text(errors='replace')}", end="", flush=True)
    print(f"\nAirflow matrix (PostgreSQL {PG_MAJOR}):")
    for cell in cells:
        times = f"install {cell.install_s:.0f} s, tests {cell.test_s:.0f} s"
        print(f"  Airflow {cell.airflow:7} {cell.python:11} {cell.result:28} {times}  {cell.note}".rstrip())
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
