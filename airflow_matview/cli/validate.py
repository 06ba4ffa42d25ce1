"""``airflow-matview validate``: read config files without a database and list the DAGs they make."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from airflow_matview.cli.output import EXIT_OK, EXIT_PROBLEMS, fail, print_table
from airflow_matview.config import InvalidConfigFileError, load_config
from airflow_matview.config.fields import timezone_note
from airflow_matview.config.rules import Claim, claimed_elsewhere
from airflow_matview.database.identifiers import printable
from airflow_matview.freshness import DEFAULT_FIRE_TO_COMMIT_SECONDS, refresh_lead, unwatched_period
from airflow_matview.text import cell, format_seconds

if TYPE_CHECKING:
    from airflow_matview.config import ViewConfig

# The widest description `validate` shows; a longer one ends with an ellipsis.
DESCRIPTION_WIDTH = 40


def run_validate(paths: list[str], secrets: list[str]) -> int:
    """Validate each config file and list its DAGs; a view or DAG id that two of the files build is a problem of the
    later one (two DAG files loading them would make Airflow switch one DAG between them at every parse).

    :param paths: the config files.
    :param secrets: what must not be printed (see :func:`airflow_matview.cli.output.fail`).
    """
    claims: dict[tuple[str, ...], Claim] = {}
    failed = 0
    for path in paths:
        try:
            config = load_config(path)
            if problems := claimed_elsewhere(config, str(Path(path).resolve()), claims):
                raise InvalidConfigFileError(printable(path), problems)
        except InvalidConfigFileError as error:
            fail(str(error), secrets)
            failed += 1
            continue
        _list(path, config.views)
    return EXIT_PROBLEMS if failed else EXIT_OK


def _list(path: str, views: list[ViewConfig]) -> None:
    """The file's DAGs as a table, then notes on its time zones."""
    print(f"{path}: OK, {len(views)} DAG(s)")
    header = ["DAG ID", "VIEW", "SCHEDULE", "CONNECTION", "SETTINGS"]
    rows = [[v.resolved_dag_id, str(v.view), schedule_text(v), v.conn_id, settings_summary(v)] for v in views]
    if any(view.description for view in views):  # the last column, only when some view has one
        header.append("DESCRIPTION")
        for row, view in zip(rows, views, strict=True):
            row.append(cell(view.description or "-", DESCRIPTION_WIDTH))
    print_table(header, rows)
    for line in [*timezone_notes(views), *monitor_notes(views), *target_lag_notes(views)]:
        print(line)


def monitor_notes(views: list[ViewConfig]) -> list[str]:
    """The lag monitor's DAG of each connection with ``target_lag`` or ``max_staleness`` views: a DAG of the file
    beyond the table's."""
    connections = list(
        dict.fromkeys(view.conn_id for view in views if view.target_lag is not None or view.max_staleness is not None)
    )
    if not connections:
        return []
    from airflow_matview.factory.monitor import monitor_dag_id

    return [
        f"note: and the DAG {monitor_dag_id(conn_id)}: the lag monitor of the target_lag and max_staleness views "
        f"on connection "
        f"{conn_id!r} (it never runs; created unpaused, it measures their lag and tells their on_stale notifiers)"
        for conn_id in connections
    ]


def target_lag_notes(views: list[ViewConfig]) -> list[str]:
    """How each view with a ``target_lag`` is refreshed, watchable or not (only ``check`` can tell which)."""
    notes = []
    for index, view in enumerate(views):
        if view.target_lag is None:
            continue
        target, poll = view.target_lag.total_seconds(), view.poll_interval.total_seconds()
        floor = view.watch_min_interval.total_seconds()
        lead = refresh_lead(target, poll, DEFAULT_FIRE_TO_COMMIT_SECONDS)
        period = unwatched_period(target, poll, floor, DEFAULT_FIRE_TO_COMMIT_SECONDS)
        notes.append(
            f"note: views[{index}] ({view.name}): target_lag {format_seconds(target)}: refreshed when its sources "
            f"change, once the changes have waited up to {format_seconds(lead)} (less once a refresh is measured), "
            f"never while nothing changes; if its sources cannot be watched (`airflow-matview check` tells), every "
            f"{format_seconds(period)} instead"
        )
    return notes


def timezone_notes(views: list[ViewConfig]) -> list[str]:
    """One note per time zone that is valid but easily misread (``Etc/GMT+2`` is UTC-2), naming its first view."""
    notes = []
    users: dict[str, list[int]] = {}
    for index, view in enumerate(views):
        users.setdefault(view.timezone, []).append(index)
    for zone, indexes in users.items():
        if note := timezone_note(zone):
            first = indexes[0]
            others = f" and {len(indexes) - 1} other view(s)" if len(indexes) > 1 else ""
            notes.append(f"note: views[{first}] ({views[first].name}){others}: timezone: {note}")
    return notes


def schedule_text(view: ViewConfig) -> str:
    """What starts the view's DAG: ``after public.a + on change + 0 3 * * *``, or ``(manual)``."""
    parts = [
        "after " + ", ".join(str(name) for name in view.upstream) if view.after else None,
        "on change" if view.on_change else None,
        f"target lag {format_seconds(view.target_lag.total_seconds())}" if view.target_lag is not None else None,
        view.schedule,
    ]
    return " + ".join(part for part in parts if part) or "(manual)"


def settings_summary(view: ViewConfig) -> str:
    """The non-default production settings in one short cell, for ``airflow-matview validate``."""
    parts = []
    if view.timezone != "UTC":
        parts.append(f"tz={view.timezone}")
    if view.pool:
        parts.append(f"pool={view.pool}")
    if view.pool_slots != 1:
        parts.append(f"slots={view.pool_slots}")
    if view.priority_weight != 1:
        parts.append(f"priority={view.priority_weight}")
    if view.queue:
        parts.append(f"queue={view.queue}")
    if view.max_staleness is not None:
        parts.append(f"stale>{format_seconds(view.max_staleness.total_seconds())}")
    if view.start_from_trigger:
        parts.append("start_from_trigger" + ("+finish_on_worker" if view.finish_on_worker else ""))
    alerts = [
        f"{event}:{len(specs)}"
        for event, specs in (
            ("failure", view.on_failure),
            ("retry", view.on_retry),
            ("success", view.on_success),
            ("stale", view.stale_notifiers if view.max_staleness is not None or view.target_lag is not None else ()),
        )
        if specs
    ]
    if alerts:
        parts.append("notify=" + ",".join(alerts))
    return " ".join(parts) or "-"
