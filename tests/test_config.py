"""Config validation: every problem is reported with the file, the view and the key, and what is allowed."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

from airflow_matview.config import MatviewConfigError, default_dag_id, load_config
from airflow_matview.identifiers import QualifiedName

if TYPE_CHECKING:
    from pathlib import Path


def problems_of(config: dict[str, Any] | str | Path) -> list[str]:
    with pytest.raises(MatviewConfigError) as error:
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
    with pytest.raises(MatviewConfigError) as error:
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
