"""A notifier called for a task event."""

from __future__ import annotations

from typing import Any

from airflow_matview.config import load_config
from devtools.harness.configs import RECORDING


def test_a_coroutine_function_notifier_is_awaited_for_a_task_event() -> None:
    from airflow_matview.alerting.notify import TaskNotifier

    view = load_config(
        {
            "views": [
                {
                    "name": "public.a",
                    "on_success": [{"notifier": f"{RECORDING}.record_async", "label": "done"}],
                }
            ]
        }
    ).views[0]
    context: dict[str, Any] = {}
    TaskNotifier("success", view.on_success[0], "public.a", "postgres_default")(context)
    assert context["recorded"] == ["done"]
