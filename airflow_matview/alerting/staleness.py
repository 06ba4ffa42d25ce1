"""The ``max_staleness`` Deadline Alert of airflow-matview 0.x before ``max_staleness`` meant lag: kept so that the
deadlines a running deployment already stored (Airflow's metadata holds each callback's import path) still call
:func:`notify_stale`. New DAGs have no Deadline Alert: the lag monitor (:mod:`airflow_matview.alerting.lag_alerts`)
tells ``on_stale`` notifiers. :func:`with_accessors` is shared by both.

The deadline was ``max_staleness`` after each run was queued (``DeadlineReference.DAGRUN_QUEUED_AT``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_matview.alerting.notify import acall
from airflow_matview.config.notification import describe_stale
from airflow_matview.config.notifier_specs import NotifierSpec

log = logging.getLogger(__name__)


async def notify_stale(
    *,
    view: str,
    conn_id: str,
    dag_id: str,
    max_staleness_seconds: float,
    notifiers: list[dict[str, Any]],
    context: dict[str, Any] | None = None,
) -> str:
    """Called by Airflow's triggerer once per run that missed its deadline: tell every ``on_stale`` notifier.

    :param context: what the scheduler sends: the run (``dag_run``) and the deadline (``deadline``).
    :return: a one-line summary, kept by Airflow as the callback's result.
    """
    context = with_accessors(dict(context or {}))
    run = context.get("dag_run") or {}
    now = datetime.now(timezone.utc)
    queued_at = _datetime(run.get("queued_at")) or now
    deadline = _datetime((context.get("deadline") or {}).get("deadline_time"))
    facts = describe_stale(
        view,
        conn_id,
        dag_id,
        context,
        queued_at=queued_at,
        deadline=deadline or queued_at + timedelta(seconds=max_staleness_seconds),
        now=now,
        max_staleness_seconds=max_staleness_seconds,
        run_url=_run_url(dag_id, run.get("dag_run_id") or run.get("run_id")),
    )
    context["matview"] = facts
    failures = []
    for item in notifiers:
        spec = NotifierSpec(item["notifier"], {k: v for k, v in item.items() if k != "notifier"})
        try:
            await acall(spec, context)
        except Exception as error:  # one broken notifier must not silence the others
            log.exception("on_stale notifier %s failed for %s", spec.path, view)
            failures.append(f"{spec.path}: {error}")
    summary = f"{view} stale for {facts['stale_for']} ({facts['late_by']} past max_staleness)"
    if failures:
        raise RuntimeError(f"{summary}; notifiers failed: {'; '.join(failures)}")
    return summary


def with_accessors(context: dict[str, Any]) -> dict[str, Any]:
    """``context`` with Airflow's ``var`` and ``conn`` template accessors, as a task's context has them: the
    scheduler sends a missed deadline's callback only the run and the deadline, and a notifier's template may take
    its webhook or key from a Connection or a Variable (``{{ conn.ops_hook.password }}``)."""
    from airflow.sdk.execution_time.context import ConnectionAccessor, VariableAccessor

    context.setdefault(
        "var", {"json": VariableAccessor(deserialize_json=True), "value": VariableAccessor(deserialize_json=False)}
    )
    context.setdefault("conn", ConnectionAccessor())
    return context


def _datetime(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, timezone.utc)
    return None


def _run_url(dag_id: str, run_id: str | None) -> str | None:
    if not run_id:
        return None
    from urllib.parse import quote

    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="http://localhost:8080/")
    return f"{base.rstrip('/')}/dags/{dag_id}/runs/{quote(run_id)}"
