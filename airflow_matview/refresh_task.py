"""What a refresh task does around the refresh itself, wherever it runs (on a worker, deferred to the triggerer, or
started there): its rendered arguments read as flags, its ``application_name``, and the change signals that
``skip_if_unchanged`` records in an Airflow Variable. Imported at DAG-parse time: no psycopg here."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_matview.config.fields import parse_concurrently, parse_flag
from airflow_matview.database.identifiers import parse_qualified_name
from airflow_matview.exceptions import InvalidIdentifierError, InvalidSettingError, MatviewSetupError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_matview.database.history import HistoryTarget
    from airflow_matview.database.identifiers import QualifiedName
    from airflow_matview.database.refresh_settings import Concurrently

FINGERPRINT_PREFIX = "airflow_matview.fingerprint."
#: The templated flags of a refresh task, in the order they are checked.
FLAGS = ("skip_if_unchanged", "concurrently", "with_data", "analyze", "deferrable")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskFlags:
    """A refresh task's flags once rendered and read."""

    skip_if_unchanged: bool
    concurrently: Concurrently
    with_data: bool
    analyze: bool
    deferrable: bool


def read_flags(values: Mapping[str, object], view: QualifiedName, connection_label: str) -> TaskFlags:
    """The rendered values of :data:`FLAGS` (a missing one is false), read as the config file reads them.

    :raises MatviewSetupError: one is not a flag (or, for ``concurrently``, ``auto``), naming it.
    """
    parsed: dict[str, Any] = {}
    for key in FLAGS:
        value = values.get(key, False)
        try:
            parsed[key] = parse_concurrently(value) if key == "concurrently" else parse_flag(value, key)
        except InvalidSettingError as exc:
            raise MatviewSetupError(
                f"Cannot refresh {view} ({connection_label}): {key}: {exc}. Check the DAG's params or the values "
                "passed to the operator."
            ) from None
    return TaskFlags(**parsed)


def check_conn_id(conn_id: object, what: str) -> None:
    """Refuse a connection URI or DSN given as a connection id, without repeating it (it may hold a password)."""
    if isinstance(conn_id, str) and "{{" not in conn_id and any(mark in conn_id for mark in ("://", "=", "@")):
        raise MatviewSetupError(
            f"{what}: this looks like a connection URI or DSN (not repeated here, as it may hold a password). "
            "Create an Airflow connection with it and pass the connection's id."
        )


def parse_view(view: str, connection_label: str) -> QualifiedName:
    """The rendered view name, or a :class:`MatviewSetupError` naming the connection."""
    try:
        return parse_qualified_name(view)
    except InvalidIdentifierError as exc:
        raise MatviewSetupError(f"{exc} ({connection_label})") from None


def application_name(ti: Any, task_id: str) -> str:
    """How the refresh's session shows in ``pg_stat_activity``: the DAG, the task and the try."""
    if ti is None:
        return f"airflow-matview {task_id}"
    return f"airflow-matview {ti.dag_id}.{ti.task_id} try {ti.try_number}"


def fingerprint_key(conn_id: str, view: QualifiedName) -> str:
    """The Airflow Variable holding ``view``'s change signals: ``airflow_matview.fingerprint.`` and the first 32 hex
    digits of the SHA-256 of the JSON ``[conn_id, schema, name]``, valid whatever characters the name holds."""
    digest = hashlib.sha256(json.dumps([conn_id, view.schema, view.name]).encode()).hexdigest()[:32]
    return f"{FINGERPRINT_PREFIX}{digest}"


FRESHNESS_PREFIX = "airflow_matview.freshness."


class RefreshRecord:
    """What the view's last successful refresh reflects, for its lag (``target_lag``): the change signals it read,
    when it read them and when it committed, in an Airflow Variable the triggerer's measurement reads.

    The key is ``airflow_matview.freshness.`` and the same hash as :func:`fingerprint_key`.
    """

    def __init__(self, conn_id: str, view: QualifiedName) -> None:
        self.key = FRESHNESS_PREFIX + fingerprint_key(conn_id, view).removeprefix(FINGERPRINT_PREFIX)
        self.description = f"airflow-matview: what the last refresh of {view} (connection {conn_id}) reflects"

    def load(self) -> dict[str, Any] | None:
        """The record, or ``None`` when there is none or it cannot be read."""
        from airflow.sdk import Variable

        try:
            stored = Variable.get(self.key, default=None)
            record = json.loads(stored) if stored else None
        except Exception as exc:  # the measurement goes on without it: a lag too high, never too low
            log.warning("Cannot read Variable %s (%s).", self.key, exc)
            return None
        return record if isinstance(record, dict) else None

    def save(self, records: dict[str, Any]) -> None:
        """Record a committed refresh (:meth:`RefreshResult.records`); a failure is logged, never raised: the lag
        then stays counted from the changes this refresh covered (too high, never too low)."""
        from airflow.sdk import Variable

        try:
            Variable.set(self.key, json.dumps(records), description=self.description)
        except Exception as exc:
            log.warning("The refresh succeeded, but Variable %s could not be written (%s).", self.key, exc)

    def save_failure(self, error: str, at: float) -> None:
        """Add to the record that a refresh failed at ``at`` (epoch seconds) with ``error`` (one line), for the reason
        a lag alert gives; the next success replaces it. A failure to write is logged, never raised."""
        from airflow.sdk import Variable

        record = self.load() or {}
        record["failed_at"], record["error"] = at, error[:500]
        try:
            Variable.set(self.key, json.dumps(record), description=self.description)
        except Exception as exc:
            log.warning("Variable %s could not be written (%s).", self.key, exc)


class FingerprintRecord:
    """The change signals recorded at the view's last successful refresh, in an Airflow Variable.

    The key is ``airflow_matview.fingerprint.`` and a hash of the connection id and the view's name, so it is valid
    whatever characters the name holds; the Variable's description names the view and the connection.
    """

    def __init__(self, conn_id: str, view: QualifiedName) -> None:
        self.key = fingerprint_key(conn_id, view)
        self.description = f"airflow-matview: change signals of {view} (connection {conn_id}) at its last refresh"

    def load(self) -> dict[str, Any] | None:
        from airflow.sdk import Variable

        stored = Variable.get(self.key, default=None)
        try:
            return json.loads(stored) if stored else None
        except ValueError:
            return None

    def save(self, fingerprint: dict[str, Any] | None) -> None:
        """Record ``fingerprint`` (``None``: forget the record). The refresh has committed: a failure here is logged,
        never raised, and the stale record is deleted if possible, so that no later run skips on it."""
        from airflow.sdk import Variable

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


# The asset schemes of airflow_matview.assets (a layer above this module; a unit test keeps them equal).
SOURCES_URI_PREFIX = "matview-sources://"
VIEW_URI_PREFIX = "matview://"
# Airflow's DAG run types, as the history's started_by says them (any other is kept as Airflow names it).
_RUN_TYPES = {"scheduled": "schedule", "manual": "manual", "backfill": "manual", "operator_triggered": "manual"}


def started_by(context: Mapping[str, Any] | None) -> str | None:
    """What started the refresh, for its history row: ``schedule``, ``manual``, ``on_change`` (a change of its
    sources), ``chain`` (a refresh of a view it is built on, ``after:``), ``asset`` (another asset), or Airflow's run
    type; ``None`` outside a DAG run.

    :param context: the task's context (``dag_run``, ``triggering_asset_events``).
    """
    dag_run = (context or {}).get("dag_run")
    if dag_run is None:
        return None
    run_type = str(getattr(getattr(dag_run, "run_type", None), "value", getattr(dag_run, "run_type", None)))
    if run_type != "asset_triggered":
        return _RUN_TYPES.get(run_type, run_type)
    uris = _triggering_uris(context or {}) or _schedule_uris(context or {})
    if any(uri.startswith(SOURCES_URI_PREFIX) for uri in uris):
        return "on_change"
    if any(uri.startswith(VIEW_URI_PREFIX) for uri in uris):
        return "chain"
    return "asset"


def _triggering_uris(context: Mapping[str, Any]) -> list[str]:
    """The URIs of the asset events that started the run, as a worker's context has them."""
    try:
        return [str(getattr(asset, "uri", "")) for asset in context.get("triggering_asset_events") or {}]
    except Exception:  # the run's asset events could not be read: it was still started by an asset
        return []


def _schedule_uris(context: Mapping[str, Any]) -> list[str]:
    """The URIs of the assets the DAG is scheduled on, when they are all of one kind (``after:`` views, or the
    ``on_change`` watcher): what started an asset-triggered run where its events are not in the context (a task
    started in the triggerer)."""
    try:
        uris = sorted(set(_asset_uris(context["dag"].timetable.asset_condition)))
    except Exception:  # no DAG or no asset schedule in this context
        return []
    kinds = {uri.startswith(SOURCES_URI_PREFIX) for uri in uris}
    return uris if len(kinds) == 1 else []


def _asset_uris(condition: Any) -> list[str]:
    """The asset URIs of a schedule's asset condition: the task SDK's (``objects``) or a deserialized DAG's
    (``iter_assets()``)."""
    if hasattr(condition, "iter_assets"):
        return [str(asset.uri) for _, asset in condition.iter_assets()]
    if hasattr(condition, "objects"):
        return [uri for part in condition.objects for uri in _asset_uris(part)]
    return [str(condition.uri)] if hasattr(condition, "uri") else []


def history_target(
    table: str | None, retention_seconds: float | None, context: Mapping[str, Any] | None
) -> HistoryTarget | None:
    """Where the refresh records its history row, with the run that started it; ``None`` without ``table``.

    :param table: the ``history`` table, ``schema.table``.
    :param retention_seconds: ``history_retention`` in seconds.
    :param context: the task's context.
    """
    from airflow_matview.database.history import HistoryTarget

    if table is None:
        return None
    ti = (context or {}).get("ti")
    try_number = getattr(ti, "try_number", None)
    return HistoryTarget(
        table=table,
        retention_seconds=retention_seconds,
        started_by=started_by(context),
        dag_id=getattr(ti, "dag_id", None),
        run_id=getattr(ti, "run_id", None),
        try_number=None if try_number is None else int(try_number),
    )
