"""The config's rules for the file as a whole: each view listed once, distinct DAG ids, ``after:`` naming listed
views, no cycle, no ``on_stale`` that nothing calls. (The rules of one view's keys together are its model's.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_matview.config.model import MatviewConfig, ViewConfig, ViewSettings
    from airflow_matview.database.identifiers import QualifiedName


def file_problems(config: MatviewConfig) -> list[str]:
    """What is wrong with the views taken together, one line each naming the view."""
    problems = _listed_twice(config) + _unknown_upstream(config)
    problems += _unused_on_stale(config.defaults, config.views)
    if not problems and (cycle := _find_cycle(config)):
        problems.append(f"after: views wait for each other in a cycle: {' -> '.join(cycle)}; remove one 'after:'")
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
