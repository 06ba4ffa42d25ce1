"""The operator that refreshes one PostgreSQL materialized view."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, get_args

from airflow.sdk import Asset, BaseOperator, Variable

from airflow_matview.assets import SCHEME, matview_asset
from airflow_matview.config.fields import parse_concurrently, parse_duration, parse_flag
from airflow_matview.database.identifiers import QualifiedName, parse_qualified_name
from airflow_matview.database.refresh_settings import Concurrently, OnOverlap, RefreshSettings
from airflow_matview.exceptions import (
    InvalidIdentifierError,
    InvalidSettingError,
    MatviewRefreshError,
    MatviewSetupError,
    MatviewTimeoutError,
)
from airflow_matview.text import format_seconds
from airflow_matview.version_compat import AirflowTaskTimeout, TaskDeferralTimeout

if TYPE_CHECKING:
    from collections.abc import Sequence

    import psycopg
    from airflow.sdk import Context

    from airflow_matview.database.refresh import RefreshResult


FINGERPRINT_PREFIX = "airflow_matview.fingerprint."
# How much longer than execution_timeout a deferred refresh may take before Airflow gives up on its trigger.
DEFER_TIMEOUT_GRACE = timedelta(seconds=30)
# The bound of a deferred refresh without an execution_timeout: a deferral nobody picks up (no triggerer) fails
# instead of waiting for ever.
DEFER_TIMEOUT_WITHOUT_EXECUTION_TIMEOUT = timedelta(hours=1)

_ON_OVERLAP = get_args(OnOverlap)

log = logging.getLogger(__name__)


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
        **kwargs: Any,
    ) -> None:
        task_id = kwargs.get("task_id", "?")
        _check_conn_id(postgres_conn_id, f"{task_id}: postgres_conn_id")
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
        self._conn: psycopg.Connection | None = None
        self._lineage: _Lineage | None = None
        if on_overlap not in _ON_OVERLAP:
            raise MatviewSetupError(f"on_overlap must be 'wait', 'skip' or 'fail', not {on_overlap!r}.")
        # Flags and durations follow the config file's rules (settings.py); a templated value is checked once
        # rendered, in execute().
        key = "lock_timeout"
        try:
            self.lock_timeout = None if lock_timeout is None else parse_duration(lock_timeout, key, positive=True)
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

    @property
    def connection_label(self) -> str:
        return f"connection {self.postgres_conn_id!r}"

    def execute(self, context: Context) -> dict[str, Any]:
        _check_conn_id(self.postgres_conn_id, f"{self.task_id}: postgres_conn_id (rendered)")
        view = self._parse_view()
        flags = self._rendered_flags(view)
        record = _FingerprintRecord(self.postgres_conn_id, view) if flags.skip_if_unchanged else None
        settings = RefreshSettings(
            concurrently=flags.concurrently,
            with_data=flags.with_data,
            analyze=flags.analyze,
            lock_timeout=self.lock_timeout,
            statement_timeout=self.execution_timeout,
            on_overlap=self.on_overlap,
            application_name=self._application_name(context),
            skip_if_unchanged=flags.skip_if_unchanged,
            previous_fingerprint=record.load() if record else None,
        )
        if flags.deferrable:
            self._defer(view, settings)
        result, namespace, database = self._refresh_in_this_process(view, settings)
        return self._finish(context, result, namespace, database, record)

    def _rendered_flags(self, view: QualifiedName) -> _Flags:
        """The templated flags as rendered for this run, read by the config file's rules."""
        try:
            key = "skip_if_unchanged"
            skip_if_unchanged = parse_flag(self.skip_if_unchanged, key)
            key = "concurrently"
            concurrently = parse_concurrently(self.concurrently)
            key = "with_data"
            with_data = parse_flag(self.with_data, key)
            key = "analyze"
            analyze = parse_flag(self.analyze, key)
            key = "deferrable"
            deferrable = parse_flag(self.deferrable, key)
        except InvalidSettingError as exc:
            raise MatviewSetupError(
                f"Cannot refresh {view} ({self.connection_label}): {key}: {exc}. Check the DAG's params or the values "
                "passed to the operator."
            ) from None
        return _Flags(skip_if_unchanged, concurrently, with_data, analyze, deferrable)

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
        from airflow_matview.database.refresh import RefreshResult
        from airflow_matview.triggers.deferred_refresh import error_from_event

        if event.get("status") != "success":
            raise error_from_event(event)
        result = RefreshResult(**event["result"])
        skip_if_unchanged = parse_flag(self.skip_if_unchanged, "skip_if_unchanged")
        record = _FingerprintRecord(self.postgres_conn_id, self._parse_view()) if skip_if_unchanged else None
        return self._finish(context, result, event["namespace"], event["database"], record)

    def _finish(
        self, context: Context, result: RefreshResult, namespace: str, database: str, record: _FingerprintRecord | None
    ) -> dict[str, Any]:
        """What follows a successful refresh, wherever it ran: lineage, fingerprint, asset event, XCom."""
        self._lineage = _Lineage(namespace, database, result.view, result.sources)
        if record is not None:
            record.save(result.fingerprint)
        outcome = result.as_dict()
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

    def get_openlineage_facets_on_complete(self, task_instance: object) -> Any:
        """OpenLineage: the view is the output, the tables it reads are the inputs (when the provider is installed)."""
        if self._lineage is None:
            return None
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage

        namespace, database, view, sources = self._lineage

        def dataset(name: str) -> Dataset:
            return Dataset(namespace=namespace, name=f"{database}.{_unquoted(name)}")

        return OperatorLineage(inputs=[dataset(name) for name in sources], outputs=[dataset(view)])

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
        try:
            return parse_qualified_name(self.view)
        except InvalidIdentifierError as exc:
            raise MatviewSetupError(f"{exc} ({self.connection_label})") from None

    def _application_name(self, context: Context) -> str:
        ti = context.get("ti")
        if ti is None:
            return f"airflow-matview {self.task_id}"
        return f"airflow-matview {ti.dag_id}.{ti.task_id} try {ti.try_number}"


class _Flags(NamedTuple):
    skip_if_unchanged: bool
    concurrently: Concurrently
    with_data: bool
    analyze: bool
    deferrable: bool


class _Lineage(NamedTuple):
    namespace: str
    database: str
    view: str
    sources: list[str]


def _static_asset(conn_id: str, view: str) -> Asset | None:
    """The view's asset when its name and connection are known now (not templated) and schema-qualified."""
    if "{{" in f"{conn_id}{view}":
        return None
    try:
        name = parse_qualified_name(view)
    except InvalidIdentifierError:
        return None
    return matview_asset(conn_id, name) if name.schema is not None else None


def fingerprint_key(conn_id: str, view: QualifiedName) -> str:
    """The Airflow Variable holding ``view``'s change signals: ``airflow_matview.fingerprint.`` and the first 32 hex
    digits of the SHA-256 of the JSON ``[conn_id, schema, name]``, valid whatever characters the name holds."""
    digest = hashlib.sha256(json.dumps([conn_id, view.schema, view.name]).encode()).hexdigest()[:32]
    return f"{FINGERPRINT_PREFIX}{digest}"


class _FingerprintRecord:
    """The change signals recorded at the view's last successful refresh, in an Airflow Variable.

    The key is ``airflow_matview.fingerprint.`` and a hash of the connection id and the view's name, so it is valid
    whatever characters the name holds; the Variable's description names the view and the connection.
    """

    def __init__(self, conn_id: str, view: QualifiedName) -> None:
        self.key = fingerprint_key(conn_id, view)
        self.description = f"airflow-matview: change signals of {view} (connection {conn_id}) at its last refresh"

    def load(self) -> dict[str, Any] | None:
        stored = Variable.get(self.key, default=None)
        try:
            return json.loads(stored) if stored else None
        except ValueError:
            return None

    def save(self, fingerprint: dict[str, Any] | None) -> None:
        """Record ``fingerprint`` (``None``: forget the record). The refresh has committed: a failure here is logged,
        never raised, and the stale record is deleted if possible, so that no later run skips on it."""
        try:
            if fingerprint is not None:
                Variable.set(self.key, json.dumps(fingerprint), description=self.description)
                return
        except Exception as exc:
            log.warning(
                "The refresh succeeded, but its change signals could not be recorded in Variable %s (%s); the next "
                "run will refresh rather than skip.",
                self.key,
                exc,
            )
        try:
            Variable.delete(self.key)  # changes went unseen or were not recorded: a later run must not skip on it
        except Exception as exc:
            log.warning("Could not delete the outdated Variable %s (%s).", self.key, exc)


def _check_conn_id(conn_id: object, what: str) -> None:
    """Refuse a connection URI or DSN given as a connection id, without repeating it (it may hold a password)."""
    if isinstance(conn_id, str) and "{{" not in conn_id and any(mark in conn_id for mark in ("://", "=", "@")):
        raise MatviewSetupError(
            f"{what}: this looks like a connection URI or DSN (not repeated here, as it may hold a password). "
            "Create an Airflow connection with it and pass the connection's id."
        )


def _unquoted(name: str) -> str:
    parsed = parse_qualified_name(name)
    return f"{parsed.schema}.{parsed.name}"
