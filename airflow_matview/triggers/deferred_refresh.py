"""The trigger that runs a deferred refresh in Airflow's triggerer, so it holds no worker slot while it runs.

It runs the very refresh the operator runs (the steps of
:func:`airflow_matview.database.refresh.refresh_materialized_view`,
with its catalog checks, advisory lock, ``lock_timeout``, ``statement_timeout``, ``application_name`` and
``client_connection_check_interval``) on an asynchronous psycopg connection borrowed from the triggerer's pool
(:mod:`airflow_matview.triggers.connection_pool`), in the triggerer's event loop: no thread, and a waiting refresh
costs one connection and a few kilobytes. Whatever ends the trigger early (the
task marked failed or cleared, the trigger's timeout, the triggerer stopping) cancels the statement on the server,
which rolls it back and releases its locks; a triggerer that dies outright drops the connection, which the server
notices within a second (``client_connection_check_interval``). The outcome travels back to the worker as an event:
the result, or the error's kind and message, which the operator raises again unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_matview.exceptions import TASK_ERRORS, MatviewRefreshError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import psycopg

    from airflow_matview.database.refresh_settings import RefreshSettings

# How long a cancelled refresh may take to roll back before its connection is closed (the server then notices the
# closed connection within a second and rolls back itself).
CANCEL_WAIT_SECONDS = 30.0


def settings_to_kwargs(settings: RefreshSettings) -> dict[str, Any]:
    """:class:`RefreshSettings` as JSON-friendly trigger arguments (durations in seconds)."""
    seconds = {
        key: value.total_seconds() if isinstance(value, timedelta) else value
        for key, value in (("lock_timeout", settings.lock_timeout), ("statement_timeout", settings.statement_timeout))
    }
    return {
        "concurrently": settings.concurrently,
        "with_data": settings.with_data,
        "analyze": settings.analyze,
        "on_overlap": settings.on_overlap,
        "application_name": settings.application_name,
        "skip_if_unchanged": settings.skip_if_unchanged,
        "previous_fingerprint": settings.previous_fingerprint,
        "read_signals": settings.read_signals,
        "history": None if settings.history is None else settings.history.as_dict(),
        **seconds,
    }


def settings_from_kwargs(kwargs: dict[str, Any]) -> RefreshSettings:
    """The :class:`RefreshSettings` that :func:`settings_to_kwargs` wrote (a trigger stored by an earlier release
    has no ``history``)."""
    from airflow_matview.database.history import HistoryTarget
    from airflow_matview.database.refresh_settings import RefreshSettings

    history = kwargs.get("history")
    return RefreshSettings(**{**kwargs, "history": None if history is None else HistoryTarget(**history)})


def error_from_event(event: dict[str, Any]) -> BaseException:
    """The exception a failed deferred refresh raised in the triggerer, to raise again in the task."""
    return TASK_ERRORS.get(event.get("error", ""), MatviewRefreshError)(event.get("message", "The refresh failed."))


class TriggererRefresh(BaseTrigger):
    """What every refresh in the triggerer shares: the refresh on a pooled connection, as a task of its own that a
    cancelled trigger stops on the server first (see :meth:`refresh_shielded`)."""

    _conn: psycopg.AsyncConnection | None = None

    async def refresh_shielded(self, view: str, postgres_conn_id: str, settings: RefreshSettings) -> dict[str, Any]:
        """:meth:`refresh`, in a task of its own: when the trigger is cancelled, the statement is cancelled on the
        server, and the cancellation goes on once the refresh has rolled back."""
        refresh = asyncio.create_task(self.refresh(view, postgres_conn_id, settings), name=f"refresh {view}")
        try:
            return await asyncio.shield(refresh)
        except asyncio.CancelledError:
            self.log.warning("Refresh of %s stopped: cancelling it on the server.", view)
            await self._stop(refresh)
            raise

    async def refresh(self, view_name: str, postgres_conn_id: str, settings: RefreshSettings) -> dict[str, Any]:
        """The refresh, on a connection of the triggerer's pool; its result or its error as an event's payload."""
        from airflow_matview.database.identifiers import parse_qualified_name
        from airflow_matview.database.refresh import arefresh_materialized_view
        from airflow_matview.triggers.connection_pool import pool_for

        view = parse_qualified_name(view_name)
        label = f"connection {postgres_conn_id!r}"
        try:
            async with pool_for(postgres_conn_id).connection(f"refresh {view}") as conn:
                self._conn = conn
                try:
                    namespace, database = f"postgres://{conn.info.host}:{conn.info.port}", conn.info.dbname
                    result = await arefresh_materialized_view(conn, view, settings, label)
                finally:
                    self._conn = None
        except tuple(TASK_ERRORS.values()) as exc:
            return {"status": "error", "error": type(exc).__name__, "message": str(exc)}
        except Exception as exc:  # anything else still ends the task, with its cause, instead of hanging it
            message = f"Refresh of {view} ({label}) failed: {exc}"
            return {"status": "error", "error": "MatviewRefreshError", "message": message}
        return {
            "status": "success",
            "namespace": namespace,
            "database": database,
            "result": {**result.as_dict(), **result.records()},
        }

    async def _stop(self, refresh: asyncio.Task[dict[str, Any]]) -> None:
        """Cancel the running statement on the server, then the refresh, and wait until it has rolled back."""
        from psycopg.pq import TransactionStatus

        conn = self._conn
        if conn is not None and not conn.closed and conn.info.transaction_status == TransactionStatus.ACTIVE:
            with contextlib.suppress(Exception):  # the server may be gone: nothing left to stop then
                await conn.cancel_safe(timeout=5)
        refresh.cancel()  # ends it at its next step; psycopg cancels a statement still running, and it rolls back
        await asyncio.wait({refresh}, timeout=CANCEL_WAIT_SECONDS)
        if not refresh.done():
            if (conn := self._conn) is not None:
                await conn.close()  # the server notices within a second, and rolls back
        elif not refresh.cancelled():
            refresh.exception()  # it ended otherwise; nobody waits for its outcome any more


class RefreshTrigger(TriggererRefresh):
    """Refresh one materialized view in the triggerer and fire one event with the outcome.

    :param view: the view, as the operator parsed it (``schema.name``, quoted where needed).
    :param postgres_conn_id: the Airflow connection to the database.
    :param settings: :func:`settings_to_kwargs` of the refresh's settings.
    """

    def __init__(self, view: str, postgres_conn_id: str, settings: dict[str, Any]) -> None:
        super().__init__()
        self.view = view
        self.postgres_conn_id = postgres_conn_id
        self.settings = settings

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"view": self.view, "postgres_conn_id": self.postgres_conn_id, "settings": self.settings},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        outcome = await self.refresh_shielded(self.view, self.postgres_conn_id, settings_from_kwargs(self.settings))
        yield TriggerEvent(outcome)
