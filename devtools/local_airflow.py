"""A local Airflow to click around in: ``make airflow``.

It starts a throwaway PostgreSQL with the reference scenario, then Airflow's api-server, scheduler,
dag-processor and triggerer (``--no-triggerer`` to leave it out; ``--executor celery`` adds Redis and two Celery
workers) on loopback with this repository's ``dags/`` folder, prints the URL and the login, and runs until Ctrl-C
(or SIGTERM, or SIGHUP), when it stops every process it started, PostgreSQL last, and removes their files.
More signals during that clean-up are ignored, so none of those processes outlives this one.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import get_args

import psycopg

from devtools.harness.airflow_stack import USERNAME, AirflowStack, Executor, celery_unavailable
from devtools.harness.pgcluster import ClusterUnavailable, embedded_cluster
from devtools.harness.scenario import VIEW, add_new_users, create_reference_scenario
from devtools.harness.shutdown import ShutdownGuard

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8080, help="the api-server's port (default 8080)")
    parser.add_argument(
        "--no-triggerer",
        action="store_true",
        help="do not start the triggerer (it runs max_staleness alerts and deferred tasks)",
    )
    parser.add_argument(
        "--executor",
        choices=get_args(Executor),
        default="local",
        help="local: LocalExecutor; celery: CeleryExecutor with Redis and two workers (default local)",
    )
    args = parser.parse_args(argv)
    if args.executor == "celery" and (reason := celery_unavailable()):
        print(f"Cannot start the CeleryExecutor stack: {reason}.", file=sys.stderr)
        return 2
    guard = ShutdownGuard()
    try:
        cluster = embedded_cluster()
    except ClusterUnavailable as error:
        guard.restore()
        print(f"Cannot start PostgreSQL: {error}", file=sys.stderr)
        return 2
    stack: AirflowStack | None = None
    try:
        with guard.deferred():  # a server started but not yet known to pg_ctl's wait would be left behind
            cluster.start()
        cluster.create_database("demo")
        with psycopg.connect(cluster.dsn("demo"), autocommit=True) as conn:
            create_reference_scenario(conn)
            add_new_users(conn)
        print(f"PostgreSQL {cluster.major} on 127.0.0.1:{cluster.port}, database demo (psql '{cluster.dsn('demo')}')")
        stack = AirflowStack(
            cluster,
            REPO / "dags",
            {"postgres_default": cluster.uri("demo")},
            port=args.port,
            triggerer=not args.no_triggerer,
            executor=args.executor,
        )
        print(f"Starting Airflow ({', '.join(stack.commands())})...", flush=True)
        stack.start()
        print(
            f"\nAirflow is running at {stack.url}\n"
            f"  login:    {USERNAME}\n"
            f"  password: {stack.password}\n"
            f"  fleet:    {stack.url}/matview-fleet/ (in the UI: 'Materialized views' in the nav; JSON at "
            f"{stack.url}/matview-fleet/api/views)\n"
            f"  DAGs:     {REPO / 'dags'}\n"
            f"  logs:     {stack.logs}\n"
            f"  executor: {stack.env['AIRFLOW__CORE__EXECUTOR']}"
            + (f" (workers {', '.join(stack.workers)}, Redis on 127.0.0.1:{stack.redis_port})" if stack.workers else "")
            + "\n\n"
            f"The view {VIEW} shows 5 of polls_user's 7 rows: open DAG matview.public.polls_user_matt_view,\n"
            "switch it on (new DAGs start paused), click Trigger, and it shows all 7 after the run.\n"
            "Press Ctrl-C to stop everything.",
            flush=True,
        )
        while all(process.poll() is None for process in stack.processes.values()):
            time.sleep(1)
        for component, process in stack.processes.items():
            if process.poll() is not None:
                print(f"airflow {component} exited:\n{stack.log(component)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except Exception:
        if guard.received is not None:  # e.g. `airflow db migrate` got the same Ctrl-C: not an error of its own
            return 0
        raise
    finally:
        guard.stop()  # from here on, no signal interrupts the clean-up
        _say("Stopping Airflow and PostgreSQL...")
        try:
            if stack is not None:
                stack.stop()
        finally:
            cluster.destroy()
            _say("Stopped.")


def _say(message: str) -> None:
    """Print, unless the terminal or pipe is gone (make killed, window closed): the clean-up must go on."""
    with contextlib.suppress(OSError):
        print(message, flush=True)


if __name__ == "__main__":
    sys.exit(main())
