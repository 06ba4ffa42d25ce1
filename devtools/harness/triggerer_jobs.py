"""A triggerer as Airflow's metadata database records one, for tests of what reads it (``airflow-matview check``)
without starting a real triggerer."""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator


@contextlib.contextmanager
def live_triggerer() -> Iterator[None]:
    """A running ``TriggererJob`` with a fresh heartbeat in the metadata database (``airflow_db``), removed after."""
    from airflow.jobs.job import Job
    from airflow.utils.session import create_session
    from airflow.utils.state import JobState

    with create_session() as session:
        job = Job(job_type="TriggererJob", heartrate=5)
        job.state = JobState.RUNNING
        job.latest_heartbeat = datetime.now(timezone.utc)
        session.add(job)
        session.flush()
        job_id = job.id
    try:
        yield
    finally:
        with create_session() as session:
            session.query(Job).filter(Job.id == job_id).delete()
