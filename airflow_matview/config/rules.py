"""The config's rules for the file as a whole: each view listed once, distinct DAG ids, ``after:`` naming listed
views, no cycle, no ``on_stale`` that nothing calls, notifier templates that render. (The rules of one view's keys
together are its model's.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_matview.config.notifier_templates import template_problems

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_matview.config.model import MatviewConfig, ViewConfig, ViewSettings
    from airflow_matview.database.identifiers import QualifiedName


def file_problems(config: MatviewConfig, folder: Path | None = None) -> list[str]:
    """What is wrong with the views taken together, one line each naming the view.

    :param config: the validated config.
    :param folder: the config file's folder (``None`` for a mapping), where notifier templates include files from.
    """
    problems = _listed_twice(config) + _unknown_upstream(config)
    problems += _unused_on_stale(config.defaults, config.views) + _unused_watch_settings(config.defaults, config.views)
    if not problems and (cycle := _find_cycle(config)):
        problems.append(f"after: views wait for each other in a cycle: {' -> '.join(cycle)}; remove one 'after:'")
    return problems + template_problems(config, folder)


@dataclass(frozen=True)
class Claim:
    """Where a view or a DAG id was first built from: ``source`` (a config file, with the DAG file that loaded it),
    its position ``views[index]`` there, and the view's name."""

    source: str
    index: int
    name: str


def claimed_elsewhere(config: MatviewConfig, source: str, claims: dict[tuple[str, ...], Claim]) -> list[str]:
    """One line per view of ``config`` whose view (connection and name) or DAG id another source already built,
    naming that source; ``config``'s own views are claimed in ``claims`` for the next one.

    :param config: the validated config.
    :param source: where it comes from, as the lines name it.
    :param claims: what earlier configs built, by ``("view", conn_id, view)`` and ``("dag_id", dag_id)``.
    """
    problems = []
    mine: dict[tuple[str, ...], Claim] = {}
    for index, view in enumerate(config.views):
        view_key, dag_key = ("view", view.conn_id, str(view.view)), ("dag_id", view.resolved_dag_id)
        if (other := claims.get(view_key)) and other.source != source:
            problems.append(
                f"views[{index}] ({view.name}): the view {view.view} on connection {view.conn_id!r} (DAG id "
                f"{view.resolved_dag_id!r}) is also built from {other.source} (views[{other.index}]); Airflow would "
                "keep one DAG and switch between the two at every parse: list each view in one config only"
            )
        elif (other := claims.get(dag_key)) and other.source != source:
            problems.append(
                f"views[{index}] ({view.name}): DAG id {view.resolved_dag_id!r} is also the DAG id of {other.name}, "
                f"built from {other.source} (views[{other.index}]); give one of them another dag_id"
            )
        mine[view_key] = mine[dag_key] = Claim(source, index, view.name)
    if not problems:
        for key in [key for key, claim in claims.items() if claim.source == source]:
            del claims[key]  # what an earlier version of this source built
        claims.update(mine)
    return problems


def _listed_twice(config: MatviewConfig) -> list[str]:
    problems: list[str] = []
    by_view: dict[tuple[str, QualifiedName], int] = {}
    by_dag_id: dict[str, int] = {}
    for index, view in enumerate(config.views):
        label = f"views[{index}] ({view.name})"
        if (first := by_view.setdefault(view.key, index)) != index:
            problems.append(
                f"{label}: name: {view.view} on connection {view.conn_id!r} is listed twice (also views[{first}]); "
                "list each view once"
            )
        dag_id = view.resolved_dag_id
        if (first := by_dag_id.setdefault(dag_id, index)) != index and config.views[first].key != view.key:
            problems.append(
                f"{label}: dag_id: DAG id {dag_id!r} is also the DAG id of views[{first}] "
                f"({config.views[first].name}); set a distinct dag_id on one of them"
            )
    return problems


def _unknown_upstream(config: MatviewConfig) -> list[str]:
    listed = {view.key for view in config.views}
    return [
        f"views[{index}] ({view.name}): after: {upstream} is not a view in this file on connection "
        f"{view.conn_id!r}; after: may only name views listed under 'views:' with the same conn_id"
        for index, view in enumerate(config.views)
        for upstream in view.upstream
        if (view.conn_id, upstream) not in listed
    ]


def _unused_on_stale(defaults: ViewSettings, views: list[ViewConfig]) -> list[str]:
    """``on_stale`` notifiers that would never be called, since no ``max_staleness`` or ``target_lag`` applies to
    them."""
    problems = []
    for index, view in enumerate(views):
        if view.on_stale and not _alerts_on_lag(view) and view.on_stale != defaults.on_stale:
            problems.append(
                f"views[{index}] ({view.name}): on_stale: is never called without max_staleness or target_lag; "
                "set max_staleness (e.g. 2h) or target_lag, or remove on_stale"
            )
    if defaults.on_stale and not any(_alerts_on_lag(view) for view in views):
        problems.append(
            "defaults: on_stale: is never called, as no view has max_staleness or target_lag; "
            "set max_staleness (e.g. 2h) or target_lag, or remove on_stale"
        )
    return problems


def _alerts_on_lag(view: ViewConfig) -> bool:
    return view.max_staleness is not None or view.target_lag is not None


_WATCH_SETTINGS = ("min_interval", "poll_interval")


def _unused_watch_settings(defaults: ViewSettings, views: list[ViewConfig]) -> list[str]:
    """``poll_interval`` and ``min_interval`` where nothing watches: on a view without ``on_change`` or
    ``target_lag`` (``poll_interval``: nor ``max_staleness``, whose lag monitor polls at it), or in ``defaults:`` when
    no view uses it (defaults apply to every view: views that do not watch ignore them)."""
    problems = []
    in_defaults = [key for key in _WATCH_SETTINGS if key in defaults.model_fields_set]
    for index, view in enumerate(views):
        own = [key for key in _WATCH_SETTINGS if key in view.model_fields_set and key not in in_defaults]
        own += [key for key in in_defaults if getattr(view, key) != getattr(defaults, key)]
        problems += [
            f"views[{index}] ({view.name}): {key}: is only used with on_change: true, which this view does not set; "
            f"set on_change: true or remove {key}"
            for key in sorted(own)
            if not _uses(view, key)
        ]
    in_defaults = [key for key in in_defaults if not any(_uses(view, key) for view in views)]
    if in_defaults:
        problems.append(
            f"defaults: {', '.join(in_defaults)}: no view has on_change: true, so "
            f"{'they are' if len(in_defaults) > 1 else 'it is'} never used; set on_change on the views to watch, "
            f"or remove {'them' if len(in_defaults) > 1 else 'it'}"
        )
    return problems


def _uses(view: ViewConfig, key: str) -> bool:
    """Whether ``view`` uses the watch setting ``key``: its watcher does; the lag monitor polls a ``max_staleness``
    view's sources every ``poll_interval`` (:func:`airflow_matview.factory.monitor.build_monitors`)."""
    return view.watched or (key == "poll_interval" and view.max_staleness is not None)


def _find_cycle(config: MatviewConfig) -> list[str] | None:
    if not any(view.after for view in config.views):
        return None
    from graphlib import CycleError, TopologicalSorter

    graph = {view.key: view.upstream_keys for view in config.views}
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        return [str(name) for _, name in reversed(exc.args[1])]
    return None
