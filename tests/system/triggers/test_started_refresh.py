"""start_from_trigger against a refresh on a worker, in a real Airflow (api-server, scheduler, dag-processor,
triggerer, LocalExecutor): pairs of identical views from one config, one refreshed on a worker and one started in
the triggerer, compared on their XCom, asset events, chain runs, notifications, skips, failures, refresh history
rows and StatsD metrics."""

from __future__ import annotations

import json
import socket
import textwrap
import threading
import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from airflow_matview.database import history
from airflow_matview.database.identifiers import parse_qualified_name
from devtools.harness.deployment import Deployment, deployed, matviews_dags

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [pytest.mark.timeout(1200), pytest.mark.one_server]

PATHS = ("w", "t")  # on a worker, started in the triggerer
NOTES_ENV = "MATVIEW_TEST_NOTES"
NOTIFIER = textwrap.dedent(
    '''
    """A notifier of the tests: one line per call in the file $MATVIEW_TEST_NOTES."""
    import os


    def note(context, label):
        with open(os.environ["MATVIEW_TEST_NOTES"], "a") as notes:
            notes.write(f"{label} {context['matview']['view']} {context['matview']['event']}\\n")
    '''
)


HISTORY = "public.matview_history"


def dag(view: str) -> str:
    return f"matview.public.{view}"


def scenario(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TABLE src (id integer PRIMARY KEY, v integer NOT NULL)")
    conn.execute("INSERT INTO src SELECT g, g * 7 FROM generate_series(1, 10) g")
    conn.execute("CREATE TABLE ratios (id integer PRIMARY KEY, n integer, d integer)")
    conn.execute("INSERT INTO ratios VALUES (1, 10, 2)")
    for path in PATHS:
        for name in ("view", "lone", "skip", "locked", "dagsnote"):
            conn.execute(f"CREATE MATERIALIZED VIEW {path}_{name} AS SELECT id, v FROM src")
            conn.execute(f"CREATE UNIQUE INDEX ON {path}_{name} (id)")
        conn.execute(f"CREATE MATERIALIZED VIEW {path}_follower AS SELECT count(*) AS n FROM {path}_view")
        conn.execute(f"CREATE MATERIALIZED VIEW {path}_bad AS SELECT id, n / d AS q FROM ratios")
    conn.execute("INSERT INTO ratios VALUES (2, 1, 0)")  # the *_bad views' query fails from now on
    for statement in history.create_statements(parse_qualified_name(HISTORY)):
        conn.execute(statement)


def config() -> dict[str, Any]:
    views: list[dict[str, Any]] = []
    for path in PATHS:
        own = {"start_from_trigger": True} if path == "t" else {}
        views += [
            {"name": f"public.{path}_view", **own},
            {"name": f"public.{path}_follower", "after": [f"public.{path}_view"], **own},
            {"name": f"public.{path}_lone", **own, "on_success": [{"notifier": "notes.note", "label": path}]},
            {"name": f"public.{path}_skip", "skip_if_unchanged": True, **own},
            {"name": f"public.{path}_bad", "retries": 2, **own},
            {"name": f"public.{path}_locked", "lock_timeout": "1s", "retries": 1, "retry_delay": "20s", **own},
        ]
    # A notifier in the DAGs folder, which the triggerer cannot import: a worker finishes to call it.
    views.append(
        {
            "name": "public.t_dagsnote",
            "start_from_trigger": True,
            "on_success": [{"notifier": "dagnotes.note", "label": "d"}],
        }
    )
    return {"defaults": {"schedule": None, "retries": 0, "history": HISTORY}, "views": views}


class StatsdListener:
    """A StatsD server on loopback: a UDP socket drained by a thread (Airflow's own metrics would fill its buffer)."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.5)
        self.lines: list[str] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.socket.getsockname()[1])

    def _drain(self) -> None:
        while not self.stopped.is_set():
            try:
                packet = self.socket.recv(65536)
            except TimeoutError:
                continue
            self.lines += packet.decode(errors="replace").splitlines()

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.socket.close()


class Paths(Deployment):
    notes: Path
    statsd: StatsdListener

    def metadata(self) -> psycopg.Connection:
        uri = self.stack.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("postgresql+psycopg2://", "postgresql://")
        return psycopg.connect(uri, autocommit=True)

    def run(self, view: str, timeout: float = 300) -> dict[str, Any]:
        """Trigger the view's DAG, wait for the run to end; its refresh task instance."""
        return self.wait(view, self.trigger(dag(view)), timeout)

    def wait(self, view: str, run_id: str, timeout: float = 300) -> dict[str, Any]:
        self.api.wait_for_run(dag(view), run_id, timeout=timeout)
        return dict(self.api.get(f"/dags/{dag(view)}/dagRuns/{run_id}/taskInstances/refresh"))

    def xcom(self, ti: dict[str, Any]) -> Any:
        path = f"/dags/{ti['dag_id']}/dagRuns/{ti['dag_run_id']}/taskInstances/refresh/xcomEntries/return_value"
        return self.api.get(f"{path}?deserialize=true")["value"]

    def log(self, ti: dict[str, Any]) -> str:
        path = f"/dags/{ti['dag_id']}/dagRuns/{ti['dag_run_id']}/taskInstances/refresh/logs/{ti['try_number']}"
        return json.dumps(self.api.get(path)["content"])

    def asset_events(self, view: str) -> list[dict[str, Any]]:
        with self.metadata() as conn:
            rows = conn.execute(
                "SELECT e.extra, e.source_dag_id, e.source_task_id FROM asset_event e JOIN asset a ON a.id = "
                "e.asset_id WHERE a.uri = %s ORDER BY e.id",
                [f"matview://postgres_default/public/{view}"],
            ).fetchall()
        return [{"extra": extra, "dag_id": dag_id, "task_id": task_id} for extra, dag_id, task_id in rows]


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Paths]:
    dags = matviews_dags(tmp_path_factory.mktemp("dags"), config())
    plugins = tmp_path_factory.mktemp("plugins")
    (plugins / "notes.py").write_text(NOTIFIER)  # Airflow's plugins folder is on every component's path
    (dags / "dagnotes.py").write_text(NOTIFIER)
    notes = tmp_path_factory.mktemp("notes") / "notes.txt"
    notes.touch()
    dag_ids = [dag(view["name"].split(".")[1]) for view in config()["views"]]
    statsd = StatsdListener()
    env = {
        NOTES_ENV: str(notes),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port),
    }
    try:
        with deployed(dags, scenario, dag_ids, unpause=True, triggerer=True, env=env) as up:
            found = Paths(up.stack, up.api, up.dsn, up.started_in)
            found.notes = notes
            found.statsd = statsd
            yield found
    finally:
        statsd.close()


def same_result(result: dict[str, Any], path: str) -> dict[str, Any]:
    """A refresh's XCom (or asset event extra) with the names made path-neutral and its timing left out."""
    neutral = json.loads(json.dumps(result).replace(f"{path}_", "x_"))
    return {**neutral, "seconds": None, "lock_wait": None}


def test_a_lone_view_ends_in_the_triggerer_with_the_xcom_of_a_worker(paths: Paths) -> None:
    runs = {path: paths.trigger(dag(f"{path}_lone")) for path in PATHS}
    tis = {path: paths.wait(f"{path}_lone", run_id) for path, run_id in runs.items()}
    assert {path: ti["state"] for path, ti in tis.items()} == {"w": "success", "t": "success"}
    assert tis["w"]["queued_when"] is not None
    assert tis["t"]["queued_when"] is None, "a worker ran the task started in the triggerer"
    results = {path: paths.xcom(ti) for path, ti in tis.items()}
    assert same_result(results["t"], "t") == same_result(results["w"], "w")
    assert results["t"]["mode"] == "concurrently" and results["t"]["rows"] == 10
    assert "Refreshed public.t_lone (concurrently)" in paths.log(tis["t"]), "the task's log shows the refresh"
    # A task that ends in the triggerer registers no asset event (Airflow 3.3): nobody follows this view.
    assert len(paths.asset_events("w_lone")) == 1
    assert paths.asset_events("t_lone") == []
    # The fleet page reads the figures of a refresh that ended in the triggerer from its return value.
    shown = {path: paths.fleet_view(dag(f"{path}_lone")) for path in PATHS}
    figures = {path: (row["mode"], row["rows"], row["status"]) for path, row in shown.items()}
    assert figures == {"w": ("concurrently", 10, "fresh"), "t": ("concurrently", 10, "fresh")}
    assert shown["t"]["refresh_seconds"] == round(results["t"]["seconds"], 3)
    assert sorted(paths.notes.read_text().splitlines()) == ["t public.t_lone success", "w public.w_lone success"]


def test_a_followed_view_registers_the_same_asset_event_and_its_chain_runs(paths: Paths) -> None:
    tis = {path: paths.run(f"{path}_view") for path in PATHS}
    assert {path: ti["state"] for path, ti in tis.items()} == {"w": "success", "t": "success"}
    assert tis["t"]["queued_when"] is not None, "a worker registers the asset event of a followed view"
    events = {path: paths.asset_events(f"{path}_view") for path in PATHS}
    assert [len(found) for found in events.values()] == [1, 1]
    shapes = {path: {**found[0], "extra": same_result(found[0]["extra"], path)} for path, found in events.items()}
    assert shapes["t"] == {**shapes["w"], "dag_id": dag("t_view")}
    assert shapes["t"]["task_id"] == "refresh"
    deadline = time.monotonic() + 300
    while not all(paths.runs(dag(f"{path}_follower")) for path in PATHS):
        assert time.monotonic() < deadline, "the chains did not both run"
        time.sleep(2)
    followers = {path: paths.runs(dag(f"{path}_follower"))[0] for path in PATHS}
    assert {run["run_type"] for run in followers.values()} == {"asset_triggered"}
    for path, run in followers.items():
        ti = paths.wait(f"{path}_follower", run["dag_run_id"])
        assert ti["state"] == "success"


def test_skip_if_unchanged_skips_on_both_paths(paths: Paths) -> None:
    first = {path: paths.run(f"{path}_skip") for path in PATHS}
    assert {path: ti["state"] for path, ti in first.items()} == {"w": "success", "t": "success"}
    second = {path: paths.run(f"{path}_skip") for path in PATHS}
    assert {path: ti["state"] for path, ti in second.items()} == {"w": "skipped", "t": "skipped"}
    assert second["t"]["queued_when"] is None, "the skip needed no worker"
    assert "none of the sources of public.t_skip" in paths.log(second["t"])
    for path in PATHS:
        assert len(paths.asset_events(f"{path}_skip")) == (1 if path == "w" else 0)


def test_a_query_error_fails_at_once_on_both_paths_with_the_same_message(paths: Paths) -> None:
    tis = {path: paths.run(f"{path}_bad") for path in PATHS}
    assert {path: (ti["state"], ti["try_number"]) for path, ti in tis.items()} == {
        "w": ("failed", 1),
        "t": ("failed", 1),
    }, "a MatviewQueryError is not retried"
    for path, ti in tis.items():
        log = paths.log(ti)
        assert f"REFRESH MATERIALIZED VIEW public.{path}_bad failed" in log
        assert "division by zero" in log and "Not retried" in log


def test_a_lock_timeout_is_retried_and_the_retry_succeeds_on_both_paths(paths: Paths) -> None:
    with psycopg.connect(paths.dsn) as holder:
        holder.execute("LOCK TABLE src IN ACCESS EXCLUSIVE MODE")
        runs = {path: paths.trigger(dag(f"{path}_locked")) for path in PATHS}
        deadline = time.monotonic() + 300
        while True:
            states = {
                path: paths.api.get(f"/dags/{dag(f'{path}_locked')}/dagRuns/{run_id}/taskInstances/refresh")
                for path, run_id in runs.items()
            }
            if all(ti["state"] == "up_for_retry" for ti in states.values()):
                break  # both failed their first try for the lock, and wait 20 s to retry
            assert time.monotonic() < deadline, f"no retry: {states}"
            time.sleep(0.5)
        holder.rollback()
    tis = {path: paths.wait(f"{path}_locked", run_id) for path, run_id in runs.items()}
    assert {path: (ti["state"], ti["try_number"]) for path, ti in tis.items()} == {
        "w": ("success", 2),
        "t": ("success", 2),
    }
    assert "Timed out after 1s (lock_timeout)" in paths.log({**tis["t"], "try_number": 1})
    assert "Refreshed public.t_locked (concurrently)" in paths.log(tis["t"]), "the retry started in the triggerer"


def test_a_notifier_the_triggerer_cannot_import_is_called_by_a_worker(paths: Paths) -> None:
    ti = paths.run("t_dagsnote")
    assert ti["state"] == "success"
    assert ti["queued_when"] is not None, "the triggerer finished although it cannot call the notifier"
    assert "d public.t_dagsnote success" in paths.notes.read_text().splitlines()
    assert "cannot be imported in the triggerer" in paths.log(ti)


def test_a_refresh_in_the_triggerer_reuses_its_connection(paths: Paths) -> None:
    """A refresh started in the triggerer borrows a connection the triggerer's pool opened for an earlier one."""
    idle = (
        "SELECT pid, backend_start FROM pg_stat_activity WHERE datname = current_database() "
        "AND backend_type = 'client backend' AND state = 'idle' AND pid <> pg_backend_pid()"
    )
    assert paths.run("t_lone")["state"] == "success"
    with paths.connect() as conn:
        before = dict(conn.execute(idle).fetchall())
        started = conn.execute("SELECT now()").fetchone()
    assert before, "no connection stayed open in the triggerer's pool"
    with paths.connect() as conn:
        conn.execute("INSERT INTO src VALUES (11, 77)")
    ti = paths.run("t_lone")
    assert ti["state"] == "success" and paths.xcom(ti)["rows"] == 11
    with paths.connect() as conn:
        after = dict(conn.execute(idle).fetchall())
    assert started is not None
    reused = {pid for pid, since in after.items() if pid in before and since < started[0]}
    assert reused, f"every connection is new: {before} -> {after}"


def test_history_rows_and_metrics_are_the_same_on_both_paths(paths: Paths) -> None:
    """Every refresh of the tests above left one history row and its metrics, wherever it ran (this test runs last:
    it reads what they did)."""
    with paths.connect() as conn:
        rows = conn.execute(
            f"SELECT view, outcome, started_by, try_number, dag_id, run_id FROM {HISTORY} ORDER BY id"
        ).fetchall()
    by_path: dict[str, list[tuple[Any, ...]]] = {path: [] for path in PATHS}
    for view, outcome, started_by, try_number, dag_id, run_id in rows:
        path, name = view.removeprefix("public.").split("_", 1)
        assert dag_id == dag(f"{path}_{name}") and run_id, (view, dag_id, run_id)
        if name != "dagsnote":
            by_path[path].append((name, outcome, started_by, try_number))
    assert set(by_path["t"]) == set(by_path["w"])  # t_lone ran once more (the connection reuse test)
    found = set(by_path["t"])
    assert {("lone", "success", "manual", 1), ("skip", "skipped", "manual", 1), ("bad", "failed", "manual", 1)} <= found
    assert ("follower", "success", "chain", 1) in found
    assert {("locked", "failed", "manual", 1), ("locked", "success", "manual", 2)} <= found
    counts: dict[str, int] = {}
    for line in paths.statsd.lines:
        name, _, value = line.partition(":")
        if name.startswith("airflow.matview.refresh.") and value.endswith("|c"):
            counts[name] = counts.get(name, 0) + int(value.split("|")[0])
    for path in PATHS:
        view = f"postgres_default.public__{path}"
        assert counts.get(f"airflow.matview.refresh.skipped.{view}_skip") == 1, counts
        assert counts.get(f"airflow.matview.refresh.failed.{view}_bad") == 1, counts
        successes = sum(1 for row in by_path[path] if row[:2] == ("lone", "success"))
        assert counts.get(f"airflow.matview.refresh.succeeded.{view}_lone") == successes, counts
