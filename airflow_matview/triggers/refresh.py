"""The trigger that runs a deferred refresh in Airflow's triggerer, so it holds no worker slot while it runs.

It runs the very refresh the operator runs (:func:`airflow_matview.refresh.refresh_materialized_view`, with its
catalog checks, advisory lock, ``lock_timeout``, ``statement_timeout``, ``application_name`` and
``client_connection_check_interval``) on a connection of its own, in a thread of its own: the triggerer's event loop
only awaits it, and thousands of waiting refreshes cost one idle thread and one connection each. Whatever ends the
trigger early (the task marked failed or cleared, the trigger's timeout, the triggerer stopping) cancels the
statement on the server, which rolls it back and releases its locks; a triggerer that dies outright drops the
connection, which the server notices within a second (``client_connection_check_interval``). The outcome travels back
to the worker as an event: the result, or the error's kind and message, which the operator raises again unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_matview import exceptions
from airflow_matview.compat import AirflowSkipException
from airflow_matview.exceptions import MatviewRefreshError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import psycopg

    from airflow_matview.settings import RefreshSettings

# How often a cancelled refresh is cancelled again on the server until its thread has ended: a cancel sent just
# before the REFRESH statement reached the server would otherwise be lost.
CANCEL_RETRY_SECONDS = 1.0
CANCEL_WAIT_SECONDS = 30.0
# The errors a refresh raises, by name: the event carries the name, and the task raises the same class again.
_ERRORS: dict[str, type[BaseException]] = {
    **{
        name: value
        for name, value in vars(exceptions).items()
        if name.startswith("Matview") and isinstance(value, type) and issubclass(value, BaseException)
    },
    "AirflowSkipException": AirflowSkipException,
}


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
        **seconds,
    }


def error_from_event(event: dict[str, Any]) -> BaseException:
    """The exception a failed deferred refresh raised in the triggerer, to raise again in the task."""
    return _ERRORS.get(event.get("error", ""), MatviewRefreshError)(event.get("message", "The refresh failed."))


class RefreshTrigger(BaseTrigger):
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
        self._conn: psycopg.Connection | None = None
        self._cancelled = threading.Event()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"view": self.view, "postgres_conn_id": self.postgres_conn_id, "settings": self.settings},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[dict[str, Any]] = loop.create_future()

        def finish(outcome: dict[str, Any]) -> None:
            if not done.done():
                done.set_result(outcome)

        def work() -> None:
            try:
                outcome = self._refresh()
            except BaseException as exc:  # never leave the trigger waiting for a thread that died
                message = f"Refresh of {self.view} failed: {exc}"
                outcome = {"status": "error", "error": "MatviewRefreshError", "message": message}
            with contextlib.suppress(RuntimeError):  # the loop is closed: the triggerer is gone, nobody waits
                loop.call_soon_threadsafe(finish, outcome)

        thread = threading.Thread(target=work, name=f"refresh {self.view}", daemon=True)
        thread.start()
        try:
            outcome = await asyncio.shield(done)
        except asyncio.CancelledError:
            self.log.warning("Refresh of %s stopped: cancelling it on the server.", self.view)
            self._cancelled.set()
            await self._cancel_until_ended(thread)
            raise
        yield TriggerEvent(outcome)

    def _refresh(self) -> dict[str, Any]:
        """The refresh, on this thread's own connection; its result or its error as the event's payload."""
        from airflow_matview.connection import connect
        from airflow_matview.identifiers import parse_qualified_name
        from airflow_matview.refresh import refresh_materialized_view
        from airflow_matview.settings import RefreshSettings

        view = parse_qualified_name(self.view)
        label = f"connection {self.postgres_conn_id!r}"
        try:
            conn = connect(self.postgres_conn_id, f"refresh {view}")
            self._conn = conn
            try:
                if self._cancelled.is_set():
                    raise MatviewRefreshError(f"The refresh of {view} ({label}) was cancelled before it started.")
                namespace, database = f"postgres://{conn.info.host}:{conn.info.port}", conn.info.dbname
                result = refresh_materialized_view(conn, view, RefreshSettings(**self.settings), label)
            finally:
                self._conn = None
                conn.close()
        except tuple(_ERRORS.values()) as exc:
            return {"status": "error", "error": type(exc).__name__, "message": str(exc)}
        except Exception as exc:  # anything else still ends the task, with its cause, instead of hanging it
            message = f"Refresh of {view} ({label}) failed: {exc}"
            return {"status": "error", "error": "MatviewRefreshError", "message": message}
        return {
            "status": "success",
            "namespace": namespace,
            "database": database,
            "result": {**result.as_dict(), "fingerprint": result.fingerprint},
        }

    async def _cancel_until_ended(self, thread: threading.Thread) -> None:
        """Cancel the running statement, again each second, until the refresh's thread has rolled back."""
        deadline = asyncio.get_running_loop().time() + CANCEL_WAIT_SECONDS
        while thread.is_alive() and asyncio.get_running_loop().time() < deadline:
            conn = self._conn
            if conn is not None and not conn.closed:
                with contextlib.suppress(Exception):  # the server may be gone: nothing left to stop then
                    await asyncio.to_thread(conn.cancel_safe, timeout=5)
            await asyncio.to_thread(thread.join, CANCEL_RETRY_SECONDS)
