"""The operator that refreshes one PostgreSQL materialized view."""

from __future__ import annotations

import contextlib
import time
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, get_args

from airflow.sdk import Asset, BaseOperator

from airflow_matview.assets import SCHEME, matview_asset
from airflow_matview.config.fields import parse_concurrently, parse_duration, parse_flag, parse_history_table
from airflow_matview.database.identifiers import QualifiedName, parse_qualified_name
from airflow_matview.database.refresh_settings import Concurrently, OnOverlap, RefreshSettings
from airflow_matview.exceptions import (
    InvalidIdentifierError,
    InvalidSettingError,
    MatviewRefreshError,
    MatviewSetupError,
    MatviewTimeoutError,
)
from airflow_matview.operators.lineage import Lineage
from airflow_matview.refresh_task import (
    FINGERPRINT_PREFIX,
    FLAGS,
    FingerprintRecord,
    RefreshRecord,
    application_name,
    check_conn_id,
    fingerprint_key,
    history_target,
    parse_view,
    read_flags,
)
from airflow_matview.text import error_line, format_seconds
from airflow_matview.version_compat import (
    START_FROM_TRIGGER_MISSING,
    AirflowSkipException,
    AirflowTaskTimeout,
    TaskDeferralTimeout,
    TaskDeferred,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import psycopg
    from airflow.sdk import Context

    from airflow_matview.database.refresh import RefreshResult


__all__ = ["FINGERPRINT_PREFIX", "RefreshMaterializedViewOperator", "fingerprint_key"]

# How much longer than execution_timeout a deferred refresh may take before Airflow gives up on its trigger.
DEFER_TIMEOUT_GRACE = timedelta(seconds=30)
# The bound of a deferred refresh without an execution_timeout: a deferral nobody picks up (no triggerer) fails
# instead of waiting for ever.
DEFER_TIMEOUT_WITHOUT_EXECUTION_TIMEOUT = timedelta(hours=1)

_ON_OVERLAP = get_args(OnOverlap)


class RefreshMaterializedViewOperator(BaseOperator):
    """Refresh a PostgreSQL materialized view through the postgres provider's :class:`PostgresHook`.

    The view is looked up in the catalog first, so a missing view, a table, a plain view or a role that may not
    refresh it fails with a clear error before anything is locked. The refresh runs in one transaction: when it
    fails, the view keeps its previous contents. A refresh never outlives its task: ``on_kill`` cancels it on the
    server, the server enforces the task's ``execution_timeout`` as ``statement_timeout``, and notices within a
    second when the task's process dies. Two refreshes of one view never overlap (see ``on_overlap``).

    :param view: ``name`` or ``schema.name`` (templated); quote parts with capitals or spaces, as in SQL:
        ``"Sales Report"."Q1 Totals"``.
    :param postgres_conn_id: the id of an Airflow connection of type ``postgres`` (templated). A connection URI or
        DSN is refused, without being repeated: credentials belong in the connection.
    :param concurrently: ``"auto"`` (default) refreshes ``CONCURRENTLY`` when PostgreSQL allows it (the view is
        populated and has a unique index on plain columns without a WHERE clause) and with a plain refresh
        otherwise; ``True`` requires ``CONCURRENTLY`` and fails, saying why, when it cannot work; ``False``
        always runs a plain refresh, which blocks readers of the view (templated).
    :param with_data: ``False`` runs ``REFRESH ... WITH NO DATA``, which empties the view (templated; the text
        ``"true"``/``"false"`` is read as the flag, anything else is refused).
    :param analyze: run ``ANALYZE`` on the view after the refresh (templated).
    :param lock_timeout: the longest wait for the view's lock, and for another refresh of the view to finish, as
        a timedelta, seconds or text as in the config (``"30s"``, ``"5m"``); ``None`` waits forever. When it expires
        the task fails naming the blocking session.
    :param on_overlap: when another refresh of the same view is running: ``"wait"`` (up to ``lock_timeout``),
        ``"skip"`` this run, or ``"fail"`` it.
    :param skip_if_unchanged: skip the refresh (the task ends skipped, no asset event) when none of the view's
        source tables changed since its last successful refresh by this operator. The signal (table
        statistics and relfilenodes, recorded in an Airflow Variable) and its limits are in docs/data-aware.md.
    :param deferrable: run the refresh in Airflow's triggerer (  :class:`~airflow_matview.triggers.deferred_refresh.
        RefreshTrigger`) instead of holding a worker slot for its whole duration; the result, asset event and
        errors are the same (templated).
    :param start_from_trigger: start the refresh in Airflow's triggerer, without a worker (Airflow 3.3+, Airflow's
        own ``start_from_trigger``; :class:`~airflow_matview.triggers.started_refresh.StartedRefreshTrigger`): the
        triggerer renders the templated arguments, refreshes, and ends the task itself when nothing that follows
        needs a worker: it records the XCom and ``skip_if_unchanged``'s signals, and calls the on_success
        notifiers of the config. A failure, and a success that must register the task's asset event (see
        ``finish_on_worker``), an ``on_success_callback`` of your own or OpenLineage, resume on a worker, which
        finishes as a deferred refresh does. Airflow pools do not apply (the scheduler defers such a task before it
        checks pools): passing ``pool`` is refused.
    :param finish_on_worker: with ``start_from_trigger``, finish every successful refresh on a worker, so that
        Airflow registers the task's asset event, which DAGs scheduled on the view's asset wait for (Airflow 3.3
        registers none for a task that ends in the triggerer).
    :param history: record each refresh in this table of the view's database, ``schema.table`` (see
        docs/observability.md; ``airflow-matview history init`` creates it): a success row in the refresh's own
        transaction, a skip or failure row after it. A row that cannot be written is logged, never fails the task.
    :param history_retention: with ``history``, delete the view's rows older than this (a timedelta, seconds or
        text such as ``"90d"``), in small batches after each refresh.
    :return: a dict with ``view``, ``mode`` (``concurrently``, ``blocking`` or ``no_data``), ``reason``,
        ``seconds`` and ``rows`` (from the catalog; ``None`` when PostgreSQL has no estimate).
    """

    template_fields: Sequence[str] = (
        "view",
        "postgres_conn_id",
        "concurrently",
        "with_data",
        "analyze",
        "skip_if_unchanged",
        "deferrable",
    )
    ui_color = "#c9e7f8"

    def __init__(
        self,
        *,
        view: str,
        postgres_conn_id: str = "postgres_default",
        concurrently: Concurrently | str = "auto",
        with_data: bool | str = True,
        analyze: bool | str = False,
        lock_timeout: timedelta | float | str | None = timedelta(minutes=1),
        on_overlap: OnOverlap = "wait",
        skip_if_unchanged: bool | str = False,
        deferrable: bool | str = False,
        start_from_trigger: bool = False,
        finish_on_worker: bool = False,
        record_freshness: bool = False,
        history: str | None = None,
        history_retention: timedelta | float | str | None = None,
        **kwargs: Any,
    ) -> None:
        task_id = kwargs.get("task_id", "?")
        check_conn_id(postgres_conn_id, f"{task_id}: postgres_conn_id")
        if start_from_trigger:
            _check_start_from_trigger(view, postgres_conn_id, task_id, kwargs)
        if "outlets" not in kwargs and (asset := _static_asset(postgres_conn_id, view)) is not None:
            kwargs["outlets"] = [asset]
        super().__init__(**kwargs)
        self.view = view
        self.postgres_conn_id = postgres_conn_id
        self.concurrently = concurrently
        self.with_data = with_data
        self.analyze = analyze
        self.on_overlap = on_overlap
        self.skip_if_unchanged = skip_if_unchanged
        self.deferrable = deferrable
        self.record_freshness = bool(record_freshness)
        self._conn: psycopg.Connection | None = None
        self._lineage: Lineage | None = None
        if on_overlap not in _ON_OVERLAP:
            raise MatviewSetupError(f"on_overlap must be 'wait', 'skip' or 'fail', not {on_overlap!r}.")
        # Flags and durations follow the config file's rules (settings.py); a templated value is checked once
        # rendered, in execute().
        key = "lock_timeout"
        try:
            self.lock_timeout = None if lock_timeout is None else parse_duration(lock_timeout, key, positive=True)
            key = "history"
            self.history = _history_table(history)
            key = "history_retention"
            self.history_retention = (
                None if history_retention is None else parse_duration(history_retention, key, positive=True)
            )
            if self.history_retention is not None and self.history is None:
                raise InvalidSettingError("set history too: without it nothing is recorded to prune")
            for key, value in (
                ("concurrently", concurrently),
                ("with_data", with_data),
                ("analyze", analyze),
                ("skip_if_unchanged", skip_if_unchanged),
            ):
                if "{{" not in str(value):
                    (parse_concurrently if key == "concurrently" else parse_flag)(value, key)
        except InvalidSettingError as exc:
            raise MatviewSetupError(
                f"Cannot refresh {view} ({self.connection_label}): {key}: {exc}. Check the values passed to the "
                f"operator (task {self.task_id})."
            ) from None
        if start_from_trigger:
            from airflow_matview.triggers.started_refresh import start_trigger_args

            self.start_from_trigger = True
            self.start_trigger_args = start_trigger_args(self, finish_on_worker)

    @property
    def connection_label(self) -> str:
        return f"connection {self.postgres_conn_id!r}"

    @property
    def history_retention_seconds(self) -> float | None:
        return None if self.history_retention is None else self.history_retention.total_seconds()

    def execute(self, context: Context) -> dict[str, Any]:
        with self._counted():
            return self._execute(context)

    @contextmanager
    def _counted(self) -> Iterator[None]:
        """Count a skipped or failed refresh in Airflow's metrics (a success is counted by :meth:`_finish`)."""
        from airflow_matview import refresh_metrics

        try:
            yield
        except TaskDeferred:
            raise
        except AirflowSkipException:
            refresh_metrics.skipped(self.postgres_conn_id, str(self.view))
            raise
        except Exception as error:
            refresh_metrics.failed(self.postgres_conn_id, str(self.view))
            if self.record_freshness:
                with contextlib.suppress(Exception):  # an unparsable view name: its own error is the one raised
                    view = self._parse_view()
                    RefreshRecord(self.postgres_conn_id, view).save_failure(error_line(error), time.time())
            raise

    def _execute(self, context: Context) -> dict[str, Any]:
        check_conn_id(self.postgres_conn_id, f"{self.task_id}: postgres_conn_id (rendered)")
        view = self._parse_view()
        flags = read_flags({key: getattr(self, key) for key in FLAGS}, view, self.connection_label)
        record = FingerprintRecord(self.postgres_conn_id, view) if flags.skip_if_unchanged else None
        settings = RefreshSettings(
            concurrently=flags.concurrently,
            with_data=flags.with_data,
            analyze=flags.analyze,
            lock_timeout=self.lock_timeout,
            statement_timeout=self.execution_timeout,
            on_overlap=self.on_overlap,
            application_name=application_name(context.get("ti"), self.task_id),
            skip_if_unchanged=flags.skip_if_unchanged,
            previous_fingerprint=record.load() if record else None,
            read_signals=self.record_freshness,
            history=history_target(self.history, self.history_retention_seconds, context),
        )
        if flags.deferrable:
            self._defer(view, settings)
        result, namespace, database = self._refresh_in_this_process(view, settings)
        return self._finish(context, result, namespace, database, record)

    def _refresh_in_this_process(
        self, view: QualifiedName, settings: RefreshSettings
    ) -> tuple[RefreshResult, str, str]:
        """Connect and refresh; the result, and the OpenLineage namespace and database of the connection."""
        # Imported here, not at the top: psycopg and the postgres provider's hook (with SQLAlchemy) are only
        # needed to run a task; importing them at the top would slow down parsing every DAG file that uses this.
        from airflow_matview.connections import connect
        from airflow_matview.database.refresh import refresh_materialized_view

        try:
            self._conn = connect(self.postgres_conn_id, f"refresh {view}")
            info = self._conn.info
            namespace, database = f"postgres://{info.host}:{info.port}", info.dbname
            try:
                result = refresh_materialized_view(self._conn, view, settings, self.connection_label)
            finally:
                conn, self._conn = self._conn, None
                conn.close()
        except AirflowTaskTimeout:
            limit = self.execution_timeout.total_seconds() if self.execution_timeout else None
            raise MatviewTimeoutError(
                f"The refresh of {view} ({self.connection_label}) exceeded its execution_timeout "
                f"({'?' if limit is None else f'{limit:g}s'}) and was cancelled; PostgreSQL rolled it back, so the "
                "view keeps its previous contents. Airflow retries it if retries remain; raise execution_timeout "
                "if the refresh needs longer."
            ) from None
        return result, namespace, database

    def _defer(self, view: QualifiedName, settings: RefreshSettings) -> None:
        """Hand the refresh to Airflow's triggerer, unless none is alive (then fail now, saying so).

        :raises TaskDeferred: always, when a triggerer may be alive.
        :raises MatviewRefreshError: no triggerer is alive (retried: one may be starting).
        """
        from airflow_matview.triggerer_health import triggerer_problem_in_task
        from airflow_matview.triggers.deferred_refresh import RefreshTrigger, settings_to_kwargs

        if problem := triggerer_problem_in_task():
            raise MatviewRefreshError(
                f"Cannot refresh {view} ({self.connection_label}) in Airflow's triggerer (deferrable): {problem}. "
                "Start one (`airflow triggerer`), or set deferrable to false to refresh on the worker; Airflow "
                "retries the task if retries remain."
            )
        trigger = RefreshTrigger(str(view), self.postgres_conn_id, settings_to_kwargs(settings))
        # The server's statement_timeout (the same execution_timeout) ends the REFRESH first, with its own message;
        # the trigger's timeout is the backstop for a refresh that no triggerer picks up or that cannot connect.
        self.defer(trigger=trigger, method_name="execute_complete", timeout=self.deferral_timeout)

    @property
    def deferral_timeout(self) -> timedelta:
        """How long a deferred refresh may take, from the deferral: ``execution_timeout`` (or, without one,
        :data:`DEFER_TIMEOUT_WITHOUT_EXECUTION_TIMEOUT`) and :data:`DEFER_TIMEOUT_GRACE`."""
        return (self.execution_timeout or DEFER_TIMEOUT_WITHOUT_EXECUTION_TIMEOUT) + DEFER_TIMEOUT_GRACE

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Resume after the deferral; Airflow's bare ``TaskDeferralTimeout`` becomes a line that says what happened
        (and whether a triggerer is alive now)."""
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except TaskDeferralTimeout:
            from airflow_matview.triggerer_health import triggerer_problem_in_task

            bound = (
                "execution_timeout"
                if self.execution_timeout
                else f"{format_seconds(DEFER_TIMEOUT_WITHOUT_EXECUTION_TIMEOUT.total_seconds())} without an "
                "execution_timeout,"
            )
            what = (
                f"{problem}: start one (`airflow triggerer`)"
                if (problem := triggerer_problem_in_task())
                else "no triggerer picked it up in time, or it ran longer than that: check that `airflow "
                "triggerer` is running and healthy, or raise execution_timeout"
            )
            raise MatviewRefreshError(
                f"The deferred refresh of {self.view} ({self.connection_label}) did not finish within "
                f"{format_seconds(self.deferral_timeout.total_seconds())} ({bound} and "
                f"{format_seconds(DEFER_TIMEOUT_GRACE.total_seconds())}), and Airflow gave it up: {what}. Airflow "
                "retries the task if retries remain."
            ) from None

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after a deferred refresh: record and return its result, or raise its error as it was raised."""
        with self._counted():
            return self._execute_complete(context, event)

    def _execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        from airflow_matview.database.refresh import RefreshResult
        from airflow_matview.triggers.deferred_refresh import error_from_event

        if event.get("status") != "success":
            raise error_from_event(event)
        result = RefreshResult(**event["result"])
        skip_if_unchanged = parse_flag(self.skip_if_unchanged, "skip_if_unchanged")
        record = FingerprintRecord(self.postgres_conn_id, self._parse_view()) if skip_if_unchanged else None
        return self._finish(context, result, event["namespace"], event["database"], record)

    def _finish(
        self, context: Context, result: RefreshResult, namespace: str, database: str, record: FingerprintRecord | None
    ) -> dict[str, Any]:
        """What follows a successful refresh, wherever it ran: lineage, fingerprint, metrics, asset event, XCom."""
        from airflow_matview import refresh_metrics

        self._lineage = Lineage(namespace, database, result.view, result.sources)
        if record is not None:
            record.save(result.fingerprint)
        if self.record_freshness:
            RefreshRecord(self.postgres_conn_id, self._parse_view()).save(result.records())
        outcome = result.as_dict()
        refresh_metrics.refreshed(self.postgres_conn_id, outcome)
        self._describe_asset_event(context, outcome)
        self.log.info(
            "Refreshed %s (%s) in %.3fs; about %s rows.", result.view, result.mode, result.seconds, result.rows
        )
        return outcome

    def _describe_asset_event(self, context: Context, result: dict[str, Any]) -> None:
        events = context.get("outlet_events")
        if events is None:
            return
        for outlet in self.outlets:
            if isinstance(outlet, Asset) and outlet.uri.startswith(f"{SCHEME}://"):
                events[outlet].extra.update({key: result[key] for key in ("view", "rows", "seconds", "mode")})

    def get_openlineage_facets_on_start(self) -> Any:
        """OpenLineage's START: the view as the output (its inputs are known once it has refreshed)."""
        from airflow_matview.operators.lineage import view_only

        return view_only(self.postgres_conn_id, str(self._parse_view()))

    def get_openlineage_facets_on_complete(self, task_instance: object) -> Any:
        """OpenLineage's COMPLETE: the view is the output, the tables it reads are the inputs, each with its columns
        (when the provider is installed)."""
        if self._lineage is None:
            return None
        from airflow_matview.operators.lineage import on_complete

        return on_complete(self._lineage, self.postgres_conn_id)

    def get_openlineage_facets_on_failure(self, task_instance: object) -> Any:
        """OpenLineage's FAIL: the view that was not refreshed, as the output."""
        return self.get_openlineage_facets_on_start()

    def on_kill(self) -> None:
        """Cancel the running refresh on the server; PostgreSQL rolls it back and releases its locks."""
        conn = self._conn
        if conn is None or conn.closed:
            return
        self.log.warning(
            "Task stopped: cancelling the refresh of %s (backend pid %s).", self.view, conn.info.backend_pid
        )
        try:
            conn.cancel_safe(timeout=5)
        except Exception as exc:  # the server may be gone already; nothing more to stop then
            self.log.warning("Could not cancel the refresh: %s", exc)

    def _parse_view(self) -> QualifiedName:
        return parse_view(self.view, self.connection_label)


def _static_asset(conn_id: str, view: str) -> Asset | None:
    """The view's asset when its name and connection are known now (not templated) and schema-qualified."""
    if "{{" in f"{conn_id}{view}":
        return None
    try:
        name = parse_qualified_name(view)
    except InvalidIdentifierError:
        return None
    return matview_asset(conn_id, name) if name.schema is not None else None


def _check_start_from_trigger(view: str, conn_id: str, task_id: str, kwargs: dict[str, Any]) -> None:
    """Refuse ``start_from_trigger`` where it cannot work: an older Airflow, or with a pool Airflow would ignore."""
    where = f"Cannot refresh {view} (connection {conn_id!r}, task {task_id}): start_from_trigger"
    if START_FROM_TRIGGER_MISSING:
        raise MatviewSetupError(f"{where}: {START_FROM_TRIGGER_MISSING}.")
    if kwargs.get("pool") not in (None, "default_pool"):
        raise MatviewSetupError(
            f"{where}: Airflow applies no pool to a task that starts in the triggerer (the scheduler defers it "
            f"before it checks pools), so pool {kwargs['pool']!r} would not limit it. Remove pool, or "
            "start_from_trigger; the triggerer opens at most [matview] triggerer_max_connections connections per "
            "Airflow connection."
        )


def _history_table(value: str | None) -> str | None:
    try:
        return parse_history_table(value)
    except ValueError as exc:
        raise InvalidSettingError(str(exc)) from None
