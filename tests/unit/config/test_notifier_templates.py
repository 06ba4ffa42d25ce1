"""Notifier templates are compiled and rendered once when the config is read, against a context of the shape the
event gets (config/notifier_templates.py): a template that parses but cannot render is a config error naming the
view, the key, the notifier and the argument, instead of a notification lost when the event happens."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import yaml

from airflow_matview.config import InvalidConfigFileError, load_config
from airflow_matview.factory import build_dags

if TYPE_CHECKING:
    from pathlib import Path

SMTP = "airflow.providers.smtp.notifications.smtp.SmtpNotifier"
LOST = "; the notification would be lost when the event happens"


def _view(event: str, **kwargs: Any) -> dict[str, Any]:
    view: dict[str, Any] = {"name": "public.a", event: [{"notifier": SMTP, "to": "ops@example.com", **kwargs}]}
    if event == "on_stale":
        view["max_staleness"] = "1h"
    return view


def _problems(config: dict[str, Any] | Path) -> list[str]:
    with pytest.raises(InvalidConfigFileError) as raised:
        load_config(config)
    return raised.value.problems


@pytest.mark.parametrize(
    ("event", "subject", "why"),
    [
        ("on_failure", "{{ matview.view | nosuchfilter }}", "the Jinja template does not compile (No filter named "),
        ("on_failure", "{{ matview.typo.x }}", "the template cannot be rendered for a task failure ('dict object' "),
        ("on_retry", "{{ matview.typo }}", "the template cannot be rendered for a task retry ('dict object' has no "),
        ("on_success", "{{ nosuch }}", "the template cannot be rendered for a task success ('nosuch' is undefined)"),
        ("on_success", "{{ exception }}", "the template cannot be rendered for a task success ('exception' is "),
        ("on_failure", "{{ ti.try_numbr }}", "the template cannot be rendered for a task failure ('ti object' has no "),
        ("on_failure", "{{ dag_run.queued_at }}", "the template cannot be rendered for a task failure ('dag_run "),
        ("on_failure", "{{ params.typo }}", "the template cannot be rendered for a task failure ('dict object' has no"),
        ("on_failure", "{{ conn.smtp.passwrd }}", "the template cannot be rendered for a task failure ('Connection "),
        (
            "on_failure",
            "{{ matview.view | format(1, 2) }}",
            "the template cannot be rendered for a task failure (TypeError: not all arguments converted during string",
        ),
        ("on_stale", "{{ ti.try_number }}", "the template cannot be rendered for a stale alert ('ti' is undefined)"),
        ("on_stale", "{{ matview.stale_fr }}", "the template cannot be rendered for a stale alert ('dict object' has"),
        ("on_stale", "{% include 'footer.html' %}", "on_stale is rendered in the triggerer, where a template cannot "),
        ("on_stale", "{{ x.__class__ }}", "the template cannot be rendered for a stale alert ("),
        # Sent by the lag monitor whether or not a run exists: no run in its context.
        ("on_stale", "{{ dag_run.queued_at }}", "the template cannot be rendered for a stale alert ('dag_run' is "),
    ],
)
def test_a_template_that_cannot_be_rendered_is_one_line_naming_the_view_key_and_argument(
    event: str, subject: str, why: str
) -> None:
    problems = _problems({"views": [_view(event, subject=subject)]})
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"views[0] (public.a): {event}: item 1: {SMTP}: subject: {why}"), problems[0]
    assert problems[0].endswith(LOST) and "\n" not in problems[0]


@pytest.mark.parametrize(
    ("event", "subject"),
    [
        ("on_failure", "{{ matview.view }} failed: {{ matview.error }} (try {{ ti.try_number + 1 }})"),
        ("on_failure", "{{ exception }} at {{ ts }} / {{ ds }} / {{ logical_date.strftime('%Y') }}"),
        ("on_failure", "{{ macros.ds_add(ds, 1) }} {{ dag_run.logical_date | ds }} {{ dag_run.conf.get('x', 1) }}"),
        ("on_failure", "{{ var.value.team }} {{ var.value.get('x', 'y') }} {{ var.json.cfg.channel }}"),
        ("on_failure", "{{ conn.smtp.host }} {{ conn.get('smtp').login }} {{ conn.smtp.extra_dejson.x }}"),
        ("on_failure", "{{ params.concurrently }} {{ ti.log_url }} {{ task.task_id }} {{ dag.dag_id }} {{ to }}"),
        ("on_retry", "{% if ti.try_number > 1 %}again{% endif %} {{ ti.max_tries - ti.try_number }}"),
        ("on_success", "{{ matview.view | upper }} {{ '%s' | format(matview.conn_id) }} {{ run_id }}"),
        ("on_stale", "{{ matview.view }} stale for {{ matview.stale_for }}, {{ matview.late_by }} late"),
        (
            "on_stale",
            "{{ matview.lag }} over {{ matview.max_staleness }} since {{ matview.due_at }}: {{ matview.reason }}",
        ),
        ("on_stale", "{{ var.value.team }} {{ conn.ops.password }}"),
    ],
)
def test_templates_that_render_for_their_event_pass(event: str, subject: str) -> None:
    load_config({"views": [_view(event, subject=subject)]})


def test_an_include_is_found_next_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "footer.html").write_text("<p>{{ matview.view }}</p>")
    path = tmp_path / "matviews.yaml"
    path.write_text(yaml.safe_dump({"views": [_view("on_failure", html_content="{% include 'footer.html' %}")]}))
    load_config(path)
    (tmp_path / "broken.html").write_text("<p>{{ matview.nothing.here }}</p>")
    path.write_text(
        yaml.safe_dump(
            {
                "views": [
                    _view("on_failure", html_content="{% include 'footr.html' %}"),
                    _view("on_retry", html_content="{% include 'broken.html' %}") | {"name": "public.b"},
                ]
            }
        )
    )
    assert _problems(path) == [
        f"views[0] (public.a): on_failure: item 1: {SMTP}: html_content: the template file 'footr.html' is not in "
        f"the config file's folder, where the DAG looks for it{LOST}",
        f"views[1] (public.b): on_retry: item 1: {SMTP}: html_content: the template cannot be rendered for a task "
        f"retry ('dict object' has no attribute 'nothing'){LOST}",
    ]


def test_on_failure_notifiers_are_also_rendered_as_the_stale_alert_they_default_to() -> None:
    view = _view("on_failure", subject="{{ matview.view }} try {{ ti.try_number }}") | {"max_staleness": "2h"}
    assert _problems({"views": [view]}) == [
        f"views[0] (public.a): on_failure (as on_stale): item 1: {SMTP}: subject: the template cannot be rendered "
        f"for a stale alert ('ti' is undefined){LOST}"
    ]


def test_a_notifier_of_defaults_is_reported_once_and_every_view_of_its_own() -> None:
    broken = [{"notifier": SMTP, "to": "ops@example.com", "subject": "{{ matview.veiw }}"}]
    config = {
        "defaults": {"on_retry": broken},
        "views": [
            {"name": "public.a"},
            {"name": "public.b"},
            {"name": "public.c", "on_retry": [], "on_success": broken},
        ],
    }
    assert _problems(config) == [
        f"defaults: on_retry: item 1: {SMTP}: subject: the template cannot be rendered for a task retry ('dict "
        f"object' has no attribute 'veiw'){LOST}",
        f"views[2] (public.c): on_success: item 1: {SMTP}: subject: the template cannot be rendered for a task "
        f"success ('dict object' has no attribute 'veiw'){LOST}",
    ]


def test_our_default_subject_and_message_render_for_every_event() -> None:
    notifier = {"notifier": SMTP, "to": "ops@example.com"}
    load_config(
        {
            "views": [
                {
                    "name": "public.a",
                    "on_failure": [notifier],
                    "on_retry": [notifier],
                    "on_success": [notifier],
                    "on_stale": [notifier],
                    "max_staleness": "1h",
                }
            ]
        }
    )


def test_a_dag_file_with_such_a_template_fails_to_import_with_the_same_line() -> None:
    with pytest.raises(InvalidConfigFileError) as raised:
        build_dags({"views": [_view("on_failure", subject="{{ matview.view | nosuchfilter }}")]})
    assert "subject: the Jinja template does not compile (No filter named 'nosuchfilter'" in str(raised.value)
