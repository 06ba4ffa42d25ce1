"""What every real-Airflow test module sets up once: a throwaway PostgreSQL holding a scenario database, a DAGs
folder, an :class:`~devtools.harness.airflow_stack.AirflowStack` on loopback with its DAGs parsed, and, whatever
happens, every process and server stopped at the end (the stack first, then the servers)."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import yaml

from devtools.harness.airflow_stack import AirflowStack, ApiClient
from devtools.harness.pgcluster import embedded_cluster

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from devtools.harness.pgcluster import PostgresCluster

REPO = Path(__file__).resolve().parents[2]


class Deployment:
    """A running stack, its API client and the scenario database its ``postgres_default`` connection names.

    :param stack: the running Airflow.
    :param api: a client of its REST API, signed in.
    :param dsn: the scenario database.
    :param started_in: seconds from starting the stack to every DAG parsed.
    :param server: the PostgreSQL server holding the scenario database (a test may stop and start it).
    """

    def __init__(
        self, stack: AirflowStack, api: ApiClient, dsn: str, started_in: float, server: PostgresCluster | None = None
    ) -> None:
        self.stack = stack
        self.api = api
        self.dsn = dsn
        self.started_in = started_in
        self.server = server

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True)

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Start a manual run of ``dag_id`` now; its run id."""
        run = self.api.post(f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return str(run["dag_run_id"])

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        """The runs of ``dag_id``, oldest first."""
        return list(self.api.get(f"/dags/{dag_id}/dagRuns?order_by=run_after")["dag_runs"])

    def http(self, method: str, path: str, token: str | None = None, timeout: float = 30) -> tuple[int, Any, bytes]:
        """``(status, headers, body)`` of one request to the api-server, signed in as the admin by default."""
        request = urllib.request.Request(f"{self.stack.url}{path}", method=method)
        request.add_header("Authorization", f"Bearer {token or self.api.token}")
        request.add_header("Cookie", f"_token={token or self.api.token}")  # the page reads the UI's cookie
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    def fleet(self) -> dict[str, Any]:
        status, _, body = self.http("GET", "/matview-fleet/api/views")
        assert status == 200, body
        return dict(json.loads(body))

    def fleet_view(self, dag_id: str) -> dict[str, Any]:
        return next(view for view in self.fleet()["views"] if view["dag_id"] == dag_id)


def matviews_dags(folder: Path, config: dict[str, Any]) -> Path:
    """``folder`` as a DAGs folder: the shipped ``dags/matviews.py`` reading ``config`` as its ``matviews.yaml``."""
    shutil.copy(REPO / "dags" / "matviews.py", folder / "matviews.py")
    (folder / "matviews.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


@contextlib.contextmanager
def deployed(
    dags: Path,
    scenario: Iterable[str] | Callable[[psycopg.Connection], None],
    dag_ids: Iterable[str],
    *,
    connections: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    unpause: bool = False,
    metadata_server_of_its_own: bool = False,
    **stack_options: Any,
) -> Iterator[Deployment]:
    """Start the stack over ``dags`` and wait until each of ``dag_ids`` is parsed; stop everything on exit.

    :param dags: the DAGs folder.
    :param scenario: SQL statements, or a function of an autocommit connection, that fill the scenario database.
    :param dag_ids: the DAGs to wait for.
    :param connections: Airflow connections besides ``postgres_default`` (the scenario database).
    :param env: Airflow settings (``AIRFLOW__...``) on top of the stack's own.
    :param unpause: unpause each of ``dag_ids`` once parsed.
    :param metadata_server_of_its_own: keep Airflow's metadata database on a server of its own (a test that
        restarts it does not touch the views); by default one server holds both.
    :param stack_options: passed to :class:`AirflowStack` (``executor``, ``triggerer``...).
    """
    with contextlib.ExitStack() as cleanup:
        views = embedded_cluster()
        cleanup.callback(views.destroy)
        views.start()
        metadata = views
        if metadata_server_of_its_own:
            metadata = embedded_cluster()
            cleanup.callback(metadata.destroy)
            metadata.start()
        views.create_database("scenario")
        with psycopg.connect(views.dsn("scenario"), autocommit=True) as conn:
            if callable(scenario):
                scenario(conn)
            else:
                for statement in scenario:
                    conn.execute(statement)
        stack = AirflowStack(
            metadata, dags, {"postgres_default": views.uri("scenario"), **(connections or {})}, **stack_options
        )
        stack.env.update(env or {})
        cleanup.callback(stack.stop)
        started = time.monotonic()
        stack.start()
        api = ApiClient(stack)
        for dag_id in dag_ids:
            api.wait_for_dag(dag_id)
            if unpause:
                api.patch(f"/dags/{dag_id}", {"is_paused": False})
        yield Deployment(stack, api, views.dsn("scenario"), time.monotonic() - started, views)
