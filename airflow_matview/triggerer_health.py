"""Whether an Airflow triggerer is alive: what a deferred refresh, an ``on_change`` watcher and a ``max_staleness``
alert need.

A task asks the API server it already talks to (its public health endpoint, which needs no credentials: a task on
Airflow 3 cannot read the metadata database); ``airflow-matview check`` reads the metadata database (the triggerer's
job and its heartbeat). Both judge as Airflow does: alive is a running triggerer whose heartbeat is recent
(``[triggerer] triggerer_health_check_threshold``).
"""

from __future__ import annotations

import json
import sys
import urllib.request
from datetime import datetime, timezone
from typing import Any

from airflow_matview.text import format_seconds

# How long a task waits for the API server's health endpoint before deferring without knowing.
HEALTH_TIMEOUT_SECONDS = 3.0
HEALTH_PATH = "/api/v2/monitor/health"


def triggerer_problem(alive: bool, heartbeat: datetime | None) -> str | None:
    """What is wrong with the triggerers, as the middle of a sentence, or ``None`` when one is alive.

    :param alive: whether Airflow calls the most recent triggerer alive.
    :param heartbeat: the most recent triggerer's last heartbeat (``None``: no triggerer has ever run).
    """
    if alive:
        return None
    if heartbeat is None:
        return "no Airflow triggerer is running (none has ever run with this metadata database)"
    if heartbeat.tzinfo is None:
        heartbeat = heartbeat.replace(tzinfo=timezone.utc)
    ago = format_seconds((datetime.now(timezone.utc) - heartbeat).total_seconds())
    return f"no Airflow triggerer is running (the latest heartbeat was {ago} ago)"


def triggerer_problem_in_task() -> str | None:
    """What is wrong with the triggerers, asked of the API server by the task that is about to defer; ``None`` when
    one is alive, or when it cannot be known (outside a task that a supervisor runs: ``dag.test()`` runs its
    triggers itself; or the API server's health endpoint does not answer)."""
    if not _in_supervised_task():
        return None
    from airflow.configuration import conf

    execution_api = conf.get("core", "execution_api_server_url", fallback="") or ""
    base = execution_api.rstrip("/").removesuffix("/execution")
    if not base.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(f"{base}{HEALTH_PATH}", timeout=HEALTH_TIMEOUT_SECONDS) as response:
            triggerer = json.load(response).get("triggerer") or {}
    except Exception:  # no answer (an API server without the public API, a proxy that asks for credentials)
        return None
    heartbeat = triggerer.get("latest_triggerer_heartbeat")
    try:
        last = datetime.fromisoformat(heartbeat.replace("Z", "+00:00")) if heartbeat else None
    except (AttributeError, ValueError):
        last = None
    return triggerer_problem(triggerer.get("status") == "healthy", last)


def triggerer_problem_in_metadata() -> str | None:
    """What is wrong with the triggerers, read from Airflow's metadata database (its job table); ``None`` when one
    is alive.

    :raises RuntimeError: the metadata database cannot be read.
    """
    try:
        from airflow.jobs.job import most_recent_job
        from airflow.utils.session import create_session

        with create_session() as session:
            job = most_recent_job("TriggererJob", session=session)
            alive, heartbeat = (job is not None and job.is_alive()), (job.latest_heartbeat if job else None)
    except Exception as error:
        raise RuntimeError(unreadable_metadata("triggerers", error)) from None
    return triggerer_problem(alive, heartbeat)


def unreadable_metadata(what: str, error: BaseException) -> str:
    """``cannot read Airflow's <what> (<the error's kind and first line>)``."""
    first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return f"cannot read Airflow's {what} ({type(error).__name__}: {first_line})"


def _in_supervised_task() -> bool:
    """Whether this is a task process that Airflow's supervisor runs (a worker's), whose deferral a triggerer must
    pick up; not ``dag.test()`` (in process: it runs the trigger itself), nor a bare ``execute()``."""
    runner: Any = sys.modules.get("airflow.sdk.execution_time.task_runner")
    comms = getattr(runner, "SUPERVISOR_COMMS", None)
    return comms is not None and type(comms).__name__ != "InProcessSupervisorComms"
