"""Which notifier arguments may hold a credential: any of them must come from an Airflow Connection or Variable.

The rule (config/notifier_secrets.py): a key named like a credential, any header value, a URL with a user, a query
or a random-looking path segment, and any random-looking word (a key or a token), wherever it sits in an argument
(nested lists and mappings too), is refused unless it comes from a ``{{ conn.<id>... }}`` or ``{{ var.value...
}}`` reference; a notifier's ``*_conn_id`` argument is the other way. The value is never repeated in the message.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_matview.config import InvalidConfigFileError, load_config

RECORD = "devtools.harness.recording_notifier.record_any"
SMTP = "airflow.providers.smtp.notifications.smtp.SmtpNotifier"
SECRET = "Zq8vN2kLp4Xr7TbW9yHc3Md6"  # 24 random letters and digits: the shape of a webhook or API token


def _problems(notifier: dict[str, Any], event: str = "on_failure") -> list[str]:
    view: dict[str, Any] = {"name": "public.a", event: [notifier]}
    if event == "on_stale":
        view["max_staleness"] = "1h"
    with pytest.raises(InvalidConfigFileError) as raised:
        load_config({"views": [view]})
    return raised.value.problems


def _loads(notifier: dict[str, Any]) -> None:
    load_config({"views": [{"name": "public.a", "on_failure": [notifier]}]})


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        # Webhook URLs whose path is the secret.
        ("url", f"https://hooks.slack.com/services/T024BE7LD/B024BE7LD/{SECRET}", "a URL"),
        ("url", f"https://discord.com/api/webhooks/112233445566778899/{SECRET}-aB3_{SECRET}", "a URL"),
        (
            "url",
            "https://contoso.webhook.office.com/webhookb2/7f3c1a2e-9b4d-4e1f-8a6b-2c5d7e9f0a1b@"
            "0a1b2c3d-4e5f-6789-abcd-ef0123456789/IncomingWebhook/9f8e7d6c5b4a39281706f5e4d3c2b1a0/"
            "1c2d3e4f-5a6b-7c8d-9e0f-a1b2c3d4e5f6",
            "a URL",
        ),
        ("url", "https://prod-12.westeurope.logic.azure.com:443/workflows/abc/triggers/manual?sp=x&sig=y", "a URL"),
        ("url", f"https://api.telegram.org/bot123456789:{SECRET}/sendMessage", "a URL"),
        # Keys and tokens in a query, in user info, or as a plain value.
        ("url", "https://alerts.example.com/hook?token=hunter2", "a URL"),
        ("url", "https://alerts.example.com/hook?key=hunter2", "a URL"),
        ("url", "https://alerts.example.com/hook?sig=hunter2&v=1", "a URL"),
        ("url", "alerts.example.com/hook?apikey=hunter2", "a URL"),
        ("url", "https://ops:hunter2@alerts.example.com/hook", "a URL"),
        ("url", "https://hunter2@alerts.example.com/hook", "a URL"),
        ("routing_key", "R0123456789abcdef0123456789abcdef", "named like a credential"),
        ("integration", "R0123456789abcdef0123456789abcdef", "a random-looking value"),
        ("api_key", "hunter2", "named like a credential"),
        ("genie_key", "7f3c1a2e-9b4d-4e1f-8a6b-2c5d7e9f0a1b", "a random-looking value"),
        ("label", SECRET, "a random-looking value"),
        # Headers, in any mapping or list named like them, and credential-named keys at any depth.
        ("headers", {"Authorization": "Bearer hunter2"}, "a header value"),
        ("headers", {"Cookie": "session=hunter2"}, "a header value"),
        ("headers", {"X-API-Key": "hunter2"}, "a header value"),
        ("headers", {"X-Auth-Token": "hunter2"}, "a header value"),
        ("headers", {"X-Custom": "hunter2"}, "a header value"),
        ("http_headers", ["X-API-Key: hunter2"], "a header value"),
        ("extra", {"Cookie": "hunter2"}, "named like a credential"),
        ("extra", {"nested": [{"X-Api-Key": "hunter2"}]}, "named like a credential"),
        ("extra", {"nested": [{"target": "https://u:hunter2@example.com"}]}, "a URL"),
        ("targets", ["ops@example.com", "https://u:hunter2@example.com"], "a URL"),
        ("message", "curl -H 'Authorization: Bearer hunter2Zq8vN2kLp' https://x.example.com", "a header"),
        # A Jinja string literal is still text in the file.
        ("url", "{{ 'https://alerts.example.com/hook?token=hunter2' }}", "a URL"),
    ],
)
def test_a_credential_anywhere_in_an_argument_is_refused_without_repeating_it(key: str, value: Any, why: str) -> None:
    problems = _problems({"notifier": RECORD, "label": "x", key: value})
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"views[0] (public.a): on_failure: item 1: {RECORD}: {key} (")
    assert why in problems[0]
    assert "{{ conn." in problems[0] and "{{ var.value." in problems[0] and "_conn_id" in problems[0]
    for secret in ("hunter2", SECRET, "R0123456789", "7f3c1a2e", "9f8e7d6c"):
        assert secret not in problems[0]


def test_the_message_names_every_argument_and_why_in_one_line() -> None:
    problems = _problems(
        {
            "notifier": RECORD,
            "label": "x",
            "url": "https://hooks.example.com/x?token=hunter2",
            "headers": {"X-Priority": "1"},
        },
        event="on_stale",
    )
    assert problems == [
        f"views[0] (public.a): on_stale: item 1: {RECORD}: url (a URL with a user, a query or a token in its "
        "path), headers (a header value) may hold a credential (not repeated here), which would be stored in plain "
        "text in the DAG and in Airflow's database (its trigger table for on_stale); take it from Airflow: pass the "
        "notifier's connection id (a *_conn_id argument), or write {{ conn.<conn_id>.password }} or "
        "{{ var.value.<name> }} in one of its template fields"
    ]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("url", "{{ conn.slack_hook.host }}{{ conn.slack_hook.password }}"),
        ("url", "{{ var.value.discord_webhook }}"),
        ("url", "{{ var.json.hooks.teams }}"),
        ("url", "https://api.telegram.org/bot{{ conn.telegram.password }}/sendMessage"),
        ("url", "https://alerts.example.com/hook?token={{ var.value.alert_token }}"),
        ("headers", {"Authorization": "Bearer {{ conn.api.password }}", "X-API-Key": "{{ var.value.key }}"}),
        ("headers", ["Cookie: {{ var.value.cookie | trim }}"]),
        ("api_key", "{{ conn.opsgenie.password }}"),
        ("routing_key", "{{ var.value.get('pagerduty_routing_key') }}"),
        ("password", None),
        ("extra", {"webhook_enabled": True, "token_count": 3}),
    ],
)
def test_a_credential_taken_from_a_connection_or_variable_is_accepted(key: str, value: Any) -> None:
    _loads({"notifier": RECORD, "label": "x", key: value})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("to", "ops@example.com"),
        ("to", ["data-platform-oncall@example.com", "first.last+alerts@sub.example.co.uk"]),
        ("subject", "[prod] {{ matview.view }} refresh failed at {{ ts }} (try {{ ti.try_number }})"),
        ("html_content", "<p>See <a href='https://grafana.example.com/d/sales/overview'>the dashboard</a></p>"),
        ("html_content", "Runbook: https://wiki.example.com/data/runbooks/materialized-view-refresh-failed"),
        ("from_email", "Airflow <airflow@example.com>"),
        ("smtp_conn_id", "smtp_ops_2024"),
        ("mime_charset", "utf-8"),
        ("files", ["/opt/airflow/reports/sales_by_region_2024_q1.csv"]),
        ("cc", "{{ var.value.oncall_email }}"),
    ],
)
def test_ordinary_values_pass(key: str, value: Any) -> None:
    _loads({"notifier": SMTP, "to": "ops@example.com", key: value})


@pytest.mark.parametrize("label", ["Basic authentication failed", "2026-03-29T02:30:00+02:00", "public.sales_2024"])
def test_ordinary_text_in_a_function_argument_passes(label: str) -> None:
    _loads({"notifier": RECORD, "label": label})
