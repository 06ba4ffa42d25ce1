"""Notifiers in the config (on_failure, on_retry, on_success, on_stale): a notifier that would fail when its event
happens, or would put a credential into the file, is a config error."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from airflow_matview.config import InvalidConfigFileError, load_config
from devtools.harness.configs import EXITING, RECORDING, SMTP

if TYPE_CHECKING:
    from pathlib import Path


def problems_of(config: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidConfigFileError) as raised:
        load_config(config)
    return raised.value.problems


def test_notifiers_that_would_fail_when_the_event_happens_are_config_errors() -> None:
    problems = problems_of(
        {
            "views": [
                {
                    "name": "public.a",
                    "on_failure": [{"notifier": f"{RECORDING}.no_context"}],
                    "on_retry": [{"notifier": f"{RECORDING}.keyword_context"}],
                    "on_success": [{"notifier": f"{EXITING}.notify"}],
                    "on_stale": [{"notifier": SMTP, "to": "a@example.com", "subject": "{{ matview.view failed"}],
                    "max_staleness": "1h",
                }
            ]
        }
    )
    assert problems == [
        f"views[0] (public.a): on_failure: item 1: {RECORDING}.no_context cannot be called with the task "
        "context as its first argument; write it as def notify(context, **kwargs)",
        f"views[0] (public.a): on_retry: item 1: {RECORDING}.keyword_context cannot be called with the "
        "task context as its first argument; write it as def notify(context, **kwargs)",
        f"views[0] (public.a): on_success: item 1: {EXITING}.notify cannot be imported (SystemExit: 3)",
        f"views[0] (public.a): on_stale: item 1: {SMTP}: subject: the Jinja template does not parse (expected "
        "token 'end of print statement', got 'failed', line 1)",
    ]


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("webhook", "https://ops:hunter2@hooks.example.com/alert", "named like a credential"),
        (
            "url",
            "https://hooks.slack.com/services/T000/B000/hunter2",
            "a URL with a user, a query or a token in its path",
        ),
        ("url", "https://alerts.example.com/hook?api_key=hunter2", "a URL with a user, a query or a token in its path"),
        ("headers", {"Authorization": "Bearer hunter2"}, "a header value"),
        (
            "targets",
            ["ops@example.com", "https://u:hunter2@example.com"],
            "a URL with a user, a query or a token in its path",
        ),
    ],
)
def test_a_credential_inside_a_notifier_argument_is_refused_and_not_repeated(key: str, value: object, why: str) -> None:
    notifier = {"notifier": "devtools.harness.recording_notifier.record", "label": "x", key: value}
    with pytest.raises(InvalidConfigFileError) as raised:
        load_config({"views": [{"name": "public.a", "on_failure": [notifier]}]})
    assert raised.value.problems == [
        f"views[0] (public.a): on_failure: item 1: devtools.harness.recording_notifier.record: {key} ({why}) may "
        "hold a credential (not repeated here), which would be stored in plain text in the DAG and in Airflow's "
        "database (its trigger table for on_stale); take it from Airflow: pass the notifier's connection id "
        "(a *_conn_id "
        "argument), or write {{ conn.<conn_id>.password }} or {{ var.value.<name> }} in one of its template fields"
    ]
    assert "hunter2" not in str(raised.value)


def test_a_notifier_argument_yaml_reads_as_a_date_or_bytes_is_refused_with_the_quoting_fix(tmp_path: Path) -> None:
    path = tmp_path / "matviews.yaml"
    path.write_text(
        "views:\n"
        "  - name: public.a\n"
        "    max_staleness: 1h\n"
        f"    on_stale: [{{notifier: {RECORDING}.record, label: 2026-11-26, logo: !!binary aGk=}}]\n",
        encoding="utf-8",
    )
    with pytest.raises(InvalidConfigFileError) as raised:
        load_config(path)
    assert raised.value.problems == [
        f"views[0] (public.a): on_stale: item 1: {RECORDING}.record: logo: YAML reads this as a "
        "date, time or binary value, which Airflow cannot pass on to a notifier; quote it to keep it as text"
    ]


def test_a_url_written_as_the_notifier_is_refused_without_repeating_it() -> None:
    problems = problems_of(
        {
            "views": [
                {
                    "name": "public.a",
                    "on_failure": [{"notifier": "https://ops:hunter2@hooks.example.com/alert"}],
                    "on_success": [{"notifier": f"{RECORDING}."}],
                }
            ]
        }
    )
    fix = (
        "is not a dotted path; write package.module.Name, e.g. airflow.providers.smtp.notifications.smtp.SmtpNotifier "
        "(a webhook URL belongs in an Airflow connection)"
    )
    assert problems == [
        f"views[0] (public.a): on_failure: item 1: notifier: this value (not repeated here, as it may hold a "
        f"credential) {fix}",
        f"views[0] (public.a): on_success: item 1: notifier: '{RECORDING}.' {fix}",
    ]
