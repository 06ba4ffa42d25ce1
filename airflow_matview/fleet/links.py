"""Links from a view's row of the fleet overview to where its metrics and its lineage are shown, from URL templates
in Airflow's configuration (``[matview] metrics_url`` and ``lineage_url``): e.g. a Grafana dashboard filtered on
the view, a Marquez job page.

A template's placeholders are ``{view}`` (``schema.name``), ``{view_metric}`` (the view as in metric names,
``schema__name``), ``{conn_id}``, ``{conn_metric}``, ``{dag_id}`` and ``{task_id}``; each value is percent-encoded.
Only ``http`` and ``https`` templates are used: anything else (``javascript:``, a typo) shows no link, and a
template with an unknown placeholder too, each logged once.
"""

from __future__ import annotations

import functools
import logging
import string
from urllib.parse import quote

from airflow_matview.refresh_metrics import name_part

log = logging.getLogger(__name__)

#: The configuration options, by link name.
OPTIONS = {"metrics": "metrics_url", "lineage": "lineage_url"}
PLACEHOLDERS = frozenset({"view", "view_metric", "conn_id", "conn_metric", "dag_id", "task_id"})


def view_links(view: str, conn_id: str, dag_id: str, task_id: str) -> dict[str, str]:
    """The links of one view's row, by name (``metrics``, ``lineage``); those not configured are left out."""
    values = {
        "view": view,
        "view_metric": name_part(view),
        "conn_id": conn_id,
        "conn_metric": name_part(conn_id),
        "dag_id": dag_id,
        "task_id": task_id,
    }
    encoded = {key: quote(value, safe="") for key, value in values.items()}
    return {name: template.format(**encoded) for name, template in _templates().items()}


def _templates() -> dict[str, str]:
    from airflow.configuration import conf

    found = {}
    for name, option in OPTIONS.items():
        template = (conf.get("matview", option, fallback="") or "").strip()
        if template and _usable(option, template):
            found[name] = template
    return found


@functools.lru_cache(maxsize=16)
def _usable(option: str, template: str) -> bool:
    """Whether ``template`` can make a link; if not, say why once."""
    if not template.lower().startswith(("http://", "https://")):
        log.warning("[matview] %s is not an http(s) URL; the fleet page shows no such link.", option)
        return False
    try:
        fields = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError as exc:
        log.warning(
            "[matview] %s cannot be read as a URL template (%s); the fleet page shows no such link.", option, exc
        )
        return False
    if unknown := sorted(fields - PLACEHOLDERS):
        log.warning(
            "[matview] %s names unknown placeholders (%s; known: %s); the fleet page shows no such link.",
            option,
            ", ".join(unknown),
            ", ".join(sorted(PLACEHOLDERS)),
        )
        return False
    return True
