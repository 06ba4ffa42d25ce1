"""A real Airflow on loopback: api-server, scheduler and dag-processor with the LocalExecutor, or with the
CeleryExecutor: a Redis broker and two Celery workers (concurrency 2 each, hostnames ``worker1`` and ``worker2``).

Its metadata database (and Celery's result backend) lives in the throwaway PostgreSQL cluster (database
``airflow``), its ``AIRFLOW_HOME`` in a temporary folder. Every process runs in its own session, and
:meth:`AirflowStack.stop` ends each session, so no task runner, Celery child or gunicorn worker outlives the stack.
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
from typing import IO, TYPE_CHECKING, Any, Literal

from devtools.harness.pgcluster import free_port

if TYPE_CHECKING:
    from devtools.harness.pgcluster import PostgresCluster

AIRFLOW_BIN = Path(sys.executable).parent / "airflow"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
USERNAME = "admin"
Executor = Literal["local", "celery"]
CELERY_WORKERS = ("worker1", "worker2")
REPO = Path(__file__).resolve().parents[2]


def celery_unavailable() -> str | None:
    """Why the CeleryExecutor stack cannot run here, or ``None`` when it can."""
    if shutil.which("redis-server") is None:
        return (
            "redis-server is not installed (`make test` and `make airflow EXECUTOR=celery` install Debian's "
            "redis-server with apt-get when run as root; otherwise: apt-get install redis-server)"
        )
    try:
        import airflow.providers.celery  # noqa: F401
    except ImportError:
        return "apache-airflow-providers-celery is not installed (pip install -e '.[dev]')"
    return None


def worker_hostname() -> str:
    """Airflow's ``hostname_callable`` in the stack's Celery workers: each worker's name, so that task instances
    show which worker ran them although both run on this host."""
    import socket

    return os.environ.get("MATVIEW_WORKER_HOSTNAME") or socket.getfqdn()


class AirflowStack:
    """Airflow's three long-running components, configured by environment variables only.

    :param cluster: the PostgreSQL server that holds the metadata database.
    :param dags_folder: the DAGs folder the dag-processor parses.
    :param connections: Airflow connections as ``conn_id -> URI``.
    :param port: the api-server's port (a free one by default).
    :param triggerer: also run the triggerer, which runs deferred work, Deadline Alert callbacks
        (``max_staleness``) and the watchers of ``on_change`` views; it waits idle until there is work.
    :param executor: ``local`` (LocalExecutor) or ``celery`` (CeleryExecutor, Redis and two workers).
    :param triggerers: how many triggerers (high availability): the first is ``triggerer``, the others
        ``triggerer-2``, ``triggerer-3``...
    """

    def __init__(
        self,
        cluster: PostgresCluster,
        dags_folder: Path,
        connections: dict[str, str],
        port: int | None = None,
        triggerer: bool = True,
        executor: Executor = "local",
        triggerers: int = 1,
    ) -> None:
        self.components = COMPONENTS if triggerer else tuple(c for c in COMPONENTS if c != "triggerer")
        if triggerer:
            self.components += tuple(f"triggerer-{number}" for number in range(2, triggerers + 1))
        self.cluster = cluster
        self.executor = executor
        self.redis_port = free_port()
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
            # Free ports for the task and trigger log servers (8793 and 8794 by default): stacks run side by side.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            **{f"AIRFLOW_CONN_{conn_id.upper()}": uri for conn_id, uri in connections.items()},
        }
        if executor == "celery":
            self.env.update(
                {
                    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                    "AIRFLOW__CORE__PARALLELISM": "32",
                    "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
                    "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
                    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
                }
            )

    def _metadata_uri(self) -> str:
        self.cluster.create_database("airflow")
        return self.cluster.uri("airflow").replace("postgresql://", "postgresql+psycopg2://", 1)

    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run one ``airflow`` CLI command against this stack."""
        return subprocess.run(
            [str(AIRFLOW_BIN), *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def commands(self) -> dict[str, tuple[list[str], dict[str, str]]]:
        """Each process of the stack: its command line and environment."""
        airflow = str(AIRFLOW_BIN)
        commands = {}
        if self.executor == "celery":
            redis = [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port"]
            redis += [str(self.redis_port), "--save", "", "--appendonly", "no", "--dir", str(self.home)]
            commands["redis"] = (redis, self.env)
        commands.update(
            {
                component: ([airflow, "triggerer" if component.startswith("triggerer-") else component], self.env)
                for component in self.components
            }
        )
        if self.executor == "celery":
            for name in CELERY_WORKERS:
                worker = [airflow, "celery", "worker", "--concurrency", "2", "--celery-hostname", f"{name}@%h"]
                worker += ["--queues", f"default,{name}"]  # a task with queue=<name> runs on that worker
                env = {
                    **self.env,
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), self.env.get("PYTHONPATH")])),
                    "AIRFLOW__CORE__HOSTNAME_CALLABLE": "devtools.harness.airflow_stack.worker_hostname",
                    "MATVIEW_WORKER_HOSTNAME": name,
                }
                commands[f"celery-{name}"] = ([*worker, "--skip-serve-logs"], env)
        return commands

    def start(self, timeout: float = 180) -> None:
        """Migrate the metadata database, start the components and wait until the API answers (and, with the
        CeleryExecutor, until both workers are ready)."""
        if self.executor == "celery" and (reason := celery_unavailable()):
            raise RuntimeError(f"Cannot start the CeleryExecutor stack: {reason}.")
        migrated = self.airflow("db", "migrate")
        if migrated.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{migrated.stdout[-3000:]}{migrated.stderr[-3000:]}")
        for name in self.commands():
            self._spawn(name)
        self._wait_until_healthy(timeout)

    def _spawn(self, name: str) -> None:
        command, env = self.commands()[name]
        log = (self.logs / f"{name}.log").open("ab")
        self._log_files.append(log)
        self.processes[name] = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def exited(self) -> list[str]:
        """The processes of the stack that have exited (a supervisor such as systemd or Kubernetes would restart
        them)."""
        return [name for name, process in self.processes.items() if process.poll() is not None]

    def restart_exited(self) -> list[str]:
        """Start again every process of the stack that has exited, as a supervisor (systemd ``Restart=always``, a
        Kubernetes pod's restart policy) does.

        :return: each one restarted, as ``name (exit code)``.
        """
        exited = self.exited()
        restarted = [f"{name} (exit {self.processes[name].returncode})" for name in exited]
        for name in exited:
            self.restart_component(name)
        return restarted

    def restart_component(self, name: str, signum: signal.Signals = signal.SIGTERM, timeout: float = 30) -> float:
        """Stop one process of the stack (:meth:`stop_component`), then start it again with the same command.

        :return: the seconds its session took to end.
        """
        ended = self.stop_component(name, signum, timeout)
        self._spawn(name)
        return ended

    def start_component(self, name: str) -> None:
        """Start a process of the stack that was stopped, with its command and environment."""
        self._spawn(name)

    def stop_component(self, name: str, signum: signal.Signals = signal.SIGTERM, timeout: float = 30) -> float:
        """Stop one process of the stack as a supervisor does: ``signum`` to every process of its session, SIGKILL
        to what is left after ``timeout`` seconds.

        :param name: a key of :attr:`processes`, e.g. ``scheduler`` or ``celery-worker1``.
        :param signum: the signal that stops it.
        :param timeout: seconds to wait for the session to end before SIGKILL.
        :return: the seconds its session took to end.
        """
        session = self.processes[name].pid
        started = time.monotonic()
        for pid in session_pids(session):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        while pids := session_pids(session):
            if time.monotonic() - started > timeout:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            self.processes[name].poll()  # reaps the leader, which is our child
            time.sleep(0.1)
        return time.monotonic() - started

    def _wait_until_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for component, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"airflow {component} exited with {process.returncode}:\n{self.log(component)}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as response:
                    health = json.load(response)
                parts = ("metadatabase", "scheduler", *(("triggerer",) if "triggerer" in self.components else ()))
                if (
                    all(health.get(part, {}).get("status") == "healthy" for part in parts)
                    and (health.get("dag_processor") or {}).get("status") in ("healthy", None)
                    and all(" ready." in self.log(f"celery-{name}", tail=100_000) for name in self.workers)
                ):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
                pass
            time.sleep(1)
        raise TimeoutError(f"Airflow did not become healthy within {timeout:.0f}s:\n{self.log('api-server')}")

    @property
    def workers(self) -> tuple[str, ...]:
        """The Celery workers' hostnames (none with the LocalExecutor)."""
        return CELERY_WORKERS if self.executor == "celery" else ()

    def log(self, component: str, tail: int = 4000) -> str:
        """The last ``tail`` characters a component printed."""
        path = self.logs / f"{component}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def surviving_processes(self) -> list[int]:
        """The live pids of the stack: every process in a component's session (task processes move to process
        groups of their own, but stay in the session of the component that started them), and every process whose
        environment names this stack's ``AIRFLOW_HOME``, which finds one that was started but not yet recorded
        when a signal interrupted :meth:`start`, and any that left its session."""
        sessions = {process.pid for process in self.processes.values()}
        marker = f"\0AIRFLOW_HOME={self.home}\0".encode()
        survivors = []
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                pid = int(proc.name)
                state, _, _, session = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:4]
                if state == "Z" or pid == os.getpid():
                    continue
                if int(session) in sessions or marker in b"\0" + (proc / "environ").read_bytes() + b"\0":
                    survivors.append(pid)
        return survivors

    def stop(self) -> None:
        """End every component (SIGTERM to its process group, then SIGKILL to every process of the stack left
        after 15 s) and remove ``AIRFLOW_HOME``.

        :raises RuntimeError: when a process of the stack survives that.
        """
        for process in self.processes.values():
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        deadline = time.monotonic() + 10
        quiet_passes = 0
        while quiet_passes < 3:  # again and again: a process may have forked (or exec'd) after the previous pass
            for pid in (survivors := self.surviving_processes()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for process in self.processes.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=0.1)
            quiet_passes = 0 if survivors else quiet_passes + 1
            if time.monotonic() > deadline:
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


def session_pids(session: int) -> list[int]:
    """The live pids (zombies left out) of one session."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session and fields[0] != "Z":
                pids.append(int(stat.parent.name))
    return pids


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
