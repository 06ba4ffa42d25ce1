"""Production settings in a real Airflow (api-server, scheduler, dag-processor, triggerer, LocalExecutor).

Notifiers mail a real SMTP server on loopback (aiosmtpd) through the SMTP provider's ``SmtpNotifier``; the
``max_staleness`` alert (a lag over it) is sent by the lag monitor in the real triggerer; a real pool caps
concurrent refreshes, seen in ``pg_stat_activity``. One stack serves the whole module.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from devtools.harness.deployment import Deployment as BaseDeployment
from devtools.harness.deployment import deployed, matviews_dags
from devtools.harness.paths import CLI
from devtools.harness.smtp_sink import SmtpSink

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

SMTP = "airflow.providers.smtp.notifications.smtp.SmtpNotifier"
POOL = "matview_pool"
POOLED = [f"pooled_{index:02d}" for index in range(10)]
MAX_STALENESS = 20  # seconds
POLL = 1  # the stale view's poll_interval, in seconds
# The stale mail must arrive within this long after the lag went over max_staleness: the change is seen within a
# poll, the lag monitor measures every poll and the mail is sent at once; 15 s leaves room for a loaded machine.
STALE_BOUND = POLL + 15
RUN_TIMEOUT = 240

pytestmark = pytest.mark.timeout(900)


class Deployment(BaseDeployment):
    """The stack with an SMTP sink behind its ``smtp_sink`` connection.

    :param sink: the SMTP server on loopback that receives the notifiers' mail.
    :param config: the config file the DAGs read.
    """

    def __init__(self, up: BaseDeployment, sink: SmtpSink, config: Path) -> None:
        super().__init__(up.stack, up.api, up.dsn, up.started_in)
        self.sink = sink
        self.config = config

    def trigger_view(self, view: str) -> tuple[str, str]:
        """Unpause and trigger the DAG of ``public.<view>``; its dag id and run id."""
        dag_id = f"matview.public.{view}"
        self.api.patch(f"/dags/{dag_id}", {"is_paused": False})
        return dag_id, self.trigger(dag_id)


def _notifier(to: str, **kwargs: Any) -> list[dict[str, Any]]:
    return [{"notifier": SMTP, "to": to, "smtp_conn_id": "smtp_sink", **kwargs}]


def _config() -> dict[str, Any]:
    return {
        "defaults": {"schedule": None, "retries": 0, "concurrently": False},
        "views": [
            {
                "name": "public.notify_ok",
                "on_success": _notifier("ok@example.com", subject="OK {{ matview.view }} try {{ ti.try_number }}"),
            },
            {
                "name": "public.notify_broken",
                "retries": 1,
                "retry_delay": "1s",
                "lock_timeout": "1s",
                "on_retry": _notifier("retry@example.com"),
                "on_failure": _notifier("failure@example.com"),
            },
            {
                "name": "public.stale_view",
                "max_staleness": f"{MAX_STALENESS}s",
                "poll_interval": f"{POLL}s",
                "lock_timeout": "5m",
                "on_failure": _notifier("oncall@example.com"),  # on_stale defaults to these
            },
            *({"name": f"public.{view}", "pool": POOL} for view in POOLED),
        ],
    }


SCENARIO = [
    "CREATE TABLE src (id int PRIMARY KEY, n int)",
    "INSERT INTO src VALUES (1, 1), (2, 2)",
    "CREATE TABLE divisor (d int)",
    "INSERT INTO divisor VALUES (1)",
    "CREATE MATERIALIZED VIEW notify_ok AS SELECT * FROM src",
    "CREATE MATERIALIZED VIEW notify_broken AS SELECT id / (SELECT d FROM divisor) AS x FROM src",
    "CREATE MATERIALIZED VIEW stale_view AS SELECT * FROM src",
    # Each pooled refresh takes 3 s, so refreshes let through together overlap.
    *(f"CREATE MATERIALIZED VIEW {view} AS SELECT 1 AS x FROM pg_sleep(3) WITH NO DATA" for view in POOLED),
]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    dags = matviews_dags(tmp_path_factory.mktemp("dags"), _config())
    dag_ids = [f"matview.public.{view}" for view in ("notify_ok", "notify_broken", "stale_view", *POOLED)]
    # More executor slots than the pool's 2: the pool must cap.
    with (
        SmtpSink() as sink,
        deployed(
            dags,
            SCENARIO,
            dag_ids,
            connections={"smtp_sink": sink.uri},
            env={"AIRFLOW__CORE__PARALLELISM": "4"},
            triggerer=True,
        ) as up,
    ):
        assert up.api.get("/importErrors")["total_entries"] == 0
        yield Deployment(up, sink, dags / "matviews.yaml")


def _to(address: str) -> Any:
    return lambda mail: address in mail.to


def test_success_retry_and_failure_mails_name_view_connection_error_try_and_log(deployment: Deployment) -> None:
    # A session holding ACCESS EXCLUSIVE on a source makes every try of notify_broken time out on its lock: a
    # failure that a retry may cure, so Airflow retries it (errors in the view's query are not retried).
    blocker = deployment.connect()
    try:
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE divisor IN ACCESS EXCLUSIVE MODE")
        ok_dag, ok_run = deployment.trigger_view("notify_ok")
        broken_dag, broken_run = deployment.trigger_view("notify_broken")
        assert deployment.api.wait_for_run(ok_dag, ok_run, timeout=RUN_TIMEOUT)["state"] == "success"
        assert deployment.api.wait_for_run(broken_dag, broken_run, timeout=RUN_TIMEOUT)["state"] == "failed"
    finally:
        blocker.close()

    (success,) = deployment.sink.wait_for(_to("ok@example.com"))
    assert success.subject == "OK public.notify_ok try 1", "the config's Jinja subject, rendered by Airflow"
    assert "Materialized view public.notify_ok refreshed." in success.body
    assert "Connection: postgres_default" in success.body
    assert "Try: 1 of 1" in success.body
    assert f"/dags/{ok_dag}/runs/" in success.body and "/tasks/refresh?try_number=1" in success.body

    (retry,) = deployment.sink.wait_for(_to("retry@example.com"))
    (failure,) = deployment.sink.wait_for(_to("failure@example.com"))
    log_base = f"{deployment.stack.url}/dags/{broken_dag}/runs/{broken_run.replace(':', '%3A').replace('+', '%2B')}"
    for mail, what, try_number in ((retry, "refresh failed, will retry", 1), (failure, "refresh failed", 2)):
        assert mail.subject == f"[airflow-matview] public.notify_broken {what} (connection postgres_default)"
        assert f"Materialized view public.notify_broken {what}." in mail.body
        assert "Connection: postgres_default" in mail.body
        assert "Timed out after 1s (lock_timeout)" in mail.body, mail.body
        assert f"Try: {try_number} of 2" in mail.body
        assert f"Log: {log_base}/tasks/refresh?try_number={try_number}" in mail.body, mail.body
    print(f"failure mail:\n{failure.subject}\n{failure.body}")


def test_stale_view_alerts_once_within_the_bound_naming_view_lag_and_why(deployment: Deployment) -> None:
    """max_staleness is a lag: a change its view does not reflect within it is mailed once, with the run that holds
    it up, and once more when it is reflected."""
    dag_id, run_id = deployment.trigger_view("stale_view")
    assert deployment.api.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)["state"] == "success"
    time.sleep(3 * POLL)  # the lag monitor reads the record of that refresh: the view reflects its sources
    stale_mail = _to("oncall@example.com")
    blocker = deployment.connect()
    try:
        with deployment.connect() as writer:
            writer.execute("INSERT INTO src VALUES (3, 3)")
        committed = time.time()
        blocker.execute("BEGIN")
        # A reader's open transaction holds ACCESS SHARE on the view: the plain refresh waits for its lock.
        blocker.execute("SELECT count(*) FROM stale_view")
        dag_id, run_id = deployment.trigger_view("stale_view")

        def after_commit(mail: Any) -> bool:
            return stale_mail(mail) and mail.received_at > committed and "is stale" in mail.subject

        (stale,) = deployment.sink.wait_for(after_commit, timeout=MAX_STALENESS + STALE_BOUND + 30)
        late = stale.received_at - committed - MAX_STALENESS
        print(f"stale mail {late:.1f}s after the lag passed max_staleness (bound {STALE_BOUND}s):\n{stale.body}")
        assert 0 <= late <= STALE_BOUND, deployment.stack.log("triggerer")
        assert stale.subject == "[airflow-matview] public.stale_view is stale (connection postgres_default)"
        assert "Materialized view public.stale_view is stale." in stale.body
        assert f"(max_staleness {MAX_STALENESS}s)" in stale.body and "Lag: " in stale.body
        assert f"a run of {dag_id} is running and has not committed" in stale.body, stale.body
        assert deployment.api.get(f"/dags/{dag_id}/dagRuns/{run_id}")["state"] == "running"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert deployment.api.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)["state"] == "success"

    def fresh_again(mail: Any) -> bool:
        return stale_mail(mail) and mail.received_at > committed and "is back within its max_staleness" in mail.subject

    deployment.sink.wait_for(fresh_again, timeout=30)
    time.sleep(3 * POLL)
    assert len(deployment.sink.matching(after_commit)) == 1, "one alert per episode"


def test_check_reports_a_missing_pool_until_it_exists(deployment: Deployment) -> None:
    env = {**deployment.stack.env, "PATH": os.environ.get("PATH", "")}
    done = subprocess.run([str(CLI), "check", str(deployment.config)], env=env, capture_output=True, text=True)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        f"pool: '{POOL}' does not exist in Airflow, which never starts a task whose pool is missing; "
        f"create it: airflow pools set {POOL} 2 'matview refreshes' (or Admin -> Pools)"
    ) in done.stdout
    assert done.stdout.count("does not exist in Airflow") == len(POOLED)

    _create_pool(deployment)
    done = subprocess.run([str(CLI), "check", str(deployment.config)], env=env, capture_output=True, text=True)
    assert "pool:" not in done.stdout, done.stdout


def _create_pool(deployment: Deployment) -> None:
    created = deployment.stack.airflow("pools", "set", POOL, "2", "matview refreshes on the scenario database")
    assert created.returncode == 0, created.stderr


def test_a_two_slot_pool_never_runs_more_than_two_refreshes_at_once(deployment: Deployment) -> None:
    _create_pool(deployment)
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        with deployment.connect() as conn:
            while not stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
                    ("airflow-matview matview.public.pooled_%",),
                ).fetchone()
                samples.append(row[0] if row else 0)
                time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        runs = [deployment.trigger_view(view) for view in POOLED]
        states = [deployment.api.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)["state"] for dag_id, run_id in runs]
    finally:
        stop.set()
        sampler.join()
    print(f"{len(samples)} samples of pg_stat_activity; refresh backends at once: max {max(samples)}")
    assert states == ["success"] * len(POOLED)
    with deployment.connect() as conn:
        for view in POOLED:
            assert conn.execute(f"SELECT x FROM {view}").fetchall() == [(1,)]
    assert max(samples) == 2, "the pool lets two through at once, never more"
