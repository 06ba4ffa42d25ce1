"""``airflow-matview discover`` against real servers: a valid config in dependency order, and its refusals."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import yaml
from psycopg import sql

from airflow_matview.config import load_config
from devtools.harness.console_script import assert_one_clean_line, cli
from devtools.harness.pgcluster import free_port
from devtools.harness.scenario import create_reference_scenario

if TYPE_CHECKING:
    from pathlib import Path

    import psycopg

    from devtools.harness.databases import Database


def test_discover_writes_a_valid_config_in_dependency_order(
    pg: psycopg.Connection, postgres_default: Database, tmp_path: Path
) -> None:
    create_reference_scenario(pg)
    pg.execute("CREATE SCHEMA reporting")
    # z_rollup reads polls_user_matt_view directly; a_summary reads z_rollup through a plain view:
    # alphabetical order would put them the wrong way round.
    pg.execute("CREATE MATERIALIZED VIEW reporting.z_rollup AS SELECT count(*) AS n FROM polls_user_matt_view")
    pg.execute("CREATE VIEW reporting.rollup_view AS SELECT n FROM reporting.z_rollup")
    pg.execute("CREATE MATERIALIZED VIEW reporting.a_summary AS SELECT n * 2 AS twice FROM reporting.rollup_view")
    pg.execute('CREATE MATERIALIZED VIEW reporting."Odd Name" AS SELECT 1 AS one')

    done = cli("discover", "--conn-id", "postgres_default")

    assert done.returncode == 0, done.stderr
    generated = tmp_path / "discovered.yaml"
    generated.write_text(done.stdout)
    config = load_config(generated)
    order = [view.name for view in config.views]
    assert sorted(order) == sorted(
        ['reporting."Odd Name"', "public.polls_user_matt_view", "reporting.z_rollup", "reporting.a_summary"]
    )
    assert order.index("public.polls_user_matt_view") < order.index("reporting.z_rollup")
    assert order.index("reporting.z_rollup") < order.index("reporting.a_summary")
    after = {view.name: view.after for view in config.views}
    assert after["reporting.z_rollup"] == ["public.polls_user_matt_view"]
    assert after["reporting.a_summary"] == ["reporting.z_rollup"]
    assert after["public.polls_user_matt_view"] == []

    only_reporting = cli("discover", "--conn-id", "postgres_default", "--schema", "reporting")
    names = [view["name"] for view in yaml.safe_load(only_reporting.stdout)["views"]]
    assert "public.polls_user_matt_view" not in names
    assert len(names) == 3


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (
            "host=127.0.0.1 port={port} user=app password=Sup3rSecret dbname=x",
            "airflow-matview discover: cannot connect with --dsn: connection failed: connection to server at "
            '"127.0.0.1", port {port} failed: Connection refused',
        ),
        (
            "postgresql://app:Sup3rSecret@127.0.0.1:{port}/x",
            "airflow-matview discover: cannot connect with --dsn: connection failed: connection to server at "
            '"127.0.0.1", port {port} failed: Connection refused',
        ),
        (
            "host=127.0.0.1 password=Sup3r Secret",
            'airflow-matview discover: --dsn is not a valid libpq connection string or URI (missing "=" after '
            '"(hidden)" in connection info string)',
        ),
        (
            "postgresql://app:Sup3r%zzSecret@127.0.0.1/x",
            "airflow-matview discover: --dsn is not a valid libpq connection string or URI (invalid "
            'percent-encoded token: "(hidden)")',
        ),
    ],
    ids=["refused-keywords", "refused-uri", "unparsable-keywords", "unparsable-uri"],
)
def test_discover_with_a_bad_dsn_says_so_in_one_line_without_the_password(dsn: str, expected: str) -> None:
    port = free_port()
    done = cli("discover", "--dsn", dsn.format(port=port))
    message = assert_one_clean_line(done, 3 if "refused" in expected else 2, "Sup3r", "Secret")
    assert message.startswith(expected.format(port=port)), message


def test_discover_help_states_the_real_defaults() -> None:
    done = cli("discover", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "each view's conn_id" not in text
    assert "--conn-id CONN_ID connect through this Airflow connection; also the config's conn_id" in text
    assert "(the config gets postgres_default)" in text
    assert "folded to lower case unless double-quoted, as in SQL" in text


def test_discover_gives_distinct_dag_ids_to_names_that_would_collide(
    pg: psycopg.Connection, postgres_default: Database, tmp_path: Path
) -> None:
    for name in ["café", "cafè", "a b", "a_b", "plain"]:
        pg.execute(sql.SQL("CREATE MATERIALIZED VIEW {} AS SELECT 1 AS one").format(sql.Identifier("public", name)))

    done = cli("discover", "--conn-id", "postgres_default")

    assert done.returncode == 0, done.stderr
    generated = tmp_path / "discovered.yaml"
    generated.write_bytes(done.stdout.encode())
    validated = cli("validate", str(generated))
    assert validated.returncode == 0, validated.stderr
    views = {view.view.name: view.resolved_dag_id for view in load_config(generated).views}
    assert sorted(views) == sorted(["café", "cafè", "a b", "a_b", "plain"])
    assert len(set(views.values())) == 5
    assert views["plain"] == "matview.public.plain"  # only colliding names get an explicit dag_id
    assert views["café"].startswith("matview.public.caf_.")
    assert views["a b"].startswith("matview.public.a_b.")


def test_discover_refuses_an_empty_database_and_a_missing_schema(
    pg: psycopg.Connection, postgres_default: Database
) -> None:
    message = assert_one_clean_line(cli("discover", "--conn-id", "postgres_default"), 1)
    assert message == (
        f"airflow-matview discover: no materialized view in any schema of database {postgres_default.name}; "
        "nothing to write"
    )
    message = assert_one_clean_line(cli("discover", "--conn-id", "postgres_default", "--schema", "nowhere"), 1)
    assert message.startswith(
        f"airflow-matview discover: schema nowhere does not exist in database {postgres_default.name}"
    )


def test_discover_schema_folds_case_like_sql(pg: psycopg.Connection, postgres_default: Database) -> None:
    pg.execute("CREATE SCHEMA reporting")
    pg.execute('CREATE SCHEMA "Reporting"')
    pg.execute("CREATE MATERIALIZED VIEW reporting.lower_one AS SELECT 1 AS one")
    pg.execute('CREATE MATERIALIZED VIEW "Reporting".upper_one AS SELECT 1 AS one')

    def names(*schema_args: str) -> list[str]:
        done = cli("discover", "--conn-id", "postgres_default", *schema_args)
        assert done.returncode == 0, done.stderr
        return [view["name"] for view in yaml.safe_load(done.stdout)["views"]]

    assert names("--schema", "REPORTING") == ["reporting.lower_one"]
    assert names("--schema", '"Reporting"') == ['"Reporting".upper_one']


def test_discover_leaves_out_a_view_whose_name_holds_a_newline_and_says_so(
    pg: psycopg.Connection, postgres_default: Database, tmp_path: Path
) -> None:
    create_reference_scenario(pg)
    pg.execute('CREATE MATERIALIZED VIEW "two\nlines" AS SELECT 1 AS one')
    pg.execute('CREATE MATERIALIZED VIEW built_on_it AS SELECT one FROM "two\nlines"')
    done = cli("discover", "--conn-id", "postgres_default")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "airflow-matview discover: left out public.\"two\\nlines\": its name holds the control character '\\n', "
        'which the config refuses; rename it (ALTER MATERIALIZED VIEW public."two\\nlines" RENAME TO ...) and run '
        "discover again (the after: of public.built_on_it leaves it out)"
    ]
    generated = tmp_path / "discovered.yaml"
    generated.write_text(done.stdout)
    views = {view.name: view.after for view in load_config(generated).views}
    assert views == {"public.polls_user_matt_view": [], "public.built_on_it": []}


def test_a_bad_schema_argument_is_called_a_schema_name() -> None:
    done = cli("discover", "--conn-id", "postgres_default", "--schema", "a\nb")
    assert assert_one_clean_line(done, 2).startswith(
        "airflow-matview discover: --schema: 'a\\nb' is not a valid schema name: unexpected '\\n' at position 2."
    )
