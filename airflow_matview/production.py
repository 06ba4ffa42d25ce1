"""Production settings of a view's DAG and task: pool, pool_slots, priority_weight, queue, description, and how
they (with the timezone, notifiers and max_staleness) are summarised for ``airflow-matview validate``, the DAG's doc
and ``airflow-matview check``'s pool check."""

from __future__ import annotations

import functools
import re
from datetime import timedelta
from typing import TYPE_CHECKING

from airflow_matview.identifiers import control_character
from airflow_matview.settings import InvalidSettingError, parse_duration
from airflow_matview.staleness import check_supported, format_seconds

if TYPE_CHECKING:
    from collections.abc import Iterable

    from airflow_matview.config import ViewConfig, ViewSettings

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,256}")
_INT32 = 2**31 - 1


def parse_pool(value: object) -> str | None:
    """An Airflow pool name; ``None`` for Airflow's ``default_pool``."""
    return _name(value, "pool", "pg_main")


def parse_queue(value: object) -> str | None:
    """An executor queue name; ``None`` for the default queue."""
    return _name(value, "queue", "refreshes")


def _name(value: object, what: str, example: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and _NAME.fullmatch(value):
        return value
    raise ValueError(f"{_shown(value)} is not a {what} name; use up to 256 letters, digits, _ . and - (e.g. {example})")


def _shown(value: object) -> str:
    """``value`` as written, cut short when long: a message stays one readable line."""
    if isinstance(value, str) and len(value) > 40:
        return f"{value[:20]!r}... ({len(value)} characters)"
    return repr(value)


def parse_pool_slots(value: object) -> int:
    """How many slots of its pool the refresh takes: a whole number from 1, written ``2`` or ``"2"``."""
    number = _whole_number(value)
    if number is not None and 1 <= number <= _INT32:
        return number
    raise ValueError(f"{value!r} is not allowed; use a whole number of slots, 1 or more (default 1)")


def parse_priority_weight(value: object) -> int:
    """Airflow's priority_weight: a whole number, written ``5`` or ``"5"``; higher runs first when slots are short."""
    number = _whole_number(value)
    if number is not None and -_INT32 - 1 <= number <= _INT32:
        return number
    raise ValueError(f"{value!r} is not allowed; use a whole number (higher runs first when slots are short)")


def _whole_number(value: object) -> int | None:
    """The counts' typing rule (as for ``retries``): an int or its digits as text; never a bool or a fraction."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]{1,12}\s*", value):
        return int(value)
    return None


def parse_description(value: object) -> str | None:
    """Free text shown next to the DAG in the UI and in its doc; it may span lines."""
    if isinstance(value, str) and (char := control_character(re.sub(r"[\t\n\r]", " ", value))) is not None:
        raise ValueError(
            f"{value[:40]!r}{'...' if len(value) > 40 else ''} holds the control character {char!r}, which would "
            "garble the listings that show it; remove it (line breaks and tabs are fine)"
        )
    if value is None or (isinstance(value, str) and len(value) <= 1000):
        return value
    if isinstance(value, str):
        raise ValueError(f"is {len(value)} characters long; use at most 1000 (put more in a comment)")
    raise ValueError(f"{value!r} is not text; write the description as a string")


def parse_max_staleness(value: object) -> timedelta | None:
    """How long after a run was queued its refresh must have succeeded; ``None``: no staleness alert."""
    if value is None:
        return None
    try:
        duration = parse_duration(value, "max_staleness")
    except InvalidSettingError as error:
        raise ValueError(str(error)) from None
    if duration < timedelta(seconds=1):
        raise ValueError(
            f"{value!r} is under a second, sooner than any refresh can run; "
            "use a duration such as 20s, 30m or 1h, or null for no staleness alert"
        )
    check_supported()
    return parse_duration(value, "max_staleness", positive=True)


def view_problems(view: ViewConfig) -> list[str]:
    """Problems of a view's production settings once its defaults are merged in."""
    if view.max_staleness is not None and not view.stale_notifiers:
        return [
            "max_staleness: no notifier would be told when the view is stale; list them under on_stale "
            "(or on_failure, which on_stale defaults to)"
        ]
    return []


def unused_on_stale(defaults: ViewSettings, views: list[ViewConfig]) -> list[str]:
    """``on_stale`` notifiers that would never be called, since no ``max_staleness`` applies to them."""
    problems = []
    for index, view in enumerate(views):
        if view.on_stale and view.max_staleness is None and view.on_stale != defaults.on_stale:
            problems.append(
                f"views[{index}] ({view.name}): on_stale: is never called without max_staleness; "
                "set max_staleness (e.g. 2h) or remove on_stale"
            )
    if defaults.on_stale and all(view.max_staleness is None for view in views):
        problems.append(
            "defaults: on_stale: is never called, as no view has max_staleness; "
            "set max_staleness (e.g. 2h) or remove on_stale"
        )
    return problems


def summary(view: ViewConfig) -> str:
    """The non-default production settings in one short cell, for ``airflow-matview validate``."""
    parts = []
    if view.timezone != "UTC":
        parts.append(f"tz={view.timezone}")
    if view.pool:
        parts.append(f"pool={view.pool}" + (f"x{view.pool_slots}" if view.pool_slots != 1 else ""))
    elif view.pool_slots != 1:
        parts.append(f"slots={view.pool_slots}")
    if view.priority_weight != 1:
        parts.append(f"priority={view.priority_weight}")
    if view.queue:
        parts.append(f"queue={view.queue}")
    if view.max_staleness is not None:
        parts.append(f"stale>{format_seconds(view.max_staleness.total_seconds())}")
    alerts = [
        f"{event}:{len(specs)}"
        for event, specs in (
            ("failure", view.on_failure),
            ("retry", view.on_retry),
            ("success", view.on_success),
            ("stale", view.stale_notifiers if view.max_staleness is not None else ()),
        )
        if specs
    ]
    if alerts:
        parts.append("notify=" + ",".join(alerts))
    return " ".join(parts) or "-"


def doc_lines(view: ViewConfig) -> tuple[str, ...]:
    """Markdown bullet lines for the DAG's doc (the same for every view that shares its settings: cached)."""
    return _doc_lines(
        view.timezone,
        view.pool,
        view.pool_slots,
        view.queue,
        view.priority_weight,
        tuple(tuple(spec.path for spec in specs) for specs in (view.on_failure, view.on_retry, view.on_success)),
        None if view.max_staleness is None else view.max_staleness.total_seconds(),
        tuple(spec.path for spec in view.stale_notifiers),
    )


@functools.lru_cache(maxsize=256)
def _doc_lines(
    zone: str,
    pool: str | None,
    pool_slots: int,
    queue: str | None,
    priority_weight: int,
    paths: tuple[tuple[str, ...], ...],
    max_staleness: float | None,
    stale_paths: tuple[str, ...],
) -> tuple[str, ...]:
    lines = [f"- cron times are {zone} local time" + _dst_note(zone)]
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
            f"- max staleness: `{format_seconds(max_staleness)}` after a run is queued "
            f"(Deadline Alert, run by the triggerer), then: {_paths(stale_paths)}"
        )
    return tuple(lines)


def _dst_note(zone: str) -> str:
    if zone == "UTC":
        return ""
    return (
        " (a time skipped when clocks go forward runs later by the size of the jump, "
        "a time repeated when they go back runs once, at its second occurrence)"
    )


def _paths(paths: Iterable[str]) -> str:
    return ", ".join(f"`{path}`" for path in paths)


def missing_pools(views: Iterable[ViewConfig], existing: dict[str, int]) -> dict[str, str]:
    """Per DAG id, why its pool cannot run it: the pool is missing, or has fewer slots than the task takes.

    :param existing: Airflow's pools, name -> slots.
    """
    problems: dict[str, str] = {}
    for view in views:
        if view.pool is None:
            continue
        if view.pool not in existing:
            problems[view.resolved_dag_id] = (
                f"pool: {view.pool!r} does not exist in Airflow, which never starts a task whose pool is missing; "
                f"create it: airflow pools set {view.pool} 2 'matview refreshes' (or Admin -> Pools)"
            )
        elif 0 <= existing[view.pool] < view.pool_slots:
            problems[view.resolved_dag_id] = (
                f"pool: {view.pool!r} has {existing[view.pool]} slot(s), fewer than this view's pool_slots "
                f"({view.pool_slots}): the task can never start; add slots or lower pool_slots"
            )
    return problems


def airflow_pools() -> dict[str, int]:
    """Airflow's pools (name -> slots, -1 for unlimited), read from its metadata database (not at parse time).

    :raises RuntimeError: when the metadata database cannot be read.
    """
    try:
        from airflow.models.pool import Pool
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            return {str(name): int(slots) for name, slots in session.execute(select(Pool.pool, Pool.slots))}
    except Exception as error:
        first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise RuntimeError(f"cannot read Airflow's pools ({type(error).__name__}: {first_line})") from None
