"""Build one scheduled Airflow DAG per materialized view listed in a config file.

Building touches no database, network, Airflow connection or Variable, so a DAG file that calls
:func:`build_dags` parses in milliseconds. When Airflow runs a task it sets the parsing context, and only
that task's DAG is built.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, Asset, AssetAny, Param, get_parsing_context

from airflow_matview.alerting.notify import callbacks
from airflow_matview.assets import matview_asset, sources_asset
from airflow_matview.config import MatviewConfig, ViewConfig, load_config
from airflow_matview.config.rules import Claim, claimed_elsewhere
from airflow_matview.database.identifiers import printable
from airflow_matview.exceptions import InvalidConfigFileError
from airflow_matview.factory.dag_doc import dag_doc
from airflow_matview.factory.monitor import MONITOR_PREFIX, build_monitors, measured_keys
from airflow_matview.operators.materialized_view import RefreshMaterializedViewOperator
from airflow_matview.version_compat import AssetOrTimeSchedule, CronTriggerTimetable

if TYPE_CHECKING:
    from types import FrameType

    from airflow.sdk.definitions.asset import BaseAsset

START_DATE = datetime(2024, 1, 1, tzinfo=timezone.utc)
# The trigger form's `concurrently`: a text field suggesting each choice once. Not a select: its choices are the
# schema's enum, which would list true and false twice, as text (what the form sends) and as the JSON booleans the
# REST API and `airflow dags trigger -c` may send. The schema takes the three texts and the two booleans; anything
# else is refused when the run is triggered.
CONCURRENTLY_CHOICES = ["auto", "true", "false"]
CONCURRENTLY_PATTERN = "^(auto|true|false)$"


def build_dags(config: str | Path | Mapping[str, Any]) -> dict[str, DAG]:
    """One DAG per configured view, keyed by DAG id.

    :param config: the path of a YAML config file, or the config as a mapping.
    :raises MatviewConfigError: when the config is invalid; no DAG is built then.
    """
    loaded = load_config(config)
    _claim(loaded, config)
    views = loaded.views
    followed = {key for view in views for key in view.upstream_keys}
    measured = measured_keys(views)
    wanted = get_parsing_context().dag_id
    if wanted is not None and wanted.startswith(MONITOR_PREFIX):
        return {dag_id: dag for dag_id, dag in build_monitors(views).items() if dag_id == wanted}
    if wanted is not None and any(view.resolved_dag_id == wanted for view in views):
        views = [view for view in views if view.resolved_dag_id == wanted]
    dags = {
        view.resolved_dag_id: build_dag(
            view,
            [matview_asset(conn_id, name) for conn_id, name in view.upstream_keys],
            view.key in followed,
            measured=view.key in measured,
        )
        for view in views
    }
    if wanted is None or len(views) == len(loaded.views):
        dags.update(build_monitors(loaded.views))
    return dags


def _claim(config: MatviewConfig, source: str | Path | Mapping[str, Any]) -> None:
    """Refuse views and DAG ids that another config built in this parse session: the DagBag that is importing the
    DAG file (``airflow dags list``, ``airflow dags test``, a test), one set of claims per DagBag.

    The dag-processor parses each DAG file in a process of its own: there the other file is never seen.

    :raises InvalidConfigFileError: naming both configs and both DAG files.
    """
    bag, dag_file = _parse_session()
    if bag is None:
        return
    where = "a mapping" if isinstance(source, Mapping) else str(Path(source).resolve())
    label = "<dict>" if isinstance(source, Mapping) else printable(str(source))
    claims = _CLAIMS.setdefault(bag, {})
    if problems := claimed_elsewhere(config, f"{where} by the DAG file {dag_file}", claims):
        raise InvalidConfigFileError(label, problems)


# Per DagBag being filled (held weakly: gone with it), the views and DAG ids built so far.
_CLAIMS: weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], Claim]] = weakref.WeakKeyDictionary()


def _parse_session() -> tuple[Any, str]:
    """The DagBag importing the DAG file that called :func:`build_dags` (``None`` outside one), and that file."""
    frame: FrameType | None = sys._getframe(1)
    package = str(Path(__file__).resolve().parent.parent)
    dag_file, bag = "", None
    while frame is not None and bag is None:
        if not dag_file and not str(Path(frame.f_code.co_filename).resolve()).startswith(package):
            dag_file = frame.f_code.co_filename
        candidate = frame.f_locals.get("self")
        if any(cls.__name__ == "DagBag" for cls in type(candidate).__mro__):  # BundleDagBag too
            bag = candidate
        frame = frame.f_back
    return bag, dag_file


def build_dag(
    view: ViewConfig, upstream: list[Asset] | None = None, followed: bool = False, *, measured: bool | None = None
) -> DAG:
    """The DAG that refreshes one view: task ``refresh``, no catch-up, one run at a time.

    :param view: the view's settings.
    :param upstream: the assets of the views named in its ``after:``.
    :param followed: another view of the config names it in ``after:``: with ``start_from_trigger``, a worker
        finishes its successful refreshes, so that Airflow registers the asset event that view waits for.
    :param measured: the lag monitor measures the view (:func:`~airflow_matview.factory.monitor.measured_keys`): its
        refreshes record what they reflect. ``None``: when it has a ``target_lag`` or a ``max_staleness``.
    """
    concurrently = "auto" if view.concurrently == "auto" else str(view.concurrently).lower()
    asset = matview_asset(view.conn_id, view.view)
    dag = DAG(
        dag_id=view.resolved_dag_id,
        schedule=_schedule(view, upstream or []),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=sorted({"matview", *view.tags}),
        doc_md=dag_doc(view, asset.uri),
        description=view.description,
        default_args={
            "owner": view.owner,
            "retries": view.retries,
            "retry_delay": view.retry_delay,
            "retry_exponential_backoff": view.retry_exponential_backoff,
            "execution_timeout": view.execution_timeout,
        },
    )
    RefreshMaterializedViewOperator(
        task_id="refresh",
        dag=dag,
        view=view.name,
        postgres_conn_id=view.conn_id,
        concurrently="{{ params.concurrently }}",
        analyze="{{ params.analyze }}",
        lock_timeout=view.lock_timeout,
        on_overlap=view.on_overlap,
        skip_if_unchanged=view.skip_if_unchanged,
        deferrable=view.deferrable,
        start_from_trigger=view.start_from_trigger,
        finish_on_worker=view.finish_on_worker or followed,
        record_freshness=measured if measured is not None else bool(view.target_lag or view.max_staleness),
        history=view.history,
        history_retention=view.history_retention,
        outlets=[asset],
        **_task_placement(view),
    )
    # The trigger form's params, added last rather than as DAG(params=...): DAG() validates each Param's JSON
    # schema and every task deep-copies the DAG's params, which took most of the parse time of a large config.
    # These two are valid by construction, and at run time Airflow merges the DAG's params with the task's.
    dag.params.update(
        {
            "concurrently": Param(
                concurrently,
                type=["string", "boolean"],
                examples=CONCURRENTLY_CHOICES,
                pattern=CONCURRENTLY_PATTERN,
                description="auto: CONCURRENTLY when the view allows it; true: require it; false: plain refresh.",
            ),
            "analyze": Param(view.analyze, type="boolean", description="Run ANALYZE on the view afterwards."),
        }
    )
    return dag


def _schedule(
    view: ViewConfig, upstream: list[Asset]
) -> str | BaseAsset | CronTriggerTimetable | AssetOrTimeSchedule | None:
    """The cron or preset (in the view's timezone); with ``after:``, a refresh of any upstream view; with
    ``on_change`` or ``target_lag``, a change of its sources; or any of these."""
    if view.watched:
        upstream = [*upstream, sources_asset(view.conn_id, view.view, view)]
    if not upstream:
        if view.timezone == "UTC" or view.schedule in (None, "@once", "@continuous"):
            return view.schedule
        return CronTriggerTimetable(view.schedule, timezone=view.timezone)
    condition = AssetAny(*upstream)
    if view.schedule is None:
        return condition
    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(view.schedule, timezone=view.timezone), assets=condition)


def _task_placement(view: ViewConfig) -> dict[str, Any]:
    """Pool, queue, priority and notifier callbacks of the refresh task; Airflow's defaults where not configured."""
    kwargs: dict[str, Any] = {"pool_slots": view.pool_slots, "priority_weight": view.priority_weight}
    if view.pool:
        kwargs["pool"] = view.pool
    if view.queue:
        kwargs["queue"] = view.queue
    for event in ("failure", "retry", "success"):
        specs = getattr(view, f"on_{event}")
        if specs:
            kwargs[f"on_{event}_callback"] = callbacks(event, specs, str(view.view), view.conn_id)
    return kwargs
