"""Config validation: every problem is reported with the file, the view and the key, and what is allowed."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

from airflow_matview.config import InvalidConfigFileError, default_dag_id, load_config
from airflow_matview.database.identifiers import QualifiedName

if TYPE_CHECKING:
    from pathlib import Path


def problems_of(config: dict[str, Any] | str | Path) -> list[str]:
    with pytest.raises(InvalidConfigFileError) as error:
        load_config(config)
    return error.value.problems


def test_defaults_apply_and_views_override_them() -> None:
    config = load_config(
        {
            "defaults": {"conn_id": "warehouse", "schedule": "@hourly", "retry_delay": "30s", "retries": 4},
            "views": [
                {"name": "public.a"},
                {"name": "public.b", "schedule": None, "retry_delay": 90, "execution_timeout": "2h"},
                {"name": "public.c", "lock_timeout": "1d", "concurrently": False, "dag_id": "custom"},
            ],
        }
    )
    a, b, c = config.views
    assert (a.conn_id, a.schedule, a.retry_delay, a.retries) == ("warehouse", "@hourly", timedelta(seconds=30), 4)
    assert (b.schedule, b.retry_delay, b.execution_timeout) == (None, timedelta(seconds=90), timedelta(hours=2))
    assert (c.lock_timeout, c.concurrently, c.resolved_dag_id) == (timedelta(days=1), False, "custom")
    assert a.resolved_dag_id == "matview.public.a"


def test_default_dag_id_replaces_characters_airflow_does_not_allow() -> None:
    assert default_dag_id(QualifiedName("Sales Report", 'Q1 "Totals"')) == "matview.Sales_Report.Q1__Totals_"


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        ({"colour": "blue"}, "views[0] (public.a): colour: unknown key; allowed keys are after, analyze,"),
        ({"schedule": "every day"}, "views[0] (public.a): schedule: 'every day' is not a cron expression or preset"),
        ({"schedule": "61 * * * *"}, "views[0] (public.a): schedule: '61 * * * *' is not a cron expression"),
        (
            {"retry_delay": "5 minutes"},
            "views[0] (public.a): retry_delay: '5 minutes' is not a duration; use 500ms, 30s",
        ),
        ({"lock_timeout": -3}, "views[0] (public.a): lock_timeout: -3 is negative"),
        ({"execution_timeout": True}, "views[0] (public.a): execution_timeout: True is not a duration"),
        (
            {"concurrently": "maybe"},
            "views[0] (public.a): concurrently: 'maybe' is not allowed; use auto, true or false",
        ),
        ({"retries": -1}, "views[0] (public.a): retries: Input should be greater than or equal to 0"),
        ({"dag_id": "has space"}, "views[0] (public.a): dag_id: 'has space' is not a valid DAG id"),
        ({"conn_id": "bad id!"}, "views[0] (public.a): conn_id: 'bad id!' is not an Airflow connection id"),
        ({"after": ["no_schema"]}, "views[0] (public.a): after: 'no_schema' has no schema; write schema.name"),
    ],
)
def test_bad_view_settings_are_named(view: dict[str, Any], expected: str) -> None:
    problems = problems_of({"views": [{"name": "public.a", **view}]})
    assert len(problems) == 1
    assert problems[0].startswith(expected), problems[0]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("x; DROP TABLE polls_user", "views[0] (x; DROP TABLE polls_user): name: 'x; DROP TABLE polls_user' is not"),
        ("polls_user_matt_view", "name: 'polls_user_matt_view' has no schema; write schema.name"),
        ("a.b.c", "has 3 dotted parts"),
    ],
)
def test_bad_view_names_are_named(name: str, expected: str) -> None:
    assert expected in problems_of({"views": [{"name": name}]})[0]


@pytest.mark.parametrize("conn_id", ["postgresql://u:s3cret@db/x", "host=db user=app password=s3cret", "app:s3cret@db"])
def test_a_connection_string_as_conn_id_is_rejected_without_echoing_the_password(conn_id: str) -> None:
    (problem,) = problems_of({"views": [{"name": "public.a", "conn_id": conn_id}]})
    assert "not repeated here, as it may hold a password" in problem
    assert "s3cret" not in problem


def test_bad_defaults_are_reported_once_under_defaults() -> None:
    problems = problems_of({"defaults": {"schedule": "hourly"}, "views": [{"name": "public.a"}, {"name": "public.b"}]})
    assert problems == [
        "defaults: schedule: 'hourly' is not a cron expression or preset; use 5 cron fields such as '*/5 * * * *', "
        "one of @once, @continuous, @hourly, @daily, @weekly, @monthly, @quarterly, @yearly, or null for manual "
        "runs only"
    ]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"views": []}, "file: views: no views configured; list at least one under 'views:'"),
        ({"defaults": {}}, "file: views: required key is missing"),
        ({"views": [{"schedule": "@daily"}]}, "views[0]: name: required key is missing"),
        ({"view": [{"name": "public.a"}]}, "file: view: unknown key"),
        (
            {"views": [{"name": "public.a"}, {"name": 'public."a"'}]},
            "views[1] (public.\"a\"): name: public.a on connection 'postgres_default' is listed twice (also views[0]); "
            "list each view once",
        ),
        (
            {"views": [{"name": 'public."a b"'}, {"name": "public.a_b"}]},
            "views[1] (public.a_b): dag_id: DAG id 'matview.public.a_b' is also the DAG id of views[0] "
            '(public."a b"); set a distinct dag_id on one of them',
        ),
        (
            {"views": [{"name": "public.a", "after": ["public.missing"]}]},
            "views[0] (public.a): after: public.missing is not a view in this file on connection 'postgres_default'",
        ),
        (
            {"views": [{"name": "public.a", "conn_id": "other"}, {"name": "public.b", "after": ["public.a"]}]},
            "views[1] (public.b): after: public.a is not a view in this file on connection 'postgres_default'; "
            "after: may only name views listed under 'views:' with the same conn_id",
        ),
        (
            {
                "views": [
                    {"name": "public.a", "after": ["public.c"]},
                    {"name": "public.b", "after": ["public.a"]},
                    {"name": "public.c", "after": ["public.b"]},
                ]
            },
            "after: views wait for each other in a cycle: public.",
        ),
    ],
)
def test_file_level_problems_are_named(config: dict[str, Any], expected: str) -> None:
    assert any(problem.startswith(expected) for problem in problems_of(config)), problems_of(config)


def test_one_view_name_in_two_databases_gives_two_dags_with_their_own_chains() -> None:
    from airflow_matview.factory import build_dags

    dags = build_dags(
        {
            "views": [
                {"name": "public.a", "conn_id": "eu"},
                {"name": "public.a", "conn_id": "us", "dag_id": "us_a"},
                {"name": "public.b", "conn_id": "us", "after": ["public.a"]},
            ]
        }
    )
    assert sorted(dags) == ["matview.public.a", "matview.public.b", "us_a"]
    (upstream,) = dags["matview.public.b"].timetable.asset_condition.objects  # type: ignore[attr-defined]
    assert upstream.uri == "matview://us/public/a"


def test_a_cycle_names_every_view_in_it() -> None:
    (problem,) = problems_of(
        {
            "views": [
                {"name": "public.a", "after": ["public.b"]},
                {"name": "public.b", "after": ["public.a"]},
                {"name": "public.c", "after": ["public.a"]},
            ]
        }
    )
    assert "public.a -> public.b -> public.a" in problem or "public.b -> public.a -> public.b" in problem
    assert "public.c" not in problem


def test_the_file_is_named_in_every_error(tmp_path: Path) -> None:
    path = tmp_path / "matviews.yaml"
    path.write_text("views:\n  - name: public.a\n    schedule: sometimes\n")
    with pytest.raises(InvalidConfigFileError) as error:
        load_config(path)
    assert str(error.value).startswith(f"Invalid matview config {path}: 1 problem(s):\n  - views[0] (public.a):")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("views: [\n", "not valid YAML"),
        ("- just\n- a list\n", "the file must be a mapping with 'views:'"),
        ("views:\n  - !!python/object/apply:os.system ['true']\n", "not valid YAML"),
    ],
)
def test_unparseable_files_are_rejected_safely(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "matviews.yaml"
    path.write_text(text)
    assert expected in problems_of(path)[0]


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "nope.yaml") == ["cannot read the file: No such file or directory"]


# ------------------------------------------------------------------------------------- typing rules, one row each


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"retries": 3}, ("retries", 3)),
        ({"retries": "3"}, ("retries", 3)),  # a count may be quoted, as a duration may be "90"
        ({"retries": 0}, ("retries", 0)),
        ({"retry_delay": "90"}, ("retry_delay", timedelta(seconds=90))),
        ({"retry_delay": 90}, ("retry_delay", timedelta(seconds=90))),
        ({"retry_delay": 0}, ("retry_delay", timedelta(0))),  # retry at once
        ({"lock_timeout": None}, ("lock_timeout", None)),  # wait without limit
        ({"lock_timeout": "1ms"}, ("lock_timeout", timedelta(milliseconds=1))),
        ({"execution_timeout": None}, ("execution_timeout", None)),
        ({"analyze": "TRUE"}, ("analyze", True)),
        ({"skip_if_unchanged": "false"}, ("skip_if_unchanged", False)),
        ({"retry_exponential_backoff": True}, ("retry_exponential_backoff", True)),
        ({"concurrently": "Auto"}, ("concurrently", "auto")),
        ({"concurrently": "false"}, ("concurrently", False)),
        ({"schedule": "0 0 29 2 *"}, ("schedule", "0 0 29 2 *")),  # leap days only, but it fires
        ({"schedule": "@annually"}, ("schedule", "@annually")),
        ({"schedule": "0 9 * * FRI"}, ("schedule", "0 9 * * FRI")),  # month and day names with an R are not R
        ({"schedule": "0 0 1 MAR-APR *"}, ("schedule", "0 0 1 MAR-APR *")),
        ({"schedule": "0 0 * * 0-7"}, ("schedule", "0 0 * * 0-7")),  # every day, as in cron
        ({"tags": ["x" * 100]}, ("tags", ["x" * 100])),
    ],
)
def test_accepted_values_and_what_they_mean(setting: dict[str, Any], expected: tuple[str, object]) -> None:
    (view,) = load_config({"views": [{"name": "public.a", **setting}]}).views
    key, value = expected
    assert getattr(view, key) == value


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"retries": True}, "retries: True is not a whole number; use 0, 1, 2, ..."),
        ({"retries": 1.5}, "retries: 1.5 is not a whole number; use 0, 1, 2, ..."),
        ({"retries": "three"}, "retries: 'three' is not a whole number; use 0, 1, 2, ..."),
        ({"retries": 1001}, "retries: Input should be less than or equal to 1000"),
        ({"lock_timeout": 0}, "lock_timeout: 0 is less than a millisecond, which PostgreSQL reads as 'no limit'"),
        ({"lock_timeout": 0.0001}, "lock_timeout: 0.0001 is less than a millisecond"),
        ({"execution_timeout": "0s"}, "execution_timeout: '0s' is less than a millisecond"),
        ({"retry_delay": True}, "retry_delay: True is not a duration"),
        ({"analyze": 1}, "analyze: 1 is not allowed; use true or false"),
        ({"analyze": "yes"}, "analyze: 'yes' is not allowed; use true or false"),
        ({"skip_if_unchanged": None}, "skip_if_unchanged: None is not allowed; use true or false"),
        ({"schedule": "0 0 31 2 *"}, "schedule: '0 0 31 2 *' never fires (no date matches it, e.g. February 31st)"),
        ({"schedule": "0 0 31 4,6,9,11 *"}, "schedule: '0 0 31 4,6,9,11 *' never fires"),
        ({"schedule": "R 3 * * *"}, "schedule: 'R 3 * * *' uses R (a random time)"),
        ({"schedule": "0 0 * * * *"}, "schedule: '0 0 * * * *' is not a cron expression or preset"),
        # croniter (Airflow's cron library) reads a range whose ends are equal as the whole field: every hour
        (
            {"schedule": "0 3-3 * * *"},
            "schedule: '0 3-3 * * *' has the range 3-3, whose two ends are the same hour: Airflow's cron library "
            "(croniter) reads that as every hour, not the one; write 3",
        ),
        ({"schedule": "1-1,30 * * * *"}, "schedule: '1-1,30 * * * *' has the range 1-1, whose two ends"),
        ({"schedule": "0 0 * * Mon-MON/2"}, "schedule: '0 0 * * Mon-MON/2' has the range Mon-MON, whose two ends"),
        ({"schedule": "0 0 31 2-2 *"}, "schedule: '0 0 31 2-2 *' has the range 2-2, whose two ends are the same month"),
        ({"schedule": "@Daily"}, "schedule: '@Daily' is not a preset as written; write '@daily'"),
        ({"tags": ["x" * 101]}, "tags: 'xxxxxxxxxxxxxxxxxxxx'... is 101 characters; Airflow allows at most 100"),
        ({"tags": [""]}, "tags: a tag is empty; remove it or give it a name"),
        ({"tags": "reporting"}, "tags: 'reporting' is not a list; write e.g. 'tags: [reporting]'"),
        ({"owner": ""}, "owner: is empty; name the team or person who looks after these DAGs, or leave it out"),
        ({"owner": None}, "owner: is empty (null); write a value, or leave the key out for its default"),
        ({"conn_id": None}, "conn_id: is empty (null); write a value, or leave the key out for its default"),
        ({"tags": [None]}, "tags.0: is empty (null); write a value, or remove the item"),
        ({"schedule": ["@daily"]}, "schedule: ['@daily'] is not text; write one value, e.g. schedule: text"),
        ({"owner": {"a": 1}}, "owner: {'a': 1} is not text; write one value, e.g. owner: text"),
        ({"owner": "o" * 501}, "owner: is 501 characters; Airflow allows at most 500"),
    ],
)
def test_refused_values_say_what_is_allowed(setting: dict[str, Any], expected: str) -> None:
    (problem,) = problems_of({"views": [{"name": "public.a", **setting}]})
    assert problem.startswith(f"views[0] (public.a): {expected}"), problem


def test_an_empty_defaults_block_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "matviews.yaml"
    path.write_text("defaults:\n  # conn_id: warehouse\n  # schedule: '@hourly'\nviews:\n  - name: public.a\n")
    (view,) = load_config(path).views
    assert (view.conn_id, view.schedule) == ("postgres_default", "@daily")


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"view": [], "views": [{"name": "public.a"}]},
            "file: view: unknown key; did you mean views? allowed keys at the top level are defaults, views",
        ),
        (
            {"defaults": {"name": "public.a"}, "views": [{"name": "public.a"}]},
            "defaults: name: unknown key; allowed keys are analyze, concurrently, conn_id, deferrable, description, "
            "execution_timeout, finish_on_worker, history, history_retention, lock_timeout, max_staleness, "
            "min_interval, on_change, on_failure, on_overlap, on_retry, on_stale, on_success, owner, poll_interval, "
            "pool, pool_slots, priority_weight, queue, retries, retry_delay, retry_exponential_backoff, schedule, "
            "skip_if_unchanged, start_from_trigger, tags, target_lag, timezone",
        ),
        (
            {"views": [{"name": "public.a", "colour": "blue"}]},
            "views[0] (public.a): colour: unknown key; allowed keys are after, analyze, concurrently, conn_id, "
            "dag_id, deferrable, description, execution_timeout, finish_on_worker, history, history_retention, "
            "lock_timeout, max_staleness, "
            "min_interval, name, on_change, on_failure, on_overlap, on_retry, on_stale, on_success, owner, "
            "poll_interval, pool, pool_slots, priority_weight, queue, retries, retry_delay, "
            "retry_exponential_backoff, schedule, skip_if_unchanged, start_from_trigger, tags, target_lag, timezone",
        ),
    ],
    ids=["top-level", "defaults", "view"],
)
def test_an_unknown_key_lists_the_keys_of_its_level(config: dict[str, Any], expected: str) -> None:
    assert problems_of(config) == [expected]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "public.MixedCase",
            "name: 'public.MixedCase' has capitals outside double quotes, which PostgreSQL folds to lower case "
            "(public.mixedcase); write 'public.mixedcase' if that is the view, or 'public.\"MixedCase\"' to keep "
            "the case",
        ),
        (
            "Sales.Totals",
            "name: 'Sales.Totals' has capitals outside double quotes, which PostgreSQL folds to lower case "
            "(sales.totals); write 'sales.totals' if that is the view, or '\"Sales\".\"Totals\"' to keep the case",
        ),
        ("Sales Report.Q1 Totals", 'Here that is \'"Sales Report"."Q1 Totals"\'.'),  # YAML ate the quotes
        ("public.Sales Report", "Here that is 'public.\"Sales Report\"'."),
        (
            '"Sales Report.Q1 Totals"',
            "the dot is inside the double quotes, so this is one name; quote each part on its own: "
            '\'"Sales Report"."Q1 Totals"\'',
        ),
    ],
)
def test_names_that_sql_would_read_differently_get_the_spelling_to_use(name: str, expected: str) -> None:
    (problem,) = problems_of({"views": [{"name": name}]})
    assert problem.startswith(f"views[0] ({name}): name: ") and problem.endswith(expected), problem


def test_after_entries_get_the_same_spelling_hints() -> None:
    (problem,) = problems_of({"views": [{"name": "public.a", "after": ["public.Upstream"]}]})
    assert problem == (
        "views[0] (public.a): after: 'public.Upstream' has capitals outside double quotes, which PostgreSQL folds "
        "to lower case (public.upstream); write 'public.upstream' if that is the view, or 'public.\"Upstream\"' to "
        "keep the case"
    )


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"views": ["public.a"]},
            "views[0]: 'public.a' is not a mapping; write each view as '- name: schema.view' with its keys below it",
        ),
        (
            {"views": {"name": "public.a"}},
            "file: views: {'name': 'public.a'} is not a list; write e.g. '- name: schema.view' for each view, one per "
            "line under 'views:'",
        ),
        ({"defaults": [1], "views": [{"name": "public.a"}]}, "defaults: [1] is not a mapping; write one 'key: value'"),
        (
            {"views": [{"name": "public.a", "after": "public.b"}]},
            "views[0] (public.a): after: 'public.b' is not a list; write e.g. 'after: [public.a]'",
        ),
        ({"views": [{"name": "public.a", "tags": None}]}, "views[0] (public.a): tags: None is not a list"),
    ],
)
def test_a_value_of_the_wrong_shape_gets_the_shape_to_write(config: dict[str, Any], expected: str) -> None:
    (problem,) = problems_of(config)
    assert problem.startswith(expected), problem


def test_croniter_reads_a_range_with_equal_ends_as_the_whole_field() -> None:
    """Why `validate` refuses `3-3`: Airflow's timetables use croniter, which would run such a DAG every hour."""
    from croniter import croniter

    assert croniter("0 3-3 * * *").expanded[1] == ["*"]
    assert croniter("0 3 * * *").expanded[1] == [3]


@pytest.mark.parametrize(
    ("name", "shown", "char"),
    [
        ('public."bad\nname"', 'public."bad\\nname"', "'\\n'"),
        ('public."tab\there"', 'public."tab\\there"', "'\\t'"),
        ('public."bell\x07"', 'public."bell\\x07"', "'\\x07'"),
        ('"sch\x85ema".v', '"sch\\x85ema".v', "'\\x85'"),
        ('public."evil\u202etxt.exe"', 'public."evil\\u202etxt.exe"', "'\\u202e'"),
        ("bad\nname", "bad\\nname", "'\\n'"),
    ],
    ids=["newline", "tab", "bell", "c1-in-schema", "bidi-override", "unquoted"],
)
def test_a_name_with_a_control_character_is_refused_on_one_line(name: str, shown: str, char: str) -> None:
    """PostgreSQL accepts these in quoted names; the config refuses them, and its message shows them escaped."""
    config = {"views": [{"name": "public.a"}, {"name": "public.b", "after": [name]}, {"name": name}]}
    with pytest.raises(InvalidConfigFileError) as raised:
        load_config(config)
    expected = (
        f"holds the control character {char}: PostgreSQL accepts it in a quoted name, but it would break the "
        "listings, DAG docs and logs that show the name; rename the view in PostgreSQL (ALTER MATERIALIZED VIEW ... "
        "RENAME TO ...) and write its new name here"
    )
    assert raised.value.problems == [
        f"views[1] (public.b): after: {name!r} {expected}",
        f"views[2] ({shown}): name: {name!r} {expected}",
    ]
    for line in str(raised.value).splitlines()[1:]:
        assert line.startswith("  - views["), line


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        ({"retries": "\u0661\u0662"}, "retries: '\u0661\u0662' is not a whole number; use 0, 1, 2, ..."),
        ({"lock_timeout": "\uff15s"}, "lock_timeout: '\uff15s' is not a duration; use 500ms, 30s, 5m, 1h, 1d or a"),
        ({"pool_slots": "\uff12"}, "pool_slots: '\uff12' is not allowed"),
        (
            {"schedule": "0 2 * * *\n"},
            "schedule: '0 2 * * *\\n' holds the control character '\\n' (a YAML block scalar, schedule: |, ends with "
            "a line break); write it on one line: '0 2 * * *'",
        ),
        ({"tags": ["a\nb"]}, "tags: 'a\\nb' holds the control character '\\n'; write each tag on one line"),
        ({"owner": "me\tyou"}, "owner: 'me\\tyou' holds the control character '\\t'; write the owner on one line"),
        ({"schedul": "@daily"}, "schedul: unknown key; did you mean schedule? allowed keys are after,"),
    ],
    ids=["non-ascii-digits", "fullwidth-duration", "fullwidth-count", "cron-line-break", "tag", "owner", "typo"],
)
def test_values_that_would_be_misread_or_break_a_line_are_refused(view: dict[str, Any], expected: str) -> None:
    (problem,) = problems_of({"views": [{"name": "public.a", **view}]})
    assert problem.startswith(f"views[0] (public.a): {expected}"), problem


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        ({"retry_delay": 10**400}, "retry_delay: 1000000000000000000000000000000000000000... is out of range; use at"),
        ({"retries": "9" * 5000}, "retries: '99999999999999999999'... is too large; use 0, 1, 2, ..."),
        ({"retry_delay": None}, "retry_delay: is empty (null); write a duration such as 5m, or leave the key out"),
    ],
    ids=["huge-duration", "huge-count-text", "null-duration"],
)
def test_huge_and_empty_values_get_a_short_clear_line(view: dict[str, Any], expected: str) -> None:
    (problem,) = problems_of({"views": [{"name": "public.a", **view}]})
    assert problem.startswith(f"views[0] (public.a): {expected}"), problem
    assert len(problem) < 200
