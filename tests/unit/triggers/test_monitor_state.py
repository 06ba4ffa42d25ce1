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
