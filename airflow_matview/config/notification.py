"""What a notification says: the facts of the event (``context["matview"]``: the view, its connection, the error,
the try, for ``stale`` how late the refresh is), our default subject and message, and where they go.

Kept with the config, below :mod:`airflow_matview.alerting`: validating a notifier's templates renders them against
the very facts a notification gets (:mod:`airflow_matview.config.notifier_templates`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_matview.config.notifier_specs import NotifierSpec, loaded_notifier
from airflow_matview.text import format_seconds

if TYPE_CHECKING:
    from collections.abc import Mapping

EVENTS = {
    "failure": "refresh failed",
    "retry": "refresh failed, will retry",
    "success": "refreshed",
    "stale": "is stale",
    "behind": "is behind its target_lag",
    "caught_up": "is back within its target_lag",
    "fresh_again": "is back within its max_staleness",
}


# Where our default message goes, by the notifier argument that holds it: the subject, then the body.
DEFAULT_SUBJECT = "{{ matview.subject }}"


DEFAULT_BODIES = {
    "html_content": "<pre>{{ matview.message | e }}</pre>",
    "text": "{{ matview.message }}",
    "message": "{{ matview.message }}",
    "body": "{{ matview.message }}",
}


_BODY_ARGUMENTS = (*DEFAULT_BODIES, "template")


def with_default_message(spec: NotifierSpec) -> dict[str, Any]:
    """The spec's arguments plus our default subject and message where the notifier takes them and the config
    leaves them out."""
    target = loaded_notifier(spec.path)
    kwargs = dict(spec.kwargs)
    if not target.is_notifier_class:
        return kwargs
    if (target.accepted is None or "subject" in target.accepted) and "subject" not in kwargs:
        kwargs["subject"] = DEFAULT_SUBJECT
    if not any(name in kwargs for name in _BODY_ARGUMENTS):
        for name, template in DEFAULT_BODIES.items():
            if target.accepted is not None and name in target.accepted:
                kwargs[name] = template
                break
    return kwargs


def describe(event: str, view: str, conn_id: str, context: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """What the notification says, as ``context["matview"]``: ``subject``, ``message`` and the parts."""
    ti = context.get("ti") or context.get("task_instance")
    facts: dict[str, Any] = {"event": event, "view": view, "conn_id": conn_id, **extra}
    if ti is not None:
        facts.setdefault("try_number", getattr(ti, "try_number", None))
        facts.setdefault("max_tries", getattr(ti, "max_tries", None))
        facts.setdefault("log_url", getattr(ti, "log_url", None))
        facts.setdefault("dag_id", getattr(ti, "dag_id", None))
        facts.setdefault("run_id", getattr(ti, "run_id", None))
    error = context.get("exception")
    if error is not None and event != "success":
        facts.setdefault("error", str(error) or type(error).__name__)
    facts["subject"] = f"[airflow-matview] {view} {EVENTS.get(event, event)} (connection {conn_id})"
    facts["message"] = "\n".join(_message_lines(facts))
    return facts


def _message_lines(facts: Mapping[str, Any]) -> list[str]:
    what = EVENTS.get(facts["event"], facts["event"])
    lines = [f"Materialized view {facts['view']} {what}.", f"Connection: {facts['conn_id']}"]
    if facts.get("stale_for") and facts.get("lag") is None:
        lines.append(
            f"Stale: its refresh due at {facts['due_at']} has not succeeded after {facts['stale_for']} "
            f"(max_staleness {facts['max_staleness']}, {facts['late_by']} late); run state: {facts.get('run_state')}"
        )
    if facts.get("lag") is not None:
        key = facts.get("alert_key") or "target_lag"
        lines.append(f"Lag: {facts['lag']} ({key} {facts.get('alert_after') or facts.get('target_lag')})")
    if facts.get("reason"):
        lines.append(f"Why: {facts['reason']}")
    if facts.get("error"):
        lines.append(f"Error: {facts['error']}")
    if facts.get("try_number") is not None:
        total = facts.get("max_tries")
        lines.append(f"Try: {facts['try_number']}" + (f" of {total + 1}" if isinstance(total, int) else ""))
    if facts.get("dag_id"):
        run = facts.get("run_id")
        lines.append(f"DAG: {facts['dag_id']}" + (f", run {run}" if run is not None else ""))
    if facts.get("log_url"):
        lines.append(f"Log: {facts['log_url']}")
    return lines


def describe_stale(
    view: str,
    conn_id: str,
    dag_id: str,
    context: Mapping[str, Any],
    *,
    queued_at: datetime,
    deadline: datetime,
    now: datetime,
    max_staleness_seconds: float,
    run_url: str | None,
) -> dict[str, Any]:
    """The facts of a ``stale`` event: :func:`describe` plus how long the run has waited and how late it is.

    :param context: what the scheduler sends with a missed deadline (``dag_run``, ``deadline``).
    :param queued_at: when the late run was queued.
    :param deadline: when its refresh should have succeeded.
    :param now: the time of the event.
    :param max_staleness_seconds: the view's ``max_staleness``.
    :param run_url: the run's page in the Airflow UI.
    """
    run = context.get("dag_run") or {}
    return describe(
        "stale",
        view,
        conn_id,
        context,
        dag_id=dag_id,
        run_id=run.get("dag_run_id") or run.get("run_id"),
        due_at=queued_at.isoformat(timespec="seconds"),
        stale_for=format_seconds((now - queued_at).total_seconds()),
        stale_seconds=round((now - queued_at).total_seconds(), 1),
        late_by=format_seconds((now - deadline).total_seconds()),
        late_seconds=round((now - deadline).total_seconds(), 1),
        max_staleness=format_seconds(max_staleness_seconds),
        run_state=run.get("state"),
        log_url=run_url,
    )


def lag_event(event: str, alert_key: str) -> str:
    """The event name of a lag notification: ``behind``/``caught_up`` for a ``target_lag``, ``stale``/
    ``fresh_again`` for a ``max_staleness`` (the event a ``max_staleness`` alert has always had)."""
    if alert_key == "max_staleness":
        return "stale" if event == "behind" else "fresh_again"
    return event


def describe_lag(
    event: str,
    view: str,
    conn_id: str,
    dag_id: str | None,
    *,
    lag: Mapping[str, Any],
    target: float | None,
    reason: str | None,
    alert_after: float | None = None,
    alert_key: str = "target_lag",
) -> dict[str, Any]:
    """The facts of a lag notification (the lag monitor's): :func:`describe` plus the lag.

    :param event: ``behind`` or ``caught_up``; named by :func:`lag_event` after ``alert_key``.
    :param lag: :meth:`airflow_matview.freshness.Lag.as_dict`.
    :param target: the view's ``target_lag`` in seconds, if it has one.
    :param reason: why the view is behind (``behind``).
    :param alert_after: the lag in seconds over which it alerts (``max_staleness`` or ``target_lag``).
    :param alert_key: which of the two that is. With ``max_staleness``, the facts a ``max_staleness`` alert had
        before it meant lag are kept for templates that use them: ``max_staleness``, ``stale_for`` and
        ``stale_seconds`` (the lag), ``late_by`` and ``late_seconds`` (lag over the threshold), ``due_at`` (when the
        oldest unreflected change was seen).
    """
    seconds, since = lag.get("seconds"), lag.get("since")
    threshold = alert_after if alert_after is not None else target
    since_iso = (
        None
        if not isinstance(since, (int, float))
        else datetime.fromtimestamp(since, timezone.utc).isoformat().replace("+00:00", "Z")
    )
    extra: dict[str, Any] = {}
    if alert_key == "max_staleness" and threshold is not None:
        lagged = None if seconds is None else float(seconds)
        late = None if lagged is None else max(0.0, lagged - threshold)
        extra = {
            "max_staleness": format_seconds(threshold),
            "max_staleness_seconds": threshold,
            "stale_for": "unknown" if lagged is None else format_seconds(lagged),
            "stale_seconds": None if lagged is None else round(lagged, 1),
            "late_by": "unknown" if late is None else format_seconds(late),
            "late_seconds": None if late is None else round(late, 1),
            "due_at": since_iso,
        }
    return describe(
        lag_event(event, alert_key),
        view,
        conn_id,
        {},
        dag_id=dag_id,
        lag="unknown" if seconds is None else format_seconds(float(seconds)),
        lag_seconds=None if seconds is None else round(float(seconds), 1),
        lag_basis=lag.get("basis"),
        lag_since=since_iso,
        target_lag=None if target is None else format_seconds(target),
        target_lag_seconds=target,
        alert_key=alert_key,
        alert_after=None if threshold is None else format_seconds(threshold),
        alert_after_seconds=threshold,
        reason=reason,
        **extra,
    )
