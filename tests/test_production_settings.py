"""Production settings of the config (timezone, notifiers, max_staleness, pool, queue...): validation, what the
DAG and task get, and when Airflow's own timetable code runs a local-time cron across DST changes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from airflow_matview.config import InvalidConfigFileError, load_config
from airflow_matview.factory import build_dags
from airflow_matview.version_compat import DEADLINE_ALERTS_MISSING
from tests.test_factory import PARSE_PROBE, dags_folder

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from tests.conftest import Database

SMTP = "airflow.providers.smtp.notifications.smtp.SmtpNotifier"
#: Test notifiers of the harness, named by dotted path as a config names them.
RECORDING = "devtools.harness.recording_notifier"
EXITING = "devtools.harness.exiting_notifier"
CLI = Path(sys.executable).parent / "airflow-matview"
ALL_KEYS: dict[str, Any] = {
    "timezone": "Europe/Berlin",
    "on_failure": [{"notifier": SMTP, "to": "ops@example.com", "smtp_conn_id": "smtp_ops"}],
    "on_retry": [{"notifier": SMTP, "to": "ops@example.com", "subject": "retry {{ matview.view }}"}],
    "on_success": [{"notifier": f"{RECORDING}.record", "label": "ok"}],
    "on_stale": [{"notifier": SMTP, "to": "oncall@example.com"}],
    "max_staleness": "2h",
    "pool": "pg_main",
    "pool_slots": 2,
    "priority_weight": 7,
    "queue": "refreshes",
    "description": "Nightly sales rollup",
}


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
        f"views[0] (public.a): on_stale: item 1: {SMTP}: smtp_password would put a credential into the config "
        "file (not repeated here); keep it in an Airflow connection and pass the connection's id (e.g. smtp_conn_id)",
        "views[0] (public.a): max_staleness: '0.5s' is under a second, sooner than any refresh can run; "
        "use a duration such as 20s, 30m or 1h, or null for no staleness alert",
        "views[0] (public.a): pool: 'main pool' is not a pool name; use up to 256 letters, digits, _ . and - "
        "(e.g. pg_main)",
        "views[0] (public.a): pool_slots: 0 is not allowed; use a whole number of slots, 1 or more (default 1)",
        "views[0] (public.a): priority_weight: 'high' is not allowed; use a whole number (higher runs first when "
        "slots are short)",
        "views[0] (public.a): queue: '' is not a queue name; use up to 256 letters, digits, _ . and - (e.g. refreshes)",
        "views[0] (public.a): description: 42 is not text; write the description as a string",
        "views[1] (public.b): timezone: 'Mars/Olympus_Mons' is not an IANA time zone; use an IANA name such as "
        "Europe/Berlin or UTC",
        "views[1] (public.b): max_staleness: 'soon' is not a duration; use 500ms, 30s, 5m, 1h, 1d or a number of "
        "seconds",
        "views[1] (public.b): pool_slots: True is not allowed; use a whole number of slots, 1 or more (default 1)",
        f"views[2] (public.c): on_success: item 1: {SMTP} needs to",
        "views[3] (public.d): on_failure: item 1: json.JSONDecoder is a class but not an Airflow BaseNotifier "
        "subclass; item 2: os.sep is neither a BaseNotifier subclass nor a callable",
    ]
    assert "hunter" not in "\n".join(problems), "no credential is echoed"


def test_max_staleness_without_anyone_to_tell_is_an_error() -> None:
    assert problems_of({"views": [{"name": "public.a", "max_staleness": "1h"}]}) == [
        "views[0] (public.a): max_staleness: no notifier would be told when the view is stale; list them under "
        "on_stale (or on_failure, which on_stale defaults to)"
    ]


def test_max_staleness_on_an_airflow_without_usable_deadline_alerts_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    # Airflow 3.1/3.2 cannot be installed next to 3.3: the version check's message is what compat computes there.
    monkeypatch.setattr(
        "airflow_matview.config.fields.DEADLINE_ALERTS_MISSING",
        "needs Airflow 3.3 or newer (Deadline Alerts); this is Airflow 3.1.8: remove max_staleness or upgrade Airflow",
    )
    config = {"views": [{"name": "public.a", "max_staleness": "1h", "on_failure": ALL_KEYS["on_failure"]}]}
    assert problems_of(config) == [
        "views[0] (public.a): max_staleness: needs Airflow 3.3 or newer (Deadline Alerts); this is Airflow 3.1.8: "
        "remove max_staleness or upgrade Airflow"
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


def test_the_dag_and_task_get_the_settings_and_the_doc_says_so() -> None:
    dag = build_dags({"views": [{"name": "public.sales", "schedule": "30 2 * * *", **ALL_KEYS}]})[
        "matview.public.sales"
    ]
    (task,) = dag.tasks
    assert (task.pool, task.pool_slots, task.priority_weight, task.queue) == ("pg_main", 2, 7, "refreshes")
    assert dag.description == "Nightly sales rollup"
    assert [repr(cb) for cb in task.on_failure_callback] == [f"TaskNotifier(failure, {SMTP})"]
    assert [repr(cb) for cb in task.on_retry_callback] == [f"TaskNotifier(retry, {SMTP})"]
    (alert,) = dag.deadline
    assert alert.interval == timedelta(hours=2)
    assert alert.callback.path == "airflow_matview.alerting.staleness.notify_stale"
    assert alert.callback.kwargs["notifiers"] == ALL_KEYS["on_stale"]
    doc = dag.doc_md or ""
    assert "- cron times are Europe/Berlin local time" in doc
    assert "runs in the Airflow pool `pg_main` (2 slot(s)); **the pool must exist**" in doc
    assert f"- max staleness: `2h` after a run is queued (Deadline Alert, run by the triggerer), then: `{SMTP}`" in doc

    context: dict[str, Any] = {}
    task.on_success_callback[0](context)
    assert context["recorded"] == ["ok"], "a plain callable notifier gets the context and its configured kwargs"
    assert context["matview"]["subject"] == "[airflow-matview] public.sales refreshed (connection postgres_default)"


def test_validate_shows_the_settings_in_its_table(tmp_path: Path) -> None:
    path = tmp_path / "matviews.yaml"
    path.write_text(yaml.safe_dump({"views": [{"name": "public.sales", **ALL_KEYS}, {"name": "public.plain"}]}))
    # The command imports the config's notifiers: devtools.harness.recording_notifier, from the repository.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([str(CLI), "validate", str(path)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header, first, second = lines[lines.index(next(line for line in lines if line.startswith("DAG ID"))) :]
    assert header.split()[-2:] == ["SETTINGS", "DESCRIPTION"]
    assert first.endswith(
        "tz=Europe/Berlin pool=pg_mainx2 priority=7 queue=refreshes stale>2h notify=failure:1,retry:1,success:1,stale:1"
        "  Nightly sales rollup"
    )
    assert re.split(r"\s{2,}", second)[-3:] == ["postgres_default", "-", "-"]


def _next_runs(dag: DAG, start: datetime, count: int) -> list[str]:
    """The next ``count`` run times Airflow's scheduler computes for ``dag`` (its serialized timetable)."""
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import TimeRestriction

    timetable = DagSerialization.from_dict(DagSerialization.to_dict(dag)).timetable
    restriction = TimeRestriction(earliest=start, latest=None, catchup=True)
    runs, last = [], None
    for _ in range(count):
        info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        assert info is not None
        last = info.data_interval
        runs.append(info.run_after.astimezone(timezone.utc).strftime("%m-%d %H:%M"))
    return runs


@pytest.mark.parametrize(
    ("zone", "start", "expected"),
    [
        # Spring forward (Berlin: Sunday 29 March 2026, 02:00 -> 03:00): 02:30 does not exist, the run is at 03:30
        # CEST (01:30 UTC), one hour later on the wall clock; from then on 02:30 CEST (00:30 UTC).
        ("Europe/Berlin", "2026-03-27", ["03-27 01:30", "03-28 01:30", "03-29 01:30", "03-30 00:30", "03-31 00:30"]),
        # Fall back (Sunday 25 October 2026, 03:00 -> 02:00): 02:30 happens twice; one run, at the second one
        # (02:30 CET, 01:30 UTC), not at 02:30 CEST (00:30 UTC).
        ("Europe/Berlin", "2026-10-23", ["10-23 00:30", "10-24 00:30", "10-25 01:30", "10-26 01:30", "10-27 01:30"]),
        # New York: Sunday 8 March 2026 (02:00 -> 03:00) and Sunday 1 November 2026 (02:00 -> 01:00).
        ("America/New_York", "2026-03-06", ["03-06 07:30", "03-07 07:30", "03-08 07:30", "03-09 06:30", "03-10 06:30"]),
        ("America/New_York", "2026-10-30", ["10-30 06:30", "10-31 06:30", "11-01 07:30", "11-02 07:30", "11-03 07:30"]),
    ],
)
def test_a_local_cron_runs_once_a_night_across_dst_changes(zone: str, start: str, expected: list[str]) -> None:
    dag = build_dags({"views": [{"name": "public.nightly", "schedule": "30 2 * * *", "timezone": zone}]})[
        "matview.public.nightly"
    ]
    begin = datetime.fromisoformat(start).replace(tzinfo=timezone.utc)
    assert _next_runs(dag, begin, 5) == expected


def test_a_skipped_time_runs_later_by_the_size_of_the_jump_and_the_doc_says_so() -> None:
    view = {"name": "public.nightly", "schedule": "15 2 * * *", "timezone": "Australia/Lord_Howe"}
    dag = build_dags({"views": [view]})["matview.public.nightly"]
    # Lord Howe Island moves its clocks by 30 minutes (Sunday 4 October 2026, 02:00 -> 02:30): 02:15 does not
    # exist that night; the run is at 02:45 (+11:00, 15:45 UTC the day before), 30 minutes later on the wall clock.
    assert _next_runs(dag, datetime(2026, 10, 2, tzinfo=timezone.utc), 4) == [
        "10-02 15:45",
        "10-03 15:45",
        "10-04 15:15",
        "10-05 15:15",
    ]
    assert "a time skipped when clocks go forward runs later by the size of the jump" in (dag.doc_md or "")


def test_a_local_cron_keeps_its_wall_clock_time_for_a_whole_dst_week() -> None:
    dag = build_dags({"views": [{"name": "public.hourly", "schedule": "0 9 * * 1-5", "timezone": "America/New_York"}]})[
        "matview.public.hourly"
    ]
    runs = _next_runs(dag, datetime(2026, 3, 5, tzinfo=timezone.utc), 5)
    # 09:00 in New York every weekday: 14:00 UTC before Sunday 8 March, 13:00 UTC after.
    assert runs == ["03-05 14:00", "03-06 14:00", "03-09 13:00", "03-10 13:00", "03-11 13:00"]


def test_parsing_1000_views_with_every_production_key_touches_no_database_or_network(tmp_path: Path) -> None:
    keys = {**ALL_KEYS, "on_success": ALL_KEYS["on_failure"]}
    config = {"defaults": keys, "views": [{"name": f"public.view_{index:04d}"} for index in range(1000)]}
    folder = dags_folder(tmp_path, config)
    env = {
        **os.environ,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://nobody@127.0.0.1:9/none",  # any metadata-DB use fails
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    probe = subprocess.run(
        [sys.executable, "-c", PARSE_PROBE, str(folder / "matviews.py")], env=env, capture_output=True, text=True
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    dags, events, seconds, kinds = probe.stdout.splitlines()[-1].split(maxsplit=3)
    assert (dags, events) == ("1000", "0"), kinds
    print(f"1000 views with every production key parsed in {seconds}s")


def test_check_notes_pools_it_cannot_read_without_failing_the_view(tmp_path: Path, database: Database) -> None:
    with database.connect() as conn:
        conn.execute("CREATE MATERIALIZED VIEW public.pooled AS SELECT 1 AS x")
    path = tmp_path / "matviews.yaml"
    path.write_text(yaml.safe_dump({"views": [{"name": "public.pooled", "pool": "pg_main"}]}))
    env = {**os.environ, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://nobody@127.0.0.1:9/none"}
    done = subprocess.run(
        [str(CLI), "check", str(path), "--dsn", database.dsn], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK      public.pooled" in done.stdout
    assert "        pool: not checked: cannot read Airflow's pools (OperationalError: " in done.stdout


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
    ("key", "value"),
    [
        ("webhook", "https://ops:hunter2@hooks.example.com/alert"),
        ("url", "https://hooks.slack.com/services/T000/B000/hunter2"),
        ("url", "https://alerts.example.com/hook?api_key=hunter2"),
        ("headers", {"Authorization": "Bearer hunter2"}),
        ("targets", ["ops@example.com", "https://u:hunter2@example.com"]),
    ],
)
def test_a_credential_inside_a_notifier_argument_is_refused_and_not_repeated(key: str, value: object) -> None:
    notifier = {"notifier": f"{RECORDING}.record", "label": "x", key: value}
    with pytest.raises(InvalidConfigFileError) as raised:
        load_config({"views": [{"name": "public.a", "on_failure": [notifier]}]})
    assert raised.value.problems == [
        f"views[0] (public.a): on_failure: item 1: {RECORDING}.record: {key} would put a credential "
        "into the config file (not repeated here); keep it in an Airflow connection and pass the connection's id "
        "(e.g. smtp_conn_id)"
    ]
    assert "hunter2" not in str(raised.value)


def test_a_coroutine_function_notifier_is_awaited_for_a_task_event() -> None:
    from airflow_matview.alerting.notify import TaskNotifier

    view = load_config(
        {
            "views": [
                {
                    "name": "public.a",
                    "on_success": [{"notifier": f"{RECORDING}.record_async", "label": "done"}],
                }
            ]
        }
    ).views[0]
    context: dict[str, Any] = {}
    TaskNotifier("success", view.on_success[0], "public.a", "postgres_default")(context)
    assert context["recorded"] == ["done"]


def test_on_stale_without_any_max_staleness_is_an_error_where_it_is_written() -> None:
    stale = [{"notifier": SMTP, "to": "oncall@example.com"}]
    assert problems_of({"views": [{"name": "public.a", "on_stale": stale}]}) == [
        "views[0] (public.a): on_stale: is never called without max_staleness; "
        "set max_staleness (e.g. 2h) or remove on_stale"
    ]
    assert problems_of({"defaults": {"on_stale": stale}, "views": [{"name": "public.a"}]}) == [
        "defaults: on_stale: is never called, as no view has max_staleness; "
        "set max_staleness (e.g. 2h) or remove on_stale"
    ]
    # In defaults for the views that set max_staleness; a view may opt out with max_staleness: null.
    views = load_config(
        {
            "defaults": {"on_stale": stale},
            "views": [{"name": "public.a", "max_staleness": "1h"}, {"name": "public.b", "max_staleness": None}],
        }
    ).views
    assert [view.max_staleness for view in views] == [timedelta(hours=1), None]


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


def test_edge_values_of_the_production_keys_that_validate_load_in_a_dagbag(tmp_path: Path, airflow_db: Path) -> None:
    from devtools.harness.dag_runs import DagBag, register

    stale = [
        {"notifier": f"{RECORDING}.record_async", "label": "late"},
        {"notifier": SMTP, "to": "x@y.z"},
    ]
    config = {
        "defaults": {"on_failure": [{"notifier": SMTP, "to": ["a@example.com", "b@example.com"]}]},
        "views": [
            {
                "name": "public.a",
                "timezone": "Etc/GMT+2",
                "pool": "p" * 256,
                "pool_slots": 2**31 - 1,
                "priority_weight": 2**31 - 1,
                "queue": "q" * 256,
                "description": "<b>multi</b>\nline **markdown** " + "d" * 960,
                "max_staleness": "3650d",
                "on_stale": stale,
            },
            {
                "name": "public.b",
                "timezone": "US/Eastern",
                "schedule": "@daily",
                "priority_weight": "-2147483648",
                "max_staleness": "1s",
                "after": ["public.a"],
            },
            {"name": "public.c", "timezone": "Australia/Lord_Howe", "schedule": "*/30 * * * *", "on_failure": None},
        ],
    }
    if DEADLINE_ALERTS_MISSING is not None:  # max_staleness needs Airflow 3.3+ (`make test-matrix` runs older ones)
        for view in config["views"]:
            view.pop("max_staleness", None)
            view.pop("on_stale", None)
    load_config(config)  # validates
    bag = DagBag(dag_folder=str(dags_folder(tmp_path, config)))
    assert bag.import_errors == {}
    assert len(bag.dags) == 3
    register(*bag.dags.values())  # serialized (Deadline Alerts and timetables included) and written to the DB


def test_a_too_long_pool_or_queue_name_is_not_repeated_in_full() -> None:
    assert problems_of({"views": [{"name": "public.a", "pool": "p" * 257, "queue": "q" * 300}]}) == [
        f"views[0] (public.a): pool: {'p' * 20!r}... (257 characters) is not a pool name; use up to 256 letters, "
        "digits, _ . and - (e.g. pg_main)",
        f"views[0] (public.a): queue: {'q' * 20!r}... (300 characters) is not a queue name; use up to 256 letters, "
        "digits, _ . and - (e.g. refreshes)",
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


def test_the_description_leads_the_dag_doc_and_may_not_hold_control_characters() -> None:
    dag = build_dags({"views": [{"name": "public.sales", "description": "Sales per shop,\nfor the morning report"}]})[
        "matview.public.sales"
    ]
    assert (dag.doc_md or "").split("\n\n")[1] == "Sales per shop,\nfor the morning report"
    plain = build_dags({"views": [{"name": "public.x"}]})["matview.public.x"].doc_md or ""
    assert plain.split("\n\n")[1].startswith("- schedule: `@daily`")
    assert problems_of({"views": [{"name": "public.a", "description": "bell\x07 and tab\tok"}]}) == [
        "views[0] (public.a): description: 'bell\\x07 and tab\\tok' holds the control character '\\x07', which would "
        "garble the listings that show it; remove it (line breaks and tabs are fine)"
    ]
