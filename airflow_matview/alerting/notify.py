"""Sending a notification when a refresh fails, retries, succeeds or its view is stale: the configured notifier
(see :mod:`airflow_matview.config.notifier_specs`) is built when the event happens, with the event described in the
context under ``matview`` and, unless the config sets them, our default subject and message."""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any

from airflow_matview.config.notifier_specs import NotifierSpec, loaded_notifier

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

EVENTS = {
    "failure": "refresh failed",
    "retry": "refresh failed, will retry",
    "success": "refreshed",
    "stale": "is stale",
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
    if facts.get("stale_for"):
        lines.append(
            f"Stale: its refresh due at {facts['due_at']} has not succeeded after {facts['stale_for']} "
            f"(max_staleness {facts['max_staleness']}, {facts['late_by']} late); run state: {facts.get('run_state')}"
        )
    if facts.get("error"):
        lines.append(f"Error: {facts['error']}")
    if facts.get("try_number") is not None:
        total = facts.get("max_tries")
        lines.append(f"Try: {facts['try_number']}" + (f" of {total + 1}" if isinstance(total, int) else ""))
    if facts.get("dag_id"):
        lines.append(f"DAG: {facts['dag_id']}, run {facts.get('run_id')}")
    if facts.get("log_url"):
        lines.append(f"Log: {facts['log_url']}")
    return lines


class TaskNotifier:
    """A task callback (``on_failure_callback`` ...) that builds the configured notifier when the event happens.

    Nothing is imported or instantiated when the DAG is parsed beyond what validation did.

    :param event: ``failure``, ``retry`` or ``success``.
    :param spec: the configured notifier.
    :param view: the view's name, for the message.
    :param conn_id: the view's connection id, for the message.
    """

    def __init__(self, event: str, spec: NotifierSpec, view: str, conn_id: str) -> None:
        self.event = event
        self.spec = spec
        self.view = view
        self.conn_id = conn_id

    def __repr__(self) -> str:
        return f"TaskNotifier({self.event}, {self.spec.path})"

    def __call__(self, context: dict[str, Any]) -> None:
        context["matview"] = describe(self.event, self.view, self.conn_id, context)
        call(self.spec, context)


def call(spec: NotifierSpec, context: dict[str, Any]) -> None:
    """Build the notifier and send, synchronously (task callbacks run in the task's process)."""
    target = loaded_notifier(spec.path)
    if target.is_notifier_class:
        target.obj(**with_default_message(spec))(context)
    elif inspect.iscoroutinefunction(target.obj):
        asyncio.run(target.obj(context, **spec.kwargs))
    else:
        target.obj(context, **spec.kwargs)


async def acall(spec: NotifierSpec, context: dict[str, Any]) -> None:
    """Build the notifier and send from the triggerer's event loop: ``async_notify`` when the notifier has one,
    otherwise its synchronous ``notify`` in a thread."""
    from airflow.sdk import BaseNotifier

    target = loaded_notifier(spec.path)
    if target.is_notifier_class:
        notifier = target.obj(**with_default_message(spec))
        if type(notifier).async_notify is not BaseNotifier.async_notify:
            notifier.context = context
            await notifier
        else:
            await asyncio.to_thread(notifier, context)
    elif inspect.iscoroutinefunction(target.obj):
        await target.obj(context, **spec.kwargs)
    else:
        await asyncio.to_thread(target.obj, context, **spec.kwargs)


def callbacks(event: str, specs: tuple[NotifierSpec, ...], view: str, conn_id: str) -> list[Callable[..., None]]:
    """The task callbacks for ``event``, one per configured notifier."""
    return [TaskNotifier(event, spec, view, conn_id) for spec in specs]
