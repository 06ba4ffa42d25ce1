"""What the lag monitor reads back from its asset's state store after a restart: an open episode stays open (no
second alert), unless the view's threshold changed with the config (the episode was announced under the other one)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from airflow_matview.triggers import freshness_monitor
from airflow_matview.triggers.freshness_monitor import FreshnessTrigger, Watched

if TYPE_CHECKING:
    import pytest


class Store:
    def __init__(self, stored: dict[str, Any]) -> None:
        self.stored = stored

    async def aget(self, key: str) -> Any:
        return self.stored.get(key)


def _loaded(monkeypatch: pytest.MonkeyPatch, stored: dict[str, Any], alert_key: str) -> Watched:
    monkeypatch.setattr(freshness_monitor, "HAS_SHARED_TRIGGER_STREAMS", True)
    spec = {"view": "public.v", "dag_id": "v", "target": 60.0, "alert_after": 600.0, "alert_key": alert_key}
    trigger = FreshnessTrigger("warehouse", 1.0, [spec])
    trigger.asset_state_store = Store({"lag:public.v": stored})  # type: ignore[assignment]
    view = Watched(spec)
    asyncio.run(trigger._load(view))
    return view


def test_an_open_episode_stays_open_across_a_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    stored = {"alerting": True, "alert_key": "max_staleness", "record": {"measured_at": 1.0}}
    view = _loaded(monkeypatch, stored, "max_staleness")
    assert view.alerting and view.record.measured_at == 1.0


def test_an_episode_under_another_threshold_is_not_closed_under_this_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not _loaded(monkeypatch, {"alerting": True, "alert_key": "target_lag"}, "max_staleness").alerting
    # Stored before max_staleness meant lag: its alerts were target_lag's.
    assert not _loaded(monkeypatch, {"alerting": True}, "max_staleness").alerting
    assert _loaded(monkeypatch, {"alerting": True}, "target_lag").alerting


def test_why_an_alert_said_it_is_behind_is_kept_with_the_view_while_the_episode_lasts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_matview.freshness import Lag

    sent: list[tuple[str, str | None]] = []

    async def notify_lag(event: str, spec: Any, conn_id: str, lag: Any, reason: str | None, now: float) -> list[str]:
        sent.append((event, reason))
        return []

    monkeypatch.setattr("airflow_matview.alerting.lag_alerts.notify_lag", notify_lag)
    spec = {"view": "public.v", "dag_id": "v", "target": 60.0, "watched": False, "schedule": "@daily"}
    trigger = FreshnessTrigger("warehouse", 1.0, [spec])
    view = Watched(spec, lag=Lag(90.0, "sources", 1000.0, "a source change not reflected yet"))
    view.record.refreshed_at = 900.0

    async def episode() -> None:
        monkeypatch.setattr(freshness_monitor, "_run_facts", lambda *args: (0, 0, None))
        await trigger._alert(view, 1090.0)
        await asyncio.gather(*trigger._sending)
        assert view.state(1090.0)["alert_reason"] == sent[0][1]
        view.lag = Lag(0.0, "sources")
        await trigger._alert(view, 1100.0)
        await asyncio.gather(*trigger._sending)

    asyncio.run(episode())
    assert [event for event, _ in sent] == ["behind", "caught_up"]
    assert "it is refreshed on its schedule (@daily)" in str(sent[0][1])
    assert view.alert_reason is None and view.state(1100.0)["alert_reason"] is None
