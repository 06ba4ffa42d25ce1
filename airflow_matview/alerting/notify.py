"""Sending a notification when a refresh fails, retries, succeeds or its view is stale: the configured notifier
(see :mod:`airflow_matview.config.notifier_specs`) is built when the event happens, with the event described in the
context under ``matview`` and, unless the config sets them, our default subject and message."""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any

from airflow_matview.config.notification import describe, with_default_message
from airflow_matview.config.notifier_specs import NotifierSpec, loaded_notifier

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["TaskNotifier", "acall", "call", "callbacks", "describe", "with_default_message"]


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
