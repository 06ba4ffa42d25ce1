"""Refresh without a worker: the trigger of a refresh task that starts in the triggerer (``start_from_trigger``).

Airflow 3.3's scheduler defers such a task before any worker sees it, with the arguments the operator gave
(:func:`start_trigger_args`), and the triggerer renders the task's templated arguments among them with the run's
context. The trigger then does what the operator does on a worker: it reads the rendered flags, loads the change
signals ``skip_if_unchanged`` compares with, refreshes on a connection of the triggerer's pool (the same steps as
everywhere: catalog checks, advisory lock, timeouts, ``client_connection_check_interval``) and, when the outcome
needs no worker, ends the task itself:

- a success: it records the change signals, calls the config's ``on_success`` notifiers, and ends the task with
  ``TaskSuccessEvent`` and the refresh's result as its XCom (Airflow registers no asset event then);
- a skip (``skip_if_unchanged``, ``on_overlap: skip``): ``TaskSkippedEvent``, as a skip on a worker emits no asset
  event either.

Otherwise it hands the outcome to a worker, which finishes exactly as a deferred refresh does
(``execute_complete``): every failure (so that retries, their classification, ``on_failure``/``on_retry`` callbacks
and emails are those of a worker), and a success that must register the task's asset event (``finish_on_worker``:
a DAG is scheduled on the view's asset), that has an ``on_success_callback`` the triggerer cannot call (one of
your own, or a configured notifier the triggerer cannot import: only the DAG processor and the workers have the
DAGs folder on their path; Airflow's plugins folder and installed packages are everywhere), or whose lineage
OpenLineage would report (only a worker's task runner emits it).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_matview.database.refresh_settings import RECORD_ONLY
from airflow_matview.exceptions import MatviewSetupError
from airflow_matview.refresh_task import (
    FLAGS,
    FingerprintRecord,
    RefreshRecord,
    application_name,
    check_conn_id,
    history_target,
    parse_view,
    read_flags,
)
from airflow_matview.triggers.deferred_refresh import TriggererRefresh

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow.sdk import BaseOperator
    from airflow.triggers.base import StartTriggerArgs, TriggerEvent

    from airflow_matview.database.identifiers import QualifiedName

CLASSPATH = "airflow_matview.triggers.started_refresh.StartedRefreshTrigger"
OPERATOR_CLASSPATH = "airflow_matview.operators.materialized_view.RefreshMaterializedViewOperator"


def start_trigger_args(operator: BaseOperator, finish_on_worker: bool) -> StartTriggerArgs:
    """What the scheduler starts the task with: this trigger, the operator's arguments (the templated ones as
    written: the triggerer renders them), and ``execute_complete`` for a worker to finish with.

    :param operator: a ``RefreshMaterializedViewOperator``.
    :param finish_on_worker: finish every success on a worker (for the task's asset event).
    """
    from airflow.triggers.base import StartTriggerArgs

    from airflow_matview.alerting.notify import TaskNotifier

    callbacks = operator.on_success_callback or []
    success: list[Any] = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
    lock_timeout, execution_timeout = operator.lock_timeout, operator.execution_timeout  # type: ignore[attr-defined]
    kwargs = {name: getattr(operator, name) for name in ("view", "postgres_conn_id", "on_overlap", *FLAGS[:4])}
    kwargs.update(
        lock_timeout=None if lock_timeout is None else lock_timeout.total_seconds(),
        execution_timeout=None if execution_timeout is None else execution_timeout.total_seconds(),
        finish_on_worker=finish_on_worker or any(not isinstance(call, TaskNotifier) for call in success),
        skip_on_worker=bool(operator.on_skipped_callback),
        notifiers=[call.spec.as_dict() for call in success if isinstance(call, TaskNotifier)],
        history=operator.history,  # type: ignore[attr-defined]
        history_retention=operator.history_retention_seconds,  # type: ignore[attr-defined]
    )
    if getattr(operator, "record_freshness", False):
        kwargs["record_freshness"] = True
    return StartTriggerArgs(trigger_cls=CLASSPATH, trigger_kwargs=kwargs, next_method="execute_complete")


class StartedRefreshTrigger(TriggererRefresh):
    """Run a refresh task that started in the triggerer, and end it there when nothing that follows needs a worker.

    The first six parameters are the operator's (the templated ones rendered by the triggerer).

    :param lock_timeout: seconds, or ``None``.
    :param execution_timeout: the task's, in seconds, or ``None``: the refresh's ``statement_timeout``.
    :param finish_on_worker: hand every success to a worker (for the task's asset event, or a callback of its own).
    :param skip_on_worker: hand a skip to a worker (the task has an ``on_skipped_callback``).
    :param notifiers: the config's ``on_success`` notifiers (:meth:`NotifierSpec.as_dict`), called here.
    :param history: the refresh history table, ``schema.table``, or ``None``.
    :param history_retention: its retention in seconds, or ``None``.
    """

    def __init__(
        self,
        view: str,
        postgres_conn_id: str,
        on_overlap: str = "wait",
        skip_if_unchanged: Any = False,
        concurrently: Any = "auto",
        with_data: Any = True,
        analyze: Any = False,
        lock_timeout: float | None = 60.0,
        execution_timeout: float | None = None,
        finish_on_worker: bool = False,
        skip_on_worker: bool = False,
        notifiers: list[dict[str, Any]] | None = None,
        record_freshness: bool = False,
        history: str | None = None,
        history_retention: float | None = None,
    ) -> None:
        super().__init__()
        self.view = view
        self.postgres_conn_id = postgres_conn_id
        self.on_overlap = on_overlap
        self.skip_if_unchanged = skip_if_unchanged
        self.concurrently = concurrently
        self.with_data = with_data
        self.analyze = analyze
        self.lock_timeout = lock_timeout
        self.execution_timeout = execution_timeout
        self.finish_on_worker = finish_on_worker
        self.skip_on_worker = skip_on_worker
        self.notifiers = list(notifiers or [])
        self.record_freshness = bool(record_freshness)
        self.history = history
        self.history_retention = history_retention

    def serialize(self) -> tuple[str, dict[str, Any]]:
        names = ("view", "postgres_conn_id", "on_overlap", *FLAGS[:4], "lock_timeout", "execution_timeout")
        return CLASSPATH, {
            **{name: getattr(self, name) for name in names},
            "finish_on_worker": self.finish_on_worker,
            "skip_on_worker": self.skip_on_worker,
            "notifiers": self.notifiers,
            **({"record_freshness": True} if self.record_freshness else {}),
            "history": self.history,
            "history_retention": self.history_retention,
        }

    @property
    def connection_label(self) -> str:
        return f"connection {self.postgres_conn_id!r}"

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow.triggers.base import TriggerEvent

        from airflow_matview.database.refresh_settings import RefreshSettings

        try:
            check_conn_id(self.postgres_conn_id, "postgres_conn_id (rendered)")
            view = parse_view(self.view, self.connection_label)
            flags = read_flags({name: getattr(self, name) for name in FLAGS[:4]}, view, self.connection_label)
        except MatviewSetupError as exc:
            yield TriggerEvent({"status": "error", "error": type(exc).__name__, "message": str(exc)})
            return
        # Loaded and saved from this coroutine, which the triggerer lets call the task SDK's synchronous API.
        record = FingerprintRecord(self.postgres_conn_id, view) if flags.skip_if_unchanged else None
        ti = self.task_instance
        settings = RefreshSettings(
            concurrently=flags.concurrently,
            with_data=flags.with_data,
            analyze=flags.analyze,
            lock_timeout=self.lock_timeout,
            statement_timeout=self._statement_timeout(),
            on_overlap=self.on_overlap,  # type: ignore[arg-type]
            application_name=application_name(ti, getattr(ti, "task_id", "refresh")),
            skip_if_unchanged=flags.skip_if_unchanged,
            previous_fingerprint=record.load() if record else None,
            read_signals=self.record_freshness,
            history=history_target(self.history, self.history_retention, self._context() if self.history else None),
        )
        outcome = await self.refresh_shielded(str(view), self.postgres_conn_id, settings)
        yield await self._end(outcome, view, record)

    def _statement_timeout(self) -> float | None:
        """The task's ``execution_timeout``, cut to what is left of it: Airflow counts it from when the scheduler
        deferred the task, so that the server's timeout, with its own message, comes first."""
        limit = self.execution_timeout
        deadline: datetime | None = getattr(self, "timeout_after", None)
        if deadline is not None:
            deadline = deadline if deadline.tzinfo else deadline.replace(tzinfo=timezone.utc)
            left = (deadline - datetime.now(timezone.utc)).total_seconds()
            limit = left if limit is None else min(limit, left)
        return None if limit is None else max(limit, 0.001)

    async def _end(self, outcome: dict[str, Any], view: QualifiedName, record: FingerprintRecord | None) -> Any:
        """The event that ends the task here, or the one that hands the outcome to a worker."""
        from airflow.triggers.base import TaskSkippedEvent, TaskSuccessEvent, TriggerEvent

        from airflow_matview import refresh_metrics

        if outcome["status"] != "success":
            if outcome.get("error") == "AirflowSkipException" and not self.skip_on_worker:
                self.log.info("%s", outcome["message"])
                refresh_metrics.skipped(self.postgres_conn_id, str(view))
                return TaskSkippedEvent()
            self.log.info("The refresh did not succeed: a worker fails the task, with its retries and callbacks.")
            return TriggerEvent(outcome)
        why_worker = self._why_worker()
        if why_worker is not None:
            self.log.info("Refreshed %s; a worker finishes the task (%s).", view, why_worker)
            return TriggerEvent(outcome)
        result = dict(outcome["result"])
        if record is not None:
            record.save(result.get("fingerprint"))
        if self.record_freshness:
            RefreshRecord(self.postgres_conn_id, view).save({key: result.get(key) for key in RECORD_ONLY})
        for key in RECORD_ONLY:
            result.pop(key, None)
        refresh_metrics.refreshed(self.postgres_conn_id, result)
        self.log.info(
            "Refreshed %s (%s) in %.3fs; about %s rows.",
            result["view"],
            result["mode"],
            result["seconds"],
            result["rows"],
        )
        await self._notify_success(str(view))
        return TaskSuccessEvent(xcoms={"return_value": result})

    def _why_worker(self) -> str | None:
        """Why a worker must finish this success, or ``None``."""
        if self.finish_on_worker:
            return "finish_on_worker"
        if _lineage_enabled():
            return "OpenLineage reports its lineage"
        from airflow_matview.config.notifier_specs import loaded_notifier

        for item in self.notifiers:
            try:
                loaded_notifier(item["notifier"])
            except Exception as exc:  # importable where the DAG is parsed (its folder), not here: a worker calls it
                return f"on_success notifier {item['notifier']} cannot be imported in the triggerer: {exc}"
        return None

    async def _notify_success(self, view: str) -> None:
        """The config's ``on_success`` notifiers, as a worker's task callbacks would call them: a failing one is
        logged, and neither stops the others nor fails the task."""
        if not self.notifiers:
            return
        from airflow_matview.alerting.notify import acall, describe
        from airflow_matview.config.notifier_specs import NotifierSpec

        context = self._context()
        context["matview"] = describe("success", view, self.postgres_conn_id, context)
        for item in self.notifiers:
            spec = NotifierSpec(item["notifier"], {key: value for key, value in item.items() if key != "notifier"})
            try:
                await acall(spec, context)
            except Exception:
                self.log.exception("on_success notifier %s failed for %s", spec.path, view)

    def _context(self) -> dict[str, Any]:
        ti = self.task_instance
        try:
            return dict(ti.get_template_context())  # type: ignore[union-attr]
        except Exception:  # a context without the run's details still says which view refreshed
            return {"ti": ti, "task_instance": ti}


def _lineage_enabled() -> bool:
    """Whether OpenLineage would report this operator's lineage (only a worker's task runner emits it)."""
    try:
        from airflow.providers.openlineage import conf
    except ImportError:
        return False
    return not conf.is_disabled() and OPERATOR_CLASSPATH not in conf.disabled_operators()
