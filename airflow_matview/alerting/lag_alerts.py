"""The lag monitor's notifications: a view's ``on_stale`` notifiers told, from the triggerer, that its lag went over
its ``max_staleness`` or ``target_lag`` (with why) and that it is back within it. See
:mod:`airflow_matview.triggers.freshness_monitor`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow_matview.alerting.notify import acall
from airflow_matview.alerting.staleness import with_accessors
from airflow_matview.config.notification import describe_lag
from airflow_matview.config.notifier_specs import NotifierSpec

if TYPE_CHECKING:
    from airflow_matview.freshness import Lag

log = logging.getLogger(__name__)


async def notify_lag(
    event: str, spec: dict[str, Any], conn_id: str, lag: Lag, reason: str | None, now: float
) -> list[str]:
    """Call each notifier of the view; one that fails is logged and does not silence the others.

    :param event: ``behind`` or ``caught_up``.
    :param spec: the monitor's entry for the view (``view``, ``dag_id``, ``target``, ``alert_after``, ``alert_key``,
        ``notifiers``).
    :param reason: why it is behind.
    :param now: when the lag was measured.
    :return: the notifiers that failed, with their error.
    """
    facts = describe_lag(
        event,
        str(spec["view"]),
        conn_id,
        spec.get("dag_id"),
        lag=lag.as_dict(),
        target=None if spec.get("target") is None else float(spec["target"]),
        reason=reason,
        alert_after=float(spec.get("alert_after") or spec["target"]),
        alert_key=str(spec.get("alert_key") or "target_lag"),
    )
    facts["measured_at"] = now
    context = with_accessors({"matview": facts})
    log.warning("airflow-matview: %s", facts["subject"] + (f": {reason}" if reason else ""))
    failures = []
    for item in spec.get("notifiers", []):
        notifier = NotifierSpec(item["notifier"], {k: v for k, v in item.items() if k != "notifier"})
        try:
            await acall(notifier, context)
        except Exception as error:  # one broken notifier must not silence the others
            log.exception("on_stale notifier %s failed for %s", notifier.path, spec["view"])
            failures.append(f"{notifier.path}: {error}")
    return failures
