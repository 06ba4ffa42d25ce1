"""The config's production keys (timezone, max_staleness, on_stale, pool, queue, priority, description): what
validation accepts and refuses, each problem with what is allowed. Notifiers: ``test_notifier_specs.py``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from airflow_matview.config import InvalidConfigFileError, load_config
from devtools.harness.configs import ALL_KEYS, SMTP

ACCEPTED = (
    "a notifier is an Airflow BaseNotifier subclass (e.g. airflow.providers.smtp.notifications.smtp.SmtpNotifier) "
    "or a Python function written as def notify(context, **kwargs)"
)


def problems_of(config: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidConfigFileError) as raised:
        load_config(config)
    return raised.value.problems


def test_bad_values_of_the_production_keys_are_each_reported_with_what_is_allowed() -> None:
    problems = problems_of(
        {
            "views": [
                {
                    "name": "public.a",
                    "timezone": "Europe/Berln",
                    "on_failure": {"notifier": SMTP},
                    "on_retry": [{"notifier": SMTP, "to": "x@example.com", "colour": "red"}, {"to": "y"}],
                    "on_success": [{"notifier": "airflow.providers.nowhere.Notifier"}, "smtp://ops:hunter3@mail"],
                    "on_stale": [{"notifier": SMTP, "to": "x@example.com", "smtp_password": "hunter2"}],
                    "max_staleness": "0.5s",
                    "pool": "main pool",
                    "pool_slots": 0,
                    "priority_weight": "high",
                    "queue": "",
                    "description": 42,
                },
                {"name": "public.b", "timezone": "Mars/Olympus_Mons", "max_staleness": "soon", "pool_slots": True},
                {"name": "public.c", "max_staleness": "1h", "on_success": [{"notifier": SMTP}]},
                {"name": "public.d", "on_failure": [{"notifier": "json.JSONDecoder"}, {"notifier": "os.sep"}]},
            ]
        }
    )
    listed = ", ".join(
        sorted(
            [
                "auth_type",
                "bcc",
                "cc",
                "custom_headers",
                "files",
                "from_email",
                "html_content",
                "mime_charset",
                "mime_subtype",
                "smtp_conn_id",
                "subject",
                "template",
                "to",
            ]
        )
    )
    assert problems == [
        "views[0] (public.a): timezone: 'Europe/Berln' is not an IANA time zone; did you mean Europe/Berlin?",
        "views[0] (public.a): on_failure: use a list of notifiers, e.g. [{notifier: "
        "airflow.providers.smtp.notifications.smtp.SmtpNotifier, to: ops@example.com}]",
        f"views[0] (public.a): on_retry: item 1: {SMTP} does not accept colour; it accepts {listed}; "
        "item 2: notifier: is missing; give the dotted path of a BaseNotifier subclass, e.g. "
        "{notifier: airflow.providers.smtp.notifications.smtp.SmtpNotifier, to: ops@example.com}",
        "views[0] (public.a): on_success: item 1: airflow.providers.nowhere.Notifier cannot be imported "
        "(No module named 'airflow.providers.nowhere'); install its provider or fix the path; "
        "item 2: a str is not a notifier; write a mapping such as "
        "{notifier: airflow.providers.smtp.notifications.smtp.SmtpNotifier, to: ops@example.com}",
        f"views[0] (public.a): on_stale: item 1: {SMTP}: smtp_password (named like a credential) may hold a "
        "credential (not repeated here), which would be stored in plain text in the DAG and in Airflow's database "
        "(its trigger table for on_stale); take it from Airflow: pass the notifier's connection id (a *_conn_id "
        "argument), or write {{ conn.<conn_id>.password }} or {{ var.value.<name> }} in one of its template fields",
        "views[0] (public.a): max_staleness: '0.5s' is under a second, sooner than any refresh can run; "
        "use a duration such as 20s, 30m or 1h, or null for no staleness alert",
        "views[0] (public.a): pool: 'main pool' is not a pool name; use up to 256 letters, digits, _ . and - "
        "(e.g. pg_main)",
        "views[0] (public.a): pool_slots: 0 is not allowed; use a whole number of slots from 1 to 2147483647 "
        "(default 1)",
        "views[0] (public.a): priority_weight: 'high' is not allowed; use a whole number from -2147483648 to "
        "2147483647 (higher runs first when slots are short)",
        "views[0] (public.a): queue: '' is not a queue name; use up to 256 letters, digits, _ . and - (e.g. refreshes)",
        "views[0] (public.a): description: 42 is not text; write the description as a string",
        "views[1] (public.b): timezone: 'Mars/Olympus_Mons' is not an IANA time zone; use an IANA name such as "
        "Europe/Berlin or UTC",
        "views[1] (public.b): max_staleness: 'soon' is not a duration; use 500ms, 30s, 5m, 1h, 1d or a number of "
        "seconds",
        "views[1] (public.b): pool_slots: True is not allowed; use a whole number of slots from 1 to 2147483647 "
        "(default 1)",
        f"views[2] (public.c): on_success: item 1: {SMTP} needs to",
        "views[3] (public.d): on_failure: item 1: json.JSONDecoder is a class that is not an Airflow BaseNotifier "
        f"subclass, not a notifier; {ACCEPTED}; item 2: os.sep is a str, not a notifier; {ACCEPTED}",
    ]
    assert "hunter" not in "\n".join(problems), "no credential is echoed"


def test_max_staleness_without_anyone_to_tell_is_an_error() -> None:
    assert problems_of({"views": [{"name": "public.a", "max_staleness": "1h"}]}) == [
        "views[0] (public.a): max_staleness: no notifier would be told when the view is stale; list them under "
        "on_stale (or on_failure, which on_stale defaults to)"
    ]


def test_defaults_carry_the_production_keys_and_on_stale_defaults_to_on_failure() -> None:
    config = load_config(
        {
            "defaults": {**ALL_KEYS, "on_stale": None},
            "views": [{"name": "public.a"}, {"name": "public.b", "pool": None}],
        }
    )
    first, second = config.views
    assert first.timezone == "Europe/Berlin"
    assert first.stale_notifiers == first.on_failure
    assert (first.pool, first.pool_slots, first.priority_weight, first.queue) == ("pg_main", 2, 7, "refreshes")
    assert first.max_staleness == timedelta(hours=2)
    assert second.pool is None


@pytest.mark.parametrize(
    ("zone", "message"),
    [
        # A file of this machine's zoneinfo directory, whose meaning differs between the scheduler and the workers.
        ("localtime", "'localtime' is not an IANA time zone; use an IANA name such as Europe/Berlin or UTC"),
        ("posix/Europe/Berlin", "'posix/Europe/Berlin' is not an IANA time zone; did you mean Europe/Berlin?"),
        # Abbreviations: the suggestion is the zone they stand for, not the nearest spelling (PST is not MST).
        ("PST", "'PST' is not an IANA time zone; did you mean America/Los_Angeles?"),
        (
            "EST",
            "'EST' is a fixed offset that ignores daylight saving time, not the local time it usually means; "
            "use America/New_York (or Etc/GMT+5 for a fixed offset)",
        ),
    ],
)
def test_a_zone_that_is_not_portable_or_is_an_abbreviation_is_refused_with_the_zone_meant(
    zone: str, message: str
) -> None:
    assert problems_of({"views": [{"name": "public.a", "timezone": zone}]}) == [
        f"views[0] (public.a): timezone: {message}"
    ]


@pytest.mark.parametrize("zone", ["US/Eastern", "Europe/Kiev", "CET", "Etc/GMT+5", "Australia/Lord_Howe"])
def test_links_and_fixed_offsets_of_the_iana_database_are_accepted(zone: str) -> None:
    assert load_config({"views": [{"name": "public.a", "timezone": zone}]}).views[0].timezone == zone


def test_on_stale_without_any_max_staleness_is_an_error_where_it_is_written() -> None:
    stale = [{"notifier": SMTP, "to": "oncall@example.com"}]
    assert problems_of({"views": [{"name": "public.a", "on_stale": stale}]}) == [
        "views[0] (public.a): on_stale: is never called without max_staleness or target_lag; "
        "set max_staleness (e.g. 2h) or target_lag, or remove on_stale"
    ]
    assert problems_of({"defaults": {"on_stale": stale}, "views": [{"name": "public.a"}]}) == [
        "defaults: on_stale: is never called, as no view has max_staleness or target_lag; "
        "set max_staleness (e.g. 2h) or target_lag, or remove on_stale"
    ]
    # In defaults for the views that set max_staleness; a view may opt out with max_staleness: null.
    views = load_config(
        {
            "defaults": {"on_stale": stale},
            "views": [{"name": "public.a", "max_staleness": "1h"}, {"name": "public.b", "max_staleness": None}],
        }
    ).views
    assert [view.max_staleness for view in views] == [timedelta(hours=1), None]


def test_a_too_long_pool_or_queue_name_is_not_repeated_in_full() -> None:
    assert problems_of({"views": [{"name": "public.a", "pool": "p" * 257, "queue": "q" * 300}]}) == [
        f"views[0] (public.a): pool: {'p' * 20!r}... (257 characters) is not a pool name; use up to 256 letters, "
        "digits, _ . and - (e.g. pg_main)",
        f"views[0] (public.a): queue: {'q' * 20!r}... (300 characters) is not a queue name; use up to 256 letters, "
        "digits, _ . and - (e.g. refreshes)",
    ]
