"""The lag monitor against a real PostgreSQL server, with no DAG run at all: a change nobody refreshes goes over its
target within target + poll_interval and the notifiers are told once, with why; a refresh that covers it brings the
lag back to 0 and a recovery notice; the server going away makes the lag unknown (never 0), told once, at the first
failed poll and with why; the server back, the lag is measured again and the notifiers hear so, once."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import psycopg

from airflow_matview.database.identifiers import parse_qualified_name
from airflow_matview.database.refresh import refresh_materialized_view
from airflow_matview.database.refresh_settings import RefreshSettings
from airflow_matview.refresh_task import RefreshRecord
from airflow_matview.triggers.freshness_monitor import FreshnessTrigger
from devtools.harness.pgcluster import embedded_cluster
from devtools.harness.scenario import VIEW, create_reference_scenario

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

NOTIFIER = "devtools.harness.recording_notifier.append_to_file"
TARGET, POLL = 3.0, 0.5


def _insert(dsn: str, user: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO polls_user VALUES (%s, 'late', 40)", (user,))
        conn.execute("SELECT pg_stat_force_next_flush()")


def _refresh(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real refresh that reads the change signals, recorded where the monitor reads it (the Variable, here from
    the environment, as Airflow reads ``AIRFLOW_VAR_*``)."""
    with psycopg.connect(dsn) as conn:
        result = refresh_materialized_view(conn, parse_qualified_name(VIEW), RefreshSettings(read_signals=True))
    key = RefreshRecord("postgres_default", parse_qualified_name(VIEW)).key
    monkeypatch.setenv(f"AIRFLOW_VAR_{key.upper()}", json.dumps(result.records()))


def _alerts(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_alerts_on_lag_with_no_dag_run_recovers_and_is_unknown_when_the_server_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = tmp_path / "alerts.jsonl"
    cluster = embedded_cluster()
    cluster.start()
    timeline: dict[str, float] = {}
    try:
        cluster.create_database("app")
        dsn = cluster.dsn("app")
        monkeypatch.setenv("AIRFLOW_CONN_POSTGRES_DEFAULT", cluster.uri("app"))
        with psycopg.connect(dsn, autocommit=True) as conn:
            create_reference_scenario(conn)
        _refresh(dsn, monkeypatch)
        notifiers = [{"notifier": NOTIFIER, "path": str(sink)}]
        spec = {"view": VIEW, "dag_id": "v", "target": TARGET, "after": [], "notifiers": notifiers}
        trigger = FreshnessTrigger("postgres_default", POLL, [spec])

        async def scenario() -> None:
            task = asyncio.ensure_future(_drain(trigger))
            await asyncio.sleep(3)  # up to date: nothing to say
            timeline["committed"] = time.time()
            await asyncio.to_thread(_insert, dsn, 100)
            await asyncio.sleep(TARGET + 3)
            await asyncio.to_thread(_refresh, dsn, monkeypatch)
            timeline["refreshed"] = time.time()
            await asyncio.sleep(3)
            await asyncio.to_thread(cluster.stop)
            timeline["stopped"] = time.time()
            await asyncio.sleep(5)
            await asyncio.to_thread(cluster.start)
            timeline["started"] = time.time()
            await asyncio.sleep(5)  # the poll backs off 1, 2, 4 s: back within 7 s
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        asyncio.run(scenario())
    finally:
        cluster.destroy()
    alerts = _alerts(sink)
    assert [alert["event"] for alert in alerts] == ["behind", "caught_up", "behind", "caught_up"], alerts
    behind, caught_up, gone, back = alerts
    assert behind["view"] == VIEW and behind["target_lag"] == "3.0s"
    assert TARGET <= behind["measured_at"] - timeline["committed"] <= TARGET + POLL + 1.5, (behind, timeline)
    assert "no watcher requests its refresh in this triggerer" in behind["reason"], behind
    assert caught_up["lag_seconds"] == 0.0 and 0 <= caught_up["measured_at"] - timeline["refreshed"] <= POLL + 1.5
    assert gone["lag"] == "unknown" and gone["lag_seconds"] is None
    assert gone["reason"].startswith(
        "its lag cannot be measured: cannot reach the database of connection 'postgres_default': "
    ), gone
    assert "\n" not in gone["reason"] and "Traceback" not in gone["reason"], gone
    # Reported at the first failed poll (at most one poll after the stop), not after a silence.
    assert gone["measured_at"] - timeline["stopped"] <= 2 * POLL + 1.5, (gone, timeline)
    print(f"server stopped -> lag unknown: {gone['measured_at'] - timeline['stopped']:.1f}s ({gone['reason']})")
    # Measured again (a restart may change the signals: a change seen then, conservatively, not a lag of 0).
    assert back["lag_seconds"] is not None and back["lag_seconds"] < TARGET, back
    assert 0 <= back["measured_at"] - timeline["started"] <= 5, (back, timeline)


async def _drain(trigger: FreshnessTrigger) -> None:
    async for _ in trigger.run():
        pass
