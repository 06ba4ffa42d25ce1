"""The DAG's documentation (``doc_md``), shown in the Airflow UI: what the DAG refreshes, when, and how."""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from airflow_matview.config.fields import timezone_note
from airflow_matview.factory.dst import dst_note
from airflow_matview.text import format_seconds

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import timedelta

    from airflow_matview.config import ViewConfig
    from airflow_matview.config.notifier_specs import NotifierSpec


def dag_doc(view: ViewConfig, asset_uri: str) -> str:
    """The Markdown doc of ``view``'s DAG.

    :param view: the view's settings.
    :param asset_uri: the asset its refresh updates.
    """
    return (
        f"Refreshes the materialized view `{view.view}` through the Airflow connection `{view.conn_id}`.\n\n"
        + (f"{view.description}\n\n" if view.description else "")
        + f"- schedule: {_schedule(view)}\n"
        + _refresh_line(view.concurrently, view.analyze, view.lock_timeout, view.skip_if_unchanged)
        + f"- emits the asset `{asset_uri}` after each successful refresh\n"
        + _retries_line(view.retries, view.retry_delay, view.execution_timeout)
        + "".join(f"{line}\n" for line in production_lines(view))
        + "\nTrigger with parameters to override `concurrently` or `analyze` for one run."
    )


# The lines that depend on settings alone are formatted once per distinct settings, not once per view.
@functools.lru_cache(maxsize=256)
def _refresh_line(
    concurrently: bool | str, analyze: bool, lock_timeout: timedelta | None, skip_if_unchanged: bool
) -> str:
    return (
        f"- concurrently: `{concurrently}`, analyze: `{analyze}`, lock timeout: `{lock_timeout}`, "
        f"skip if unchanged: `{skip_if_unchanged}`\n"
    )


@functools.lru_cache(maxsize=256)
def _retries_line(retries: int, retry_delay: timedelta, execution_timeout: timedelta | None) -> str:
    return f"- retries: {retries} every `{retry_delay}`; execution timeout: `{execution_timeout}`\n"


def _schedule(view: ViewConfig) -> str:
    schedule = f"`{view.schedule}`" if view.schedule else "manual runs only (trigger it from the UI)"
    if not (view.after or view.watched):
        return schedule
    events = [f"after each refresh of {', '.join(f'`{name}`' for name in view.upstream)}"] if view.after else []
    if view.target_lag is not None:
        events.append(
            f"when its sources change, early enough to stay within `target_lag` {view.target_lag} (polled every "
            f"{view.poll_interval})"
        )
    elif view.on_change:
        events.append(
            f"when its sources change (polled every {view.poll_interval}, at most one run per {view.min_interval})"
        )
    return " or ".join(events) + (f", and on `{view.schedule}`" if view.schedule else "")


def production_lines(view: ViewConfig) -> tuple[str, ...]:
    """Markdown bullet lines for the production keys (the same for every view that shares its settings: cached)."""
    return _production_lines(
        view.timezone,
        view.schedule,
        view.pool,
        view.pool_slots,
        view.queue,
        view.priority_weight,
        (_spec_paths(view.on_failure), _spec_paths(view.on_retry), _spec_paths(view.on_success)),
        None if view.max_staleness is None else view.max_staleness.total_seconds(),
        _spec_paths(view.stale_notifiers),
    )


def _spec_paths(specs: tuple[NotifierSpec, ...]) -> tuple[str, ...]:
    return tuple([spec.path for spec in specs]) if specs else ()


@functools.lru_cache(maxsize=256)
def _production_lines(
    zone: str,
    schedule: str | None,
    pool: str | None,
    pool_slots: int,
    queue: str | None,
    priority_weight: int,
    paths: tuple[tuple[str, ...], ...],
    max_staleness: float | None,
    stale_paths: tuple[str, ...],
) -> tuple[str, ...]:
    lines = _time_lines(zone, schedule)
    if pool:
        lines.append(
            f"- runs in the Airflow pool `{pool}` ({pool_slots} slot(s)); **the pool must exist** "
            f"(Admin -> Pools, or `airflow pools set {pool} 2 'refreshes'`), otherwise Airflow never starts "
            "the task; `airflow-matview check` reports a missing pool"
        )
    if queue or priority_weight != 1:
        lines.append(f"- queue: `{queue or 'default'}`, priority weight: {priority_weight}")
    for event, event_paths in zip(("failure", "retry", "success"), paths, strict=True):
        if event_paths:
            lines.append(f"- on {event}: {_paths(event_paths)}")
    if max_staleness is not None:
        lines.append(
            f"- max staleness: `{format_seconds(max_staleness)}` behind its sources (its lag, measured by the "
            f"triggerer whether or not a run exists), then: {_paths(stale_paths)}"
        )
    return tuple(lines)


def _time_lines(zone: str, schedule: str | None) -> list[str]:
    """The zone the cron is read in (with what to know about it), and what its clock changes do to the runs, as
    Airflow's timetable computes them for this year's changes."""
    note = timezone_note(zone)
    lines = [f"- cron times are {zone} local time" + (f": {note}" if note else "")]
    has_cron = schedule not in (None, "@once", "@continuous")
    if zone != "UTC" and has_cron and (clocks := dst_note(str(schedule), zone, datetime.now(timezone.utc).year)):
        lines.append(clocks)
    return lines


def _paths(paths: Iterable[str]) -> str:
    return ", ".join(f"`{path}`" for path in paths)
