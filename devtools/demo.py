"""The reference scenario, end to end: throwaway PostgreSQL, a real ``airflow dags test``, rows before and after.

Run it with ``make demo``. It leaves nothing running: the server and the temporary AIRFLOW_HOME are removed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

from devtools.harness.pgcluster import ClusterUnavailable, embedded_cluster
from devtools.harness.scenario import VIEW, add_new_users, create_reference_scenario, view_rows

REPO = Path(__file__).resolve().parent.parent
DAG_ID = "matview.public.polls_user_matt_view"
STRUCTLOG_LINE = re.compile(r"^\S+ \[\w+\s*\] (.+?)\s+\[[\w.]+\]")


def show(title: str, rows: list[tuple[int, str, int]]) -> None:
    print(f"\n{title} ({len(rows)} rows)")
    print("  id | name  | age")
    for user_id, name, age in rows:
        print(f"  {user_id:>2} | {name:<5} | {age}")


def airflow(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "airflow"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def main() -> int:
    try:
        cluster = embedded_cluster()
    except ClusterUnavailable as error:
        print(f"Cannot start PostgreSQL: {error}", file=sys.stderr)
        return 2
    airflow_home = Path(tempfile.mkdtemp(prefix="matview-demo-airflow-"))
    try:
        cluster.start()
        print(f"Started a throwaway PostgreSQL {cluster.major} on 127.0.0.1:{cluster.port}")
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            create_reference_scenario(conn)
            show(f"{VIEW} after creation", view_rows(conn))
            add_new_users(conn)
            print("\nInserted two new users aged 25 or more into polls_user.")
            show(f"{VIEW} before the DAG runs", view_rows(conn))

        env = {
            **os.environ,
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_POSTGRES_DEFAULT": cluster.uri(),
        }
        print(f"\n$ airflow db migrate   (AIRFLOW_HOME={airflow_home})")
        migrated = airflow(["db", "migrate"], env)
        if migrated.returncode != 0:
            print(migrated.stdout[-3000:], migrated.stderr[-3000:])
            return 1
        print(f"$ airflow dags test {DAG_ID}")
        tested = airflow(["dags", "test", DAG_ID], env)
        log = tested.stdout + tested.stderr
        for line in log.splitlines():
            message = STRUCTLOG_LINE.match(line)
            if message and ("airflow_matview" in line or "Marking run" in line):
                print("  " + message.group(1))
        if tested.returncode != 0:
            print(log[-5000:])
            return 1

        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            after = view_rows(conn)
        show(f"{VIEW} after the DAG ran", after)
        return 0 if len(after) == 7 else 1
    finally:
        cluster.destroy()
        shutil.rmtree(airflow_home, ignore_errors=True)
        print("\nStopped PostgreSQL and removed the temporary AIRFLOW_HOME.")


if __name__ == "__main__":
    sys.exit(main())
