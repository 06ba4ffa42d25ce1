"""What a lag notification says (``behind`` and ``caught_up``): the facts a notifier's templates get, and the
default subject and message, from the one definition of lag."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from airflow_matview.alerting.lag_alerts import notify_lag
from airflow_matview.freshness import Lag, unknown

if TYPE_CHECKING:
    from pathlib import Path

NOTIFIER = "devtools.harness.recording_notifier.append_to_file"


def _sent(tmp_path: Path, event: str, lag: Lag, reason: str | None) -> dict[str, object]:
    sink = tmp_path / "sent.jsonl"
    spec = {
        "view": "public.v",
        "dag_id": "matview.public.v",
        "target": 60.0,
        "notifiers": [
            {"notifier": NOTIFIER, "path": str(sink)},
            {"notifier": "devtools.harness.recording_notifier.no_context"},  # broken: the first one still sends
        ],
    }
    failures = asyncio.run(notify_lag(event, spec, "pg", lag, reason, 1796592000.0))
    assert len(failures) == 1 and failures[0].startswith("devtools.harness.recording_notifier.no_context: ")
    (sent,) = [json.loads(line) for line in sink.read_text().splitlines()]
    return dict(sent)


def test_behind_says_how_far_since_when_and_why(tmp_path: Path) -> None:
    sent = _sent(tmp_path, "behind", Lag(75.0, "sources", 1796591925.0, "a source change"), "its sources changed")
    assert sent["subject"] == "[airflow-matview] public.v is behind its target_lag (connection pg)"
    assert (sent["lag"], sent["lag_seconds"], sent["target_lag"], sent["lag_since"]) == (
        "1m15s",
        75.0,
        "1m",
        "2026-12-06T21:18:45Z",
    )
    assert "Lag: 1m15s (target_lag 1m)\\nWhy: its sources changed" in json.dumps(sent["message"])


def test_an_unknown_lag_is_said_so_never_zero(tmp_path: Path) -> None:
    sent = _sent(tmp_path, "behind", unknown("no measurement for 40s"), "its lag cannot be measured")
    assert (sent["lag"], sent["lag_seconds"], sent["lag_basis"]) == ("unknown", None, "unknown")


def test_caught_up(tmp_path: Path) -> None:
    sent = _sent(tmp_path, "caught_up", Lag(0.0, "sources"), None)
    assert sent["subject"] == "[airflow-matview] public.v is back within its target_lag (connection pg)"
    assert (sent["lag"], sent["reason"]) == ("0.0s", None)


def test_a_lag_alert_names_the_dag_and_no_run_it_does_not_have() -> None:
    from airflow_matview.config.notification import describe_lag

    for event in ("behind", "caught_up"):
        facts = describe_lag(
            event, "public.a", "pg", "matview.public.a", lag={"seconds": 50.0}, target=20.0, reason=None
        )
        assert "DAG: matview.public.a" in facts["message"].splitlines()
        assert "run None" not in facts["message"]
