"""Configs and dotted paths that several test modules use."""

from __future__ import annotations

from typing import Any

#: The SMTP provider's notifier, as a config names it.
SMTP = "airflow.providers.smtp.notifications.smtp.SmtpNotifier"
#: The harness's test notifiers, named by dotted path as a config names them.
RECORDING = "devtools.harness.recording_notifier"
EXITING = "devtools.harness.exiting_notifier"

#: Three views with defaults: a cron, a manual one with its own flags, and one after the first with its own DAG id.
THREE_VIEWS = {
    "defaults": {"conn_id": "warehouse", "retries": 3, "retry_delay": "1m", "tags": ["reporting"]},
    "views": [
        {"name": "public.polls_user_matt_view", "schedule": "*/5 * * * *"},
        {"name": 'public."Daily Totals"', "schedule": None, "concurrently": False, "analyze": True},
        {"name": "reporting.user_rollup", "after": ["public.polls_user_matt_view"], "dag_id": "rollup"},
    ],
}

#: Every production key of a view, set.
ALL_KEYS: dict[str, Any] = {
    "timezone": "Europe/Berlin",
    "on_failure": [{"notifier": SMTP, "to": "ops@example.com", "smtp_conn_id": "smtp_ops"}],
    "on_retry": [{"notifier": SMTP, "to": "ops@example.com", "subject": "retry {{ matview.view }}"}],
    "on_success": [{"notifier": f"{RECORDING}.record", "label": "ok"}],
    "on_stale": [{"notifier": SMTP, "to": "oncall@example.com"}],
    "max_staleness": "2h",
    "pool": "pg_main",
    "pool_slots": 2,
    "priority_weight": 7,
    "queue": "refreshes",
    "description": "Nightly sales rollup",
}
