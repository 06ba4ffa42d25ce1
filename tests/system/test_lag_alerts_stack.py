"""target_lag end to end in a real Airflow (api-server, scheduler, dag-processor, triggerer, LocalExecutor): a view
refreshes on its first poll and records what it reflects; with its DAG paused, a change nobody refreshes makes the
lag monitor (a DAG of its own, created unpaused) tell the on_stale notifier, once and with why, although no DAG run
exists; unpaused, the watcher refreshes it and the notifier hears that it caught up. Alongside, a view whose refresh
breaks (a division by zero once its source changes) is reported behind, with the refresh requested and never
committed as the reason. The fleet page says what the alerts said, and the lag monitor's StatsD gauges (to a UDP
listener on loopback) the same lag."""

from __future__ import annotations

import json
import os
import re
import socket
import time
import urllib.request
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from devtools.harness.deployment import deployed, matviews_dags
from devtools.harness.paths import REPO
from devtools.harness.scenario import create_reference_scenario

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from devtools.harness.deployment import Deployment

AUDIT_DAG = "matview.public.audit_count"
RATIO_DAG = "matview.public.ratio"
BASE_DAG, TOP_DAG = "matview.public.chain_base", "matview.public.chain_top"
MONITOR_DAG = "matview.freshness.postgres_default"
TARGET, POLL = 20.0, 1.0
# On this shared 2-core machine a task process takes seconds to start; the bound says what the alert may take.
SLACK = 15.0

pytestmark = pytest.mark.timeout(900)


def _scenario(conn: psycopg.Connection) -> None:
    create_reference_scenario(conn)
    conn.execute("CREATE TABLE audit (id integer)")
    conn.execute("CREATE MATERIALIZED VIEW audit_count AS SELECT count(*) AS n FROM audit")
    conn.execute("CREATE TABLE divisor (n integer)")
    conn.execute("INSERT INTO divisor VALUES (1)")
    conn.execute("CREATE MATERIALIZED VIEW ratio AS SELECT 100 / (SELECT count(*) FROM divisor) AS r")
    conn.execute("CREATE TABLE chain_src (id integer)")
    conn.execute("CREATE MATERIALIZED VIEW chain_base AS SELECT count(*) AS n FROM chain_src")
    conn.execute("CREATE MATERIALIZED VIEW chain_top AS SELECT n * 2 AS m FROM chain_base")


def _wait(condition: Callable[[], Any], timeout: float, what: str, up: Deployment) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            logs = "\n".join(f"--- {name}\n{up.stack.log(name)}" for name in ("triggerer", "scheduler"))
            raise AssertionError(f"{what} not within {timeout:.0f}s\n{logs}")
        time.sleep(0.2)
    return time.monotonic() - started


def _alerts(sink: Path, view: str = "public.audit_count") -> list[dict[str, Any]]:
    sent = [json.loads(line) for line in sink.read_text().splitlines()] if sink.exists() else []
    return [alert for alert in sent if alert["view"] == view]


def _statsd_lines(listener: socket.socket) -> list[str]:
    """Every StatsD line received since the last call."""
    lines: list[str] = []
    listener.settimeout(0.2)
    while True:
        try:
            lines += listener.recv(65536).decode().splitlines()
        except TimeoutError:
            return lines


def _gauges(lines: list[str], metric: str) -> list[float]:
    """The values of the plain-StatsD gauge ``metric`` of public.audit_count (Airflow's ``airflow.`` prefix)."""
    name = re.escape(f"airflow.matview.freshness.{metric}.postgres_default.public__audit_count")
    return [float(found.group(1)) for line in lines if (found := re.fullmatch(rf"{name}:([-0-9.e]+)\|g", line))]


def test_a_paused_dag_alerts_on_lag_with_no_run_and_recovers_when_unpaused(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    env = {
        # The notifier lives in devtools.harness: the stack's processes import it from this checkout.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(listener.getsockname()[1]),
    }
    sink = tmp_path_factory.mktemp("alerts") / "alerts.jsonl"
    notifier = {"notifier": "devtools.harness.recording_notifier.append_to_file", "path": str(sink)}
    config = {
        "defaults": {"retries": 0, "poll_interval": f"{POLL:g}s"},
        "views": [
            {"name": "public.audit_count", "target_lag": f"{TARGET:g}s", "on_stale": [notifier]},
            {"name": "public.ratio", "target_lag": f"{TARGET:g}s", "on_stale": [notifier]},
            # A chain: the top view is measured from the root table, through the base view's refreshes.
            # The base view has no target of its own: the monitor measures it as the top one's upstream.
            {"name": "public.chain_base", "on_change": True, "min_interval": "1s"},
            {
                "name": "public.chain_top",
                "after": ["public.chain_base"],
                "target_lag": f"{TARGET:g}s",
                "on_stale": [notifier],
            },
        ],
    }
    dags = matviews_dags(tmp_path_factory.mktemp("dags"), config)
    dag_ids = (AUDIT_DAG, RATIO_DAG, BASE_DAG, TOP_DAG)
    with listener, deployed(dags, _scenario, (*dag_ids, MONITOR_DAG), triggerer=True, env=env) as up:
        assert up.api.get(f"/dags/{MONITOR_DAG}")["is_paused"] is False, "the monitor is created unpaused"
        for dag_id in dag_ids:
            up.api.patch(f"/dags/{dag_id}", {"is_paused": False})
        up.trigger(BASE_DAG)  # an on_change view's first poll only records its baseline
        # The watcher's first poll refreshes each view once, which records what it reflects.
        for dag_id in dag_ids:
            _wait(lambda d=dag_id: _settled(up, d), 180, "a first refresh", up)
        up.api.patch(f"/dags/{AUDIT_DAG}", {"is_paused": True})
        up.api.patch(f"/dags/{TOP_DAG}", {"is_paused": True})
        time.sleep(5)  # the scheduler drops the paused DAG's watcher
        with up.connect() as conn:
            conn.execute("INSERT INTO audit VALUES (1), (2)")
            conn.execute("DELETE FROM divisor")  # ratio's next refresh divides by zero
            conn.execute("INSERT INTO chain_src VALUES (1)")  # refreshes chain_base (on_change); chain_top is paused
        committed = time.time()
        _wait(lambda: _alerts(sink), TARGET + POLL + SLACK + 30, "the lag alert", up)
        (behind,) = _alerts(sink)
        print(f"commit -> alert: {behind['measured_at'] - committed:.1f}s (target_lag {TARGET:g}s)")
        assert behind["event"] == "behind" and behind["view"] == "public.audit_count", behind
        assert TARGET <= behind["measured_at"] - committed <= TARGET + POLL + SLACK, behind
        assert "no watcher requests its refresh in this triggerer" in behind["reason"], behind
        assert len(up.runs(AUDIT_DAG)) == 1, "no DAG run exists for the change"
        # The fleet page says what the alert said: the same oldest unreflected change, over the same target.
        # The page also says why, as the alert did (stored at the monitor's next measurement).
        _wait(lambda: _fleet_view(up, AUDIT_DAG)["lag_alert_reason"] == behind["reason"], 10, "the alert's reason", up)
        page = _fleet_view(up, AUDIT_DAG)
        assert (page["lag_state"], page["target_lag"], page["lag_since"]) == ("over", TARGET, behind["lag_since"])
        assert page["lag"] >= behind["lag_seconds"], (page, behind)
        assert page["status"] == "paused"
        # The lag monitor's gauges say the same lag, at each poll, with no DAG run.
        _statsd_lines(listener)
        time.sleep(3 * POLL)
        lines = _statsd_lines(listener)
        assert _gauges(lines, "unknown") and set(_gauges(lines, "unknown")) == {0.0}, lines[:20]
        assert _gauges(lines, "target") and set(_gauges(lines, "target")) == {TARGET}
        assert _gauges(lines, "lag") and min(_gauges(lines, "lag")) >= behind["lag_seconds"], lines[:20]

        _wait(lambda: _alerts(sink, "public.ratio"), 60, "the broken refresh's lag alert", up)
        (broken,) = _alerts(sink, "public.ratio")
        print(f"commit -> alert, refresh broken: {broken['measured_at'] - committed:.1f}s (target_lag {TARGET:g}s)")
        assert TARGET <= broken["measured_at"] - committed <= TARGET + POLL + SLACK, broken
        assert "a refresh was requested at" in broken["reason"], broken
        # What its run is doing when the alert goes out: its refresh failed already, or its run is still on the way.
        assert re.search(
            r"none has committed since: (its refresh failed at \S+ \(\w+: .*division by zero|"
            rf"a run of {RATIO_DAG} is (running|queued))",
            broken["reason"],
        ), broken["reason"]
        assert [run["state"] for run in up.runs(RATIO_DAG)][-1] == "failed"
        ratio = _fleet_view(up, RATIO_DAG)
        assert (ratio["lag_state"], ratio["lag_since"], ratio["status"]) == ("over", broken["lag_since"], "failing")
        assert ratio["lag_alert_reason"] == broken["reason"], ratio

        # The chain: the base view refreshed (on change), the top one could not; the top one's lag counts
        # from the root change (seen at the first poll after the commit), not from the base view's refresh.
        _wait(lambda: _alerts(sink, "public.chain_top"), 60, "the chain's lag alert", up)
        (top,) = _alerts(sink, "public.chain_top")
        base_runs = [run for run in up.runs(BASE_DAG) if run["state"] == "success"]
        base_done = _timestamp(base_runs[-1]["end_date"])
        print(
            f"chain: commit -> base refreshed {base_done - committed:.1f}s, -> top's alert "
            f"{top['measured_at'] - committed:.1f}s, "
            f"top behind since commit + {_timestamp(top['lag_since']) - committed:.1f}s"
        )
        assert len(base_runs) == 2 and base_done > committed, "the base view reflects the change"
        assert _timestamp(top["lag_since"]) <= committed + POLL + 1.5 < base_done, top
        assert TARGET <= top["measured_at"] - committed <= TARGET + POLL + SLACK, top
        # Paused: its watcher is gone (no one requests its refresh), or, while Airflow still runs it, its request
        # makes no run.
        assert re.search(
            r"no watcher requests its refresh in this triggerer|is queued or running: its DAG is paused", top["reason"]
        ), top["reason"]

        up.api.patch(f"/dags/{AUDIT_DAG}", {"is_paused": False})
        up.api.patch(f"/dags/{TOP_DAG}", {"is_paused": False})
        unpaused = time.monotonic()
        _wait(lambda: len(_alerts(sink)) == 2, 180, "the recovery notice", up)
        print(f"unpause -> caught up: {time.monotonic() - unpaused:.1f}s")
        caught_up = _alerts(sink)[1]
        assert caught_up["event"] == "caught_up" and caught_up["lag_seconds"] == 0.0, caught_up
        with up.connect() as conn:
            assert conn.execute("SELECT n FROM audit_count").fetchone() == (2,)
        time.sleep(10)
        assert len(_alerts(sink)) == 2, "once per episode"
        assert len(_alerts(sink, "public.ratio")) == 1, "once per episode"
        _wait(lambda: len(_alerts(sink, "public.chain_top")) == 2, 120, "the chain's recovery notice", up)
        with up.connect() as conn:
            assert conn.execute("SELECT m FROM chain_top").fetchone() == (2,)
        page = _fleet_view(up, AUDIT_DAG)
        assert (page["lag_state"], page["lag"], page["lag_alert_reason"]) == ("within", 0.0, None), page

        # A stopped scheduler: the watcher requests the refresh, no run is ever created, and the lag monitor, which
        # needs no run, says so; the scheduler back, the refresh runs and the notifier hears it caught up.
        up.stack.stop_component("scheduler")
        with up.connect() as conn:
            conn.execute("INSERT INTO audit VALUES (3)")
        committed = time.time()
        _wait(lambda: len(_alerts(sink)) == 3, TARGET + POLL + SLACK + 30, "the stopped scheduler's lag alert", up)
        stopped = _alerts(sink)[2]
        print(f"commit -> alert, scheduler stopped: {stopped['measured_at'] - committed:.1f}s\n{stopped['reason']}")
        assert stopped["event"] == "behind" and TARGET <= stopped["measured_at"] - committed <= TARGET + POLL + SLACK
        assert "a refresh was requested at" in stopped["reason"], stopped
        assert (
            f"no run of {AUDIT_DAG} is queued or running: its DAG is paused, or the scheduler has not started one"
            in stopped["reason"]
        )
        up.stack.start_component("scheduler")
        _wait(lambda: len(_alerts(sink)) == 4, 180, "the recovery notice after the scheduler's return", up)
        assert _alerts(sink)[3]["event"] == "caught_up"
        with up.connect() as conn:
            assert conn.execute("SELECT n FROM audit_count").fetchone() == (3,)


def _settled(up: Deployment, dag_id: str) -> bool:
    """The DAG has a successful run and none still to finish (a chain's top view may run twice at first)."""
    states = [run["state"] for run in up.runs(dag_id)]
    return "success" in states and not {"queued", "running"} & set(states)


def _timestamp(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _fleet_view(up: Deployment, dag_id: str) -> dict[str, Any]:
    request = urllib.request.Request(f"{up.stack.url}/matview-fleet/api/views")
    request.add_header("Authorization", f"Bearer {up.api.token}")
    request.add_header("Cookie", f"_token={up.api.token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        document = json.loads(response.read())
    assert sum(document["lag_counts"].values()) == 4
    return next(view for view in document["views"] if view["dag_id"] == dag_id)


def test_a_broken_watcher_makes_the_lag_unknown_with_why_and_it_is_measured_again_when_back(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The views' server stopped, then the catalog locked (a poll that runs into its time limit): each time the
    notifier hears that the lag cannot be measured, with why, within target + poll_interval + 30 s; the fleet page
    says the same; the watcher sharing the poll says it once in the log and fires nothing; back, it is measured again
    and the notifier hears so, once. Airflow's metadata database is on a server of its own, which stays up."""
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    sink = tmp_path_factory.mktemp("alerts") / "alerts.jsonl"
    notifier = {"notifier": "devtools.harness.recording_notifier.append_to_file", "path": str(sink)}
    config = {
        "defaults": {"retries": 0, "poll_interval": f"{POLL:g}s"},
        "views": [{"name": "public.audit_count", "target_lag": f"{TARGET:g}s", "on_stale": [notifier]}],
    }
    dags = matviews_dags(tmp_path_factory.mktemp("dags"), config)
    goal = TARGET + POLL + 30
    with deployed(
        dags, _scenario, (AUDIT_DAG, MONITOR_DAG), triggerer=True, env=env, metadata_server_of_its_own=True
    ) as up:
        assert up.server is not None
        up.api.patch(f"/dags/{AUDIT_DAG}", {"is_paused": False})
        _wait(lambda: [run["state"] for run in up.runs(AUDIT_DAG)] == ["success"], 180, "a first refresh", up)
        _wait(lambda: up.fleet_view(AUDIT_DAG)["lag_state"] == "within", 60, "a first measurement", up)
        runs = len(up.runs(AUDIT_DAG))

        stopped = time.time()
        up.server.stop()
        try:
            _wait(lambda: _alerts(sink), goal, "the alert that the lag cannot be measured", up)
            (gone,) = _alerts(sink)
            reason = "cannot reach the database of connection 'postgres_default': "
            assert gone["event"] == "behind" and gone["lag_seconds"] is None, gone
            assert gone["reason"].startswith(f"its lag cannot be measured: {reason}"), gone
            page_after = _wait(lambda: up.fleet_view(AUDIT_DAG)["lag_state"] == "unknown", goal, "the page", up)
            page = up.fleet_view(AUDIT_DAG)
            assert page["lag"] is None and page["lag_reason"].startswith(reason), page
            print(
                f"server stopped -> alert: {gone['measured_at'] - stopped:.1f}s, fleet page unknown: "
                f"{time.time() - stopped:.1f}s ({page_after:.1f}s after the alert was seen) "
                f"(goal {goal:g}s); reason {gone['reason']!r}; page {page['lag_reason']!r}"
            )
            assert gone["measured_at"] - stopped <= goal, gone
            # The next tries are refused, and the page says so.
            refused = f"{reason}connection refused"
            _wait(lambda: up.fleet_view(AUDIT_DAG)["lag_reason"] == refused, 15, "the page saying refused", up)
            print(f"server stopped -> fleet page says {refused!r}: {time.time() - stopped:.1f}s")
        finally:
            up.server.start()
        started = time.time()
        _wait(lambda: len(_alerts(sink)) == 2, 90, "the notice that it is measured again", up)
        back = _alerts(sink)[1]
        print(f"server started -> measured again: {back['measured_at'] - started:.1f}s")
        assert back["event"] == "caught_up" and back["lag_seconds"] is not None, back

        # A restart may change the signals (a change seen, conservatively): refresh, so that the view is up to date.
        up.trigger(AUDIT_DAG)
        _wait(lambda: up.fleet_view(AUDIT_DAG)["lag"] == 0.0, 180, "the view up to date again", up)
        time.sleep(3)
        settled = len(_alerts(sink))
        assert _alerts(sink)[-1]["event"] == "caught_up", _alerts(sink)

        with psycopg.connect(up.dsn) as locker:
            locker.execute("LOCK TABLE pg_catalog.pg_class IN ACCESS EXCLUSIVE MODE")
            locked = time.time()
            _wait(lambda: len(_alerts(sink)) > settled, goal, "the alert that the stalled poll cannot measure", up)
            stalled = _alerts(sink)[settled]
            page = up.fleet_view(AUDIT_DAG)
            locker.rollback()
        unlocked = time.time()
        print(
            f"catalog locked -> alert: {stalled['measured_at'] - locked:.1f}s (goal {goal:g}s); "
            f"reason {stalled['reason']!r}; page {page['lag_reason']!r}"
        )
        assert stalled["event"] == "behind" and stalled["lag_seconds"] is None, stalled
        assert "a poll of connection 'postgres_default' ran past its time limit (30s)" in stalled["reason"], stalled
        assert stalled["measured_at"] - locked <= goal, stalled
        assert page["lag_state"] == "unknown" and "connection 'postgres_default'" in page["lag_reason"], page
        _wait(lambda: len(_alerts(sink)) == settled + 2, 90, "the notice that it is measured again", up)
        print(f"catalog unlocked -> measured again: {_alerts(sink)[-1]['measured_at'] - unlocked:.1f}s")
        assert _alerts(sink)[-1]["event"] == "caught_up"

        time.sleep(5)
        assert len(_alerts(sink)) == settled + 2, "once per episode"
        log = up.stack.log("triggerer", tail=1_000_000)
        assert log.count("airflow-matview: cannot watch") == 2, "one line per outage"
        assert "not watching public.audit_count" not in log, "no line per view"
        assert "Traceback" not in log
        assert len(up.runs(AUDIT_DAG)) <= runs + 3, "no run for an outage (one asked for, one per restart's signals)"
