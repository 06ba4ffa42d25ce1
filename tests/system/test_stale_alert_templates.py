"""A stale alert's templates may take values from Airflow Variables and Connections, as task notifiers' do: the
lag monitor sends it from the real triggerer, with no task or run in its context; ``var`` and ``conn`` are added
(alerting/staleness.py's ``with_accessors``). This is what the config's secret rule tells users to write
(``{{ conn.<id>.password }}``, ``{{ var.value.<name> }}``) instead of a credential in the file."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from devtools.harness.deployment import deployed, matviews_dags
from devtools.harness.smtp_sink import SmtpSink

if TYPE_CHECKING:
    from pathlib import Path

SMTP = "airflow.providers.smtp.notifications.smtp.SmtpNotifier"
MAX_STALENESS = 10  # seconds
pytestmark = pytest.mark.timeout(900)


def _config() -> dict[str, Any]:
    stale = {
        "notifier": SMTP,
        "to": "oncall@example.com",
        "smtp_conn_id": "smtp_sink",
        "subject": "{{ var.value.alert_prefix }} {{ matview.view }} stale (mail via {{ conn.smtp_sink.host }})",
    }
    view = {"name": "public.stale_view", "max_staleness": f"{MAX_STALENESS}s", "poll_interval": "1s"}
    return {
        "defaults": {"schedule": None, "retries": 0, "concurrently": False},
        "views": [view | {"on_stale": [stale]}],
    }


def test_a_stale_alert_renders_variables_and_connections_in_the_triggerer(tmp_path: Path) -> None:
    dags = matviews_dags(tmp_path, _config())
    scenario = ["CREATE TABLE src (id int)", "CREATE MATERIALIZED VIEW stale_view AS SELECT * FROM src"]
    with (
        SmtpSink() as sink,
        deployed(
            dags,
            scenario,
            ["matview.public.stale_view"],
            connections={"smtp_sink": sink.uri},
            env={"AIRFLOW_VAR_ALERT_PREFIX": "[prod-dwh]"},
            triggerer=True,
            unpause=True,
        ) as up,
    ):
        with up.connect() as conn:
            conn.execute("INSERT INTO src VALUES (1)")  # a change nobody refreshes: the lag grows past 10 s
        try:
            mails = sink.wait_for(lambda mail: "oncall@example.com" in mail.to, timeout=MAX_STALENESS + 120)
        except TimeoutError as error:
            raise AssertionError(f"{error}\n{up.stack.log('triggerer')}") from None
    assert [mail.subject for mail in mails] == ["[prod-dwh] public.stale_view stale (mail via 127.0.0.1)"]
