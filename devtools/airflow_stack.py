"""A real Airflow on loopback: api-server, scheduler, dag-processor and triggerer with the LocalExecutor.

Its metadata database lives in the throwaway PostgreSQL cluster (database ``airflow``), its ``AIRFLOW_HOME`` in a
temporary folder. Every process runs in its own process group, and :meth:`AirflowStack.stop` ends each group, so no
task runner or gunicorn worker outlives the stack.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from devtools.pgcluster import free_port

if TYPE_CHECKING:
    from devtools.pgcluster import PostgresCluster

AIRFLOW_BIN = Path(sys.executable).parent / "airflow"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
USERNAME = "admin"


class AirflowStack:
    """Airflow's long-running components, configured by environment variables only.

    :param cluster: the PostgreSQL server that holds the metadata database.
    :param dags_folder: the DAGs folder the dag-processor parses.
    :param connections: Airflow connections as ``conn_id -> URI``.
    :param port: the api-server's port (a free one by default).
    :param triggerer: also run the triggerer, which runs deferred work, Deadline Alert callbacks
        (``max_staleness``) and the watchers of ``on_change`` views; it waits idle until there is work.
    """

    def __init__(
        self,
        cluster: PostgresCluster,
        dags_folder: Path,
        connections: dict[str, str],
        port: int | None = None,
        triggerer: bool = True,
    ) -> None:
        self.components = COMPONENTS if triggerer else tuple(c for c in COMPONENTS if c != "triggerer")
        self.cluster = cluster
        self.dags_folder = dags_folder
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.password = secrets.token_urlsafe(12)
        self.home = Path(tempfile.mkdtemp(prefix="matview-airflow-"))
        self.logs = self.home / "process-logs"
        self.logs.mkdir()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._log_files: list[IO[bytes]] = []
        passwords = self.home / "passwords.json"
        passwords.write_text(json.dumps({USERNAME: self.password}))
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self._metadata_uri(),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            **{f"AIRFLOW_CONN_{conn_id.upper()}": uri for conn_id, uri in connections.items()},
        }

    def _metadata_uri(self) -> str:
        self.cluster.create_database("airflow")
        return self.cluster.uri("airflow").replace("postgresql://", "postgresql+psycopg2://", 1)

    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run one ``airflow`` CLI command against this stack."""
        return subprocess.run(
            [str(AIRFLOW_BIN), *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def start(self, timeout: float = 180) -> None:
        """Migrate the metadata database, start the components and wait until the API answers."""
        migrated = self.airflow("db", "migrate")
        if migrated.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{migrated.stdout[-3000:]}{migrated.stderr[-3000:]}")
        for component in self.components:
            log = (self.logs / f"{component}.log").open("wb")
            self._log_files.append(log)
            self.processes[component] = subprocess.Popen(
                [str(AIRFLOW_BIN), component],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_until_healthy(timeout)

    def _wait_until_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for component, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"airflow {component} exited with {process.returncode}:\n{self.log(component)}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as response:
                    health = json.load(response)
                if all(health.get(part, {}).get("status") == "healthy" for part in ("metadatabase", "scheduler")) and (
                    health.get("dag_processor") or {}
                ).get("status") in ("healthy", None):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
                pass
            time.sleep(1)
        raise TimeoutError(f"Airflow did not become healthy within {timeout:.0f}s:\n{self.log('api-server')}")

    def log(self, component: str, tail: int = 4000) -> str:
        """The last ``tail`` characters a component printed."""
        path = self.logs / f"{component}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def surviving_processes(self) -> list[int]:
        """The live pids in the components' sessions: task processes move to process groups of their own, but
        stay in the session of the component that started them."""
        sessions = {process.pid for process in self.processes.values()}
        survivors = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                state, _, _, session = stat.read_text().rsplit(")", 1)[1].split()[:4]
                if int(session) in sessions and state != "Z":
                    survivors.append(int(stat.parent.name))
        return survivors

    def stop(self) -> None:
        """End every component (SIGTERM to its process group, then SIGKILL to every process left in its session
        after 15 s) and remove ``AIRFLOW_HOME``.

        :raises RuntimeError: when a process of the stack survives that.
        """
        for process in self.processes.values():
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        deadline = time.monotonic() + 5
        while True:  # again and again: a process may have forked after the previous pass
            for pid in (survivors := self.surviving_processes()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for process in self.processes.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=0.1)
            if not survivors or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        for log in self._log_files:
            log.close()
        self.processes.clear()
        shutil.rmtree(self.home, ignore_errors=True)
        if survivors:
            raise RuntimeError(f"Airflow processes survived SIGKILL: {survivors}")

    def __enter__(self) -> AirflowStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen[Any], signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


class ApiClient:
    """Airflow's REST API (``/api/v2``) with a token from the simple auth manager, as the UI uses it.

    :param stack: the running Airflow.
    """

    def __init__(self, stack: AirflowStack) -> None:
        self.base = stack.url
        token = self._request("POST", "/auth/token", {"username": USERNAME, "password": stack.password})
        self.token = token["access_token"]

    def _request(self, method: str, path: str, body: object | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if getattr(self, "token", None):
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"{method} {path} -> {error.code}: {error.read().decode(errors='replace')}") from None
        return json.loads(payload) if payload else None

    def get(self, path: str) -> Any:
        return self._request("GET", f"/api/v2{path}")

    def post(self, path: str, body: object) -> Any:
        return self._request("POST", f"/api/v2{path}", body)

    def patch(self, path: str, body: object) -> Any:
        return self._request("PATCH", f"/api/v2{path}", body)

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict[str, Any]:
        """The DAG once the dag-processor has parsed it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return dict(self.get(f"/dags/{dag_id}"))
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(1)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 120) -> dict[str, Any]:
        """The DAG run once it has finished (success or failed)."""
        deadline = time.monotonic() + timeout
        while True:
            run = dict(self.get(f"/dags/{dag_id}/dagRuns/{run_id}"))
            if run["state"] in ("success", "failed"):
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} of {dag_id} still {run['state']} after {timeout:.0f}s")
            time.sleep(1)
