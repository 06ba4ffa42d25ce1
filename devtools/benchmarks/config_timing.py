"""CPU time to read and validate a generated config of N views, each in a fresh interpreter (as the dag-processor
parses a DAG file cold). ``python -m devtools.benchmarks.config_timing [--views 1000] [--runs 7]``."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = (
    "import sys, time; from airflow_matview.config import load_config; "
    "started = time.process_time(); load_config(sys.argv[1]); print(time.process_time() - started)"
)


def write_config(path: Path, views: int) -> None:
    """``views`` views, each with a cron, a duration and (but the first) an ``after:``."""
    lines = ["defaults:", "  conn_id: postgres_default", "  tags: [reporting]", "views:"]
    for index in range(views):
        lines += [
            f"  - name: public.view_{index:05d}",
            f"    schedule: '{index % 60} * * * *'",
            "    lock_timeout: 30s",
        ]
        if index:
            lines.append(f"    after: [public.view_{index - 1:05d}]")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--views", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "matviews.yaml"
        write_config(path, args.views)
        seconds = [
            float(
                subprocess.run(
                    [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True
                ).stdout
            )
            for _ in range(args.runs)
        ]
    print(
        f"load_config, {args.views:,} views: median {statistics.median(seconds) * 1000:.0f} ms CPU "
        f"(min {min(seconds) * 1000:.0f}, max {max(seconds) * 1000:.0f}, {args.runs} fresh interpreters)"
    )


if __name__ == "__main__":
    main()
