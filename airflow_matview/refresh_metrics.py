"""A refresh task's metrics, through Airflow's own metrics layer (see :func:`~airflow_matview.version_compat.
airflow_stats`): StatsD, Datadog or OpenTelemetry, as the deployment configures ``[metrics]``.

Each metric is sent twice, as Airflow sends its own: once named ``matview.refresh.<metric>`` with the tags ``view``
and ``conn_id`` (and ``mode``), which OpenTelemetry, Datadog and StatsD with InfluxDB tags keep (plain StatsD drops
tags, so there it is the total over every view); and once with the connection and the view in the name,
``matview.refresh.<metric>.<conn_id>.<view>``, for plain StatsD (the ``statsd_exporter`` mapping in
``docs/observability/`` turns those parts back into labels). Sending a metric never fails a task: an error is
logged in one line. Imported at DAG-parse time: nothing heavy here.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "matview.refresh"
#: The lag monitor's gauges (``target_lag`` views), sent at every measurement whether or not a DAG run exists.
LAG_PREFIX = "matview.freshness"
# The characters a StatsD name may hold (Airflow's validator); anything else in a view or connection becomes "_".
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def name_part(text: str) -> str:
    """``text`` as one part of a metric name: dots (schema.view) become ``__``, other unsafe characters ``_``."""
    return _UNSAFE.sub("_", text.replace(".", "__"))


def refreshed(conn_id: str, result: dict[str, Any]) -> None:
    """A successful refresh: its duration, rows, lock wait, and a count by mode.

    :param result: the task's XCom (``view``, ``mode``, ``seconds``, ``rows``, ``lock_wait``).
    """
    view, mode = str(result["view"]), str(result["mode"])
    sends: list[tuple[str, str, Any]] = [
        ("timing", "duration", timedelta(seconds=float(result["seconds"]))),
        ("timing", "lock_wait", timedelta(seconds=float(result.get("lock_wait") or 0.0))),
        ("incr", "succeeded", 1),
        ("incr", f"mode.{mode}", 1),
    ]
    if result.get("rows") is not None:
        sends.append(("gauge", "rows", int(result["rows"])))
    _send(conn_id, view, sends, {"mode": mode})


def skipped(conn_id: str, view: str) -> None:
    """A refresh skipped (``skip_if_unchanged``, ``on_overlap: skip``)."""
    _send(conn_id, view, [("incr", "skipped", 1)], {})


def failed(conn_id: str, view: str) -> None:
    """A failed refresh (each failed try, retried or not)."""
    _send(conn_id, view, [("incr", "failed", 1)], {})


def lag(conn_id: str, view: str, seconds: float | None, target: float | None) -> None:
    """A view's measured lag (see :mod:`airflow_matview.freshness`): ``matview.freshness.lag`` in seconds when known,
    and ``matview.freshness.unknown`` (1 when the lag could not be measured, else 0), so a dashboard never reads an
    unmeasured lag as 0; ``matview.freshness.target`` is the view's ``target_lag``.

    :param seconds: the lag, ``None`` when unknown.
    :param target: the view's ``target_lag`` in seconds.
    """
    sends: list[tuple[str, str, Any]] = [("gauge", "unknown", int(seconds is None))]
    if seconds is not None:
        sends.append(("gauge", "lag", float(seconds)))
    if target is not None:
        sends.append(("gauge", "target", float(target)))
    _send(conn_id, view, sends, {}, prefix=LAG_PREFIX)


def _send(
    conn_id: str, view: str, sends: list[tuple[str, str, Any]], extra: dict[str, str], prefix: str = PREFIX
) -> None:
    try:
        from airflow_matview.version_compat import airflow_stats

        stats = airflow_stats()
        tags = {"view": view, "conn_id": conn_id, **extra}
        suffix = f"{name_part(conn_id)}.{name_part(view)}"
        for kind, metric, value in sends:
            for name, tagged in ((f"{prefix}.{metric}", tags), (f"{prefix}.{metric}.{suffix}", None)):
                if kind == "incr":
                    stats.incr(name, value, tags=tagged)
                elif kind == "gauge":
                    stats.gauge(name, value, tags=tagged)
                else:
                    stats.timing(name, value, tags=tagged)
    except Exception as exc:  # metrics are a side channel: never the reason a refresh task fails
        log.warning("Could not send the metrics of %s (connection %r): %s", view, conn_id, exc)
