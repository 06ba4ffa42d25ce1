"""The ``airflow-matview`` console script: validate, check and discover, against a real server."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from psycopg import sql

from airflow_matview.config import load_config
from devtools.harness.pgcluster import free_port
from devtools.harness.scenario import create_reference_scenario
from tests.conftest import AIRFLOW_BIN, REPO

if TYPE_CHECKING:
    import psycopg

    from tests.conftest import Database

CLI = Path(sys.executable).parent / "airflow-matview"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, env=os.environ, timeout=120)


def test_validate_lists_the_dags_it_would_build() -> None:
    done = cli("validate", str(REPO / "dags" / "matviews.yaml"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith("matviews.yaml: OK, 1 DAG(s)")
    assert lines[1].split() == ["DAG", "ID", "VIEW", "SCHEDULE", "CONNECTION", "SETTINGS"]
    assert lines[2].split() == [
        "matview.public.polls_user_matt_view",
        "public.polls_user_matt_view",
        "@daily",
        "postgres_default",
        "-",
    ]


def test_validate_says_when_a_view_runs_after_its_upstream(tmp_path: Path) -> None:
    path = tmp_path / "matviews.yaml"
    path.write_text(
        "views:\n  - name: public.a\n  - name: public.b\n    after: [public.a]\n"
        "  - name: public.c\n    after: [public.a, public.b]\n    schedule: '*/5 * * * *'\n"
        "  - name: public.d\n    schedule: null\n"
    )
    done = cli("validate", str(path))
    assert done.returncode == 0, done.stderr
    rows = [re.split(r"\s{2,}", line) for line in done.stdout.splitlines()[1:]]
    assert [row[2] for row in rows] == [
        "SCHEDULE",
        "@daily",
        "after public.a",
        "after public.a, public.b + */5 * * * *",
        "(manual)",
    ]


def test_validate_reports_every_problem_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("views:\n  - name: public.a\n    schedule: often\n  - name: b\n    retry_delay: soon\n")
    done = cli("validate", str(bad))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"Invalid matview config {bad}: 3 problem(s):",
        "  - views[0] (public.a): schedule: 'often' is not a cron expression or preset; use 5 cron fields such as "
        "'*/5 * * * *', one of @once, @continuous, @hourly, @daily, @weekly, @monthly, @quarterly, @yearly, or null "
        "for manual runs only",
        "  - views[1] (b): retry_delay: 'soon' is not a duration; use 500ms, 30s, 5m, 1h, 1d or a number of seconds",
        "  - views[1] (b): name: 'b' has no schema; write schema.name, e.g. public.b",
    ]


def write_config(tmp_path: Path, names: list[str]) -> Path:
    path = tmp_path / "matviews.yaml"
    path.write_text(yaml.safe_dump({"views": [{"name": name} for name in names]}))
    return path


def test_check_reports_missing_index_missing_view_and_ownership(
    pg: psycopg.Connection, postgres_default: Database, tmp_path: Path
) -> None:
    create_reference_scenario(pg)
    pg.execute("CREATE MATERIALIZED VIEW public.no_index AS SELECT * FROM polls_user")
    config = write_config(tmp_path, ["public.polls_user_matt_view", "public.no_index", "public.ghost"])

    done = cli("check", str(config))

    assert done.returncode == 1
    out = done.stdout
    assert "OK      public.polls_user_matt_view\n        refresh: concurrently (unique index" in out
    assert "role postgres owns the view" in out
    assert (
        "OK      public.no_index\n        refresh: blocking (plain refresh (blocks readers) because it has no " in out
    )
    assert "CREATE UNIQUE INDEX ON public.no_index (<key columns>)" in out
    assert "PROBLEM public.ghost\n        Materialized view public.ghost does not exist" in out
    assert out.splitlines()[-1] == "2 of 3 view(s) can be refreshed as configured."


def test_check_reports_a_role_that_does_not_own_the_view(pg: psycopg.Connection, tmp_path: Path) -> None:
    create_reference_scenario(pg)
    pg.execute("DROP ROLE IF EXISTS matview_reader")
    pg.execute("CREATE ROLE matview_reader LOGIN")
    try:
        pg.execute("GRANT SELECT ON polls_user_matt_view TO matview_reader")
        dsn = pg.info.dsn.replace("user=postgres", "user=matview_reader")
        done = cli("check", str(write_config(tmp_path, ["public.polls_user_matt_view"])), "--dsn", dsn)
    finally:
        pg.execute("DROP OWNED BY matview_reader")
        pg.execute("DROP ROLE matview_reader")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "PROBLEM public.polls_user_matt_view" in done.stdout
    assert "permission: role matview_reader may not refresh it: only the owner (postgres) may" in done.stdout
    assert "GRANT MAINTAIN ON public.polls_user_matt_view TO matview_reader" in done.stdout


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


# ---------------------------------------------------------------------------------------- failures: one line, a code


def assert_one_clean_line(done: subprocess.CompletedProcess[str], code: int, *secrets: str) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    for secret in secrets:
        assert secret not in done.stderr + done.stdout
    assert len(done.stderr.splitlines()) == 1, done.stderr
    return done.stderr.strip()


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


def test_check_reports_every_view_when_one_connection_is_unreachable(
    pg: psycopg.Connection, postgres_default: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_reference_scenario(pg)
    port = free_port()
    monkeypatch.setenv("AIRFLOW_CONN_DOWN", f"postgresql://app:Sup3rSecret@127.0.0.1:{port}/x")
    config = tmp_path / "matviews.yaml"
    config.write_text(
        "views:\n  - name: public.elsewhere\n    conn_id: down\n  - name: public.polls_user_matt_view\n"
        "  - name: public.other\n    conn_id: down\n  - name: public.ghost\n    conn_id: unknown_conn\n"
    )
    done = cli("check", str(config))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "Sup3rSecret" not in done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "PROBLEM public.elsewhere"
    assert "Cannot connect to PostgreSQL" in lines[1] and "(connection 'down')" in lines[1], lines[1]
    assert lines[2] == "OK      public.polls_user_matt_view"
    assert "PROBLEM public.other" in lines
    assert "PROBLEM public.ghost" in lines
    assert any("Airflow connection 'unknown_conn' is not defined" in line for line in lines)
    assert lines[-1] == "1 of 4 view(s) can be refreshed as configured."


@pytest.mark.parametrize(
    "arguments",
    [
        ["check", "{config}", "--dns", "postgresql://app:Sup3rSecret@127.0.0.1/x"],
        ["check", "{config}", "--dns=postgresql://app:Sup3rSecret@127.0.0.1/x"],
        ["discover", "--dsn", "postgresql://app:Sup3rSecret@127.0.0.1/x", "surplus"],
        ["discover", "--dsn", "postgresql://app:Sup3rSecret@127.0.0.1/x", "--bogus"],
        ["validate", "{config}", "host=127.0.0.1 user=app password=Sup3rSecret"],
        ["check", "{config}", "--dns", "host=127.0.0.1 password='Sup3rSecret' bogus=1"],
        ["check", "{config}", "--dns", "postgresql://app:Sup3rSecret@127.0.0.1/x?bogus=1"],
        ["check", "{config}", "--dns", "postgresql://app:Sup3r%zzSecret@127.0.0.1/x"],
    ],
    ids=[
        "misspelt-option",
        "misspelt-option-equals",
        "surplus",
        "unknown-option",
        "keywords",
        "bad-keywords",
        "bad-query",
        "bad-percent-encoding",
    ],
)
def test_a_usage_error_never_echoes_a_password(tmp_path: Path, arguments: list[str]) -> None:
    config = str(write_config(tmp_path, ["public.a"]))
    done = cli(*(argument.format(config=config) for argument in arguments))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "Sup3r" not in done.stdout + done.stderr and "Secret" not in done.stdout + done.stderr
    assert done.stderr.splitlines()[0].startswith("usage: airflow-matview")
    assert "error: unrecognized arguments: " in done.stderr


@pytest.mark.parametrize(
    "arguments",
    [
        ["check", "{config}", "--dsn", ""],
        ["check", "{config}", "--conn-id", ""],
        ["discover", "--dsn", ""],
        ["discover", "--conn-id", ""],
    ],
    ids=["check-dsn", "check-conn-id", "discover-dsn", "discover-conn-id"],
)
def test_an_empty_dsn_or_conn_id_is_a_wrong_argument_not_the_default_connection(
    tmp_path: Path, arguments: list[str]
) -> None:
    config = str(write_config(tmp_path, ["public.a"]))
    done = cli(*(argument.format(config=config) for argument in arguments))
    option = arguments[-2]
    assert assert_one_clean_line(done, 2) == (
        f"airflow-matview {arguments[0]}: {option} is empty (an unset shell variable?); give a value"
    )
    assert done.stdout == ""


def test_check_through_an_airflow_connection_to_a_silent_server_gives_up_in_seconds(tmp_path: Path) -> None:
    # A server that accepts the TCP connection and never answers, behind an Airflow connection without a
    # connect_timeout: libpq's own default would wait forever (psycopg: 130 s).
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        config = tmp_path / "matviews.yaml"
        config.write_text("views:\n  - name: public.a\n    conn_id: silent\n  - name: public.b\n    conn_id: silent\n")
        env = {key: value for key, value in os.environ.items() if key != "PGCONNECT_TIMEOUT"}
        env["AIRFLOW_CONN_SILENT"] = f"postgresql://app:Sup3rSecret@127.0.0.1:{port}/x"
        started = time.monotonic()
        done = subprocess.run([str(CLI), "check", str(config)], capture_output=True, text=True, env=env, timeout=120)
        elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    assert elapsed < 60, elapsed
    assert "Sup3rSecret" not in done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "PROBLEM public.a"
    assert "timeout expired" in lines[1], lines[1]
    assert lines[-1] == "0 of 2 view(s) can be refreshed as configured."


def test_check_with_a_bad_dsn_reports_each_view_without_the_password(tmp_path: Path) -> None:
    config = write_config(tmp_path, ["public.a", "public.b"])
    done = cli("check", str(config), "--dsn", f"postgresql://app:Sup3rSecret@127.0.0.1:{free_port()}/x")
    assert done.returncode == 1
    assert "Sup3rSecret" not in done.stdout + done.stderr
    assert done.stdout.count("cannot connect with --dsn: connection failed") == 2
    assert done.stdout.splitlines()[-1] == "0 of 2 view(s) can be refreshed as configured."


def test_a_missing_or_unreadable_config_is_one_message_and_exit_1(tmp_path: Path) -> None:
    for path, reason in [(tmp_path / "nope.yaml", "No such file or directory"), (tmp_path, "Is a directory")]:
        for command in ("validate", "check"):
            done = cli(command, str(path))
            assert done.returncode == 1
            assert "Traceback" not in done.stderr
            assert done.stderr.splitlines() == [
                f"Invalid matview config {path}: 1 problem(s):",
                f"  - cannot read the file: {reason}",
            ]


def test_wrong_arguments_exit_2() -> None:
    done = cli("discover", "--schema", "reporting")
    assert done.returncode == 2
    assert "one of the arguments --conn-id --dsn is required" in done.stderr


def test_validate_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    config = write_config(tmp_path, [f"public.view_{index}" for index in range(5000)])
    with subprocess.Popen([str(CLI), "validate", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().endswith(b"OK, 5000 DAG(s)\n")
        proc.stdout.close()  # as `| head -1` does
        stderr = proc.stderr.read()
        assert proc.wait(timeout=60) == 141
    assert stderr == b""


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_output_that_cannot_be_written_is_one_line_and_exit_1(tmp_path: Path) -> None:
    config = write_config(tmp_path, ["public.a"])
    with Path("/dev/full").open("w") as full:
        done = subprocess.run([str(CLI), "validate", str(config)], stdout=full, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 1, done.stderr
    assert done.stderr == "airflow-matview validate: cannot write the output: No space left on device\n"


def test_an_interrupted_check_ends_with_one_line_and_exit_130(tmp_path: Path) -> None:
    # A server that accepts the TCP connection and never answers: check waits in connect until interrupted.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        dsn = f"host=127.0.0.1 port={silent.getsockname()[1]} user=app password=Sup3rSecret connect_timeout=60"
        config = write_config(tmp_path, ["public.a"])
        with subprocess.Popen(
            [str(CLI), "check", str(config), "--dsn", dsn], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as proc:
            accepted, _ = silent.accept()
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=60)
            accepted.close()
    assert proc.returncode == 130, stderr
    assert stderr == "airflow-matview check: interrupted\n"
    assert "Sup3rSecret" not in stdout + stderr


def test_discover_help_states_the_real_defaults() -> None:
    done = cli("discover", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "each view's conn_id" not in text
    assert "--conn-id CONN_ID connect through this Airflow connection; also the config's conn_id" in text
    assert "(the config gets postgres_default)" in text
    assert "folded to lower case unless double-quoted, as in SQL" in text


# -------------------------------------------------------------------------------------------------------- discover


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


def test_check_with_a_malformed_dsn_is_a_wrong_argument(tmp_path: Path) -> None:
    done = cli("check", str(write_config(tmp_path, ["public.a"])), "--dsn", "host=127.0.0.1 password=Sup3r Secret")
    message = assert_one_clean_line(done, 2, "Sup3r", "Secret")
    assert message.startswith("airflow-matview check: --dsn is not a valid libpq connection string or URI")
    assert done.stdout == ""


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists(), reason="needs root and setpriv")
def test_a_config_the_user_may_not_read_is_one_message(tmp_path: Path) -> None:
    folder = Path(tempfile.mkdtemp())
    try:
        folder.chmod(0o777)
        config = folder / "matviews.yaml"
        config.write_text("views:\n  - name: public.a\n")
        config.chmod(0)
        env = {**os.environ, "AIRFLOW_HOME": str(folder)}  # an AIRFLOW_HOME that user 'nobody' may write
        done = subprocess.run(
            ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(CLI), "validate", str(config)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    finally:
        shutil.rmtree(folder)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"Invalid matview config {config}: 1 problem(s):",
        "  - cannot read the file: Permission denied",
    ]


@pytest.mark.parametrize("command", ["check", "discover"])
def test_a_uri_given_as_conn_id_is_refused_without_echoing_it(tmp_path: Path, command: str) -> None:
    config = [str(write_config(tmp_path, ["public.a"]))] if command == "check" else []
    done = cli(command, *config, "--conn-id", "postgresql://app:Sup3rSecret@127.0.0.1/x")
    message = assert_one_clean_line(done, 2, "Sup3rSecret")
    assert message.startswith(f"airflow-matview {command}: --conn-id: this looks like a connection URI or DSN")
    assert message.endswith("to connect with a connection string, use --dsn")


def test_ctrl_c_while_the_command_starts_is_one_line_and_exit_130() -> None:
    script = Path(sys.executable).parent / "airflow-matview"
    process = subprocess.Popen(
        [str(script), "validate", "dags/matviews.yaml"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(0.3)  # well inside the import of Airflow, which takes over a second
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err.strip() == "airflow-matview: interrupted"
    assert "Traceback" not in err


# ------------------------------------------------------------------ Airflow connections: where they live, what is wrong

UNREADABLE_CONNECTIONS = [
    ("postgresql://app:Sup3rSecret@127.0.0.1:notaport/db", "its port is not a number"),
    ("postgresql://app:Sup3r/Secret@127.0.0.1:5432/db", "its port is not a number (or its password holds an unencoded"),
    ("postgresql://app:Sup3rSecret@127.0.0.1:99999/db", "its port is out of range (use 1 to 65535, e.g. 5432)"),
    (
        '{"conn_type": "postgres", "host": "127.0.0.1", "password": "Sup3rSecret",',
        "it is not valid JSON (Expecting property name enclosed in double quotes at line 1 column 74)",
    ),
    ('{"conn_type": "postgres", "port": "Sup3rSecret"}', "its port is not a number"),
    ('{"conn_type": "postgres", "pasword": "Sup3rSecret"}', "its JSON has the key 'pasword', which Airflow"),
]


@pytest.mark.parametrize(
    ("value", "reason"),
    UNREADABLE_CONNECTIONS,
    ids=["port-text", "unencoded-slash", "port-range", "broken-json", "json-port", "json-unknown-key"],
)
def test_check_says_a_connection_airflow_cannot_read_exists_and_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, reason: str
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", value)
    config = tmp_path / "matviews.yaml"
    config.write_text("views:\n  - name: public.a\n    conn_id: warehouse\n")
    done = cli("check", str(config))
    assert done.returncode == 1, done.stderr
    assert done.stderr == ""
    assert "Sup3r" not in done.stdout and "Secret" not in done.stdout
    lines = done.stdout.splitlines()
    assert lines[0] == "PROBLEM public.a"
    assert (
        lines[1]
        .strip()
        .startswith(
            "Cannot inspect the database: Airflow connection 'warehouse' exists (environment variable "
            f"AIRFLOW_CONN_WAREHOUSE) but cannot be read: {reason}"
        )
    ), lines[1]
    assert "Fix AIRFLOW_CONN_WAREHOUSE: a URI such as postgresql://USER:PASSWORD@HOST:5432/DB" in lines[1]
    assert lines[2:] == ["0 of 1 view(s) can be refreshed as configured."]


def test_check_finds_a_connection_made_with_airflow_connections_add(
    pg: psycopg.Connection, database: Database, airflow_db: Path, tmp_path: Path
) -> None:
    """The README's step: `airflow connections add`, then `airflow-matview check` (a connection in the metadata DB)."""
    create_reference_scenario(pg)
    conn_id = f"added_{database.name}"
    added = subprocess.run(
        [str(AIRFLOW_BIN), "connections", "add", conn_id, "--conn-uri", database.uri],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=120,
    )
    assert added.returncode == 0, added.stderr
    config = tmp_path / "matviews.yaml"
    config.write_text(f"views:\n  - name: public.polls_user_matt_view\n    conn_id: {conn_id}\n")
    done = cli("check", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == "OK      public.polls_user_matt_view"
    done = cli("discover", "--conn-id", conn_id)
    assert done.returncode == 0, done.stderr
    assert f"conn_id: {conn_id}" in done.stdout


def test_check_output_holds_only_its_own_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A short password makes Airflow log "Skipping masking for a secret as it's too short" to stdout: not here."""
    port = free_port()
    monkeypatch.setenv("AIRFLOW_CONN_SHORT", f"postgresql://app:p@127.0.0.1:{port}/x")
    config = tmp_path / "matviews.yaml"
    config.write_text("views:\n  - name: public.a\n    conn_id: short\n")
    done = cli("check", str(config))
    assert done.returncode == 1, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0] == "PROBLEM public.a"
    # the password "p" would be masked as a word, never inside one ("***ort")
    assert (
        lines[1]
        .strip()
        .startswith(
            f"Cannot connect to PostgreSQL at 127.0.0.1:{port} to inspect the database (connection 'short'): "
            f'connection to server at "127.0.0.1", port {port} failed: Connection refused'
        )
    ), lines[1]
    assert lines[2:] == ["0 of 1 view(s) can be refreshed as configured."]


# ------------------------------------------------------------------------- names with control characters


def test_validate_refuses_a_name_with_a_newline_on_one_line_per_problem(tmp_path: Path) -> None:
    config = tmp_path / "matviews.yaml"
    config.write_text('views:\n  - name: "public.\\"bad\\nname\\""\n    schedule: often\n')
    done = cli("validate", str(config))
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == f"Invalid matview config {config}: 2 problem(s):"
    assert lines[1].startswith("  - views[0] (public.\"bad\\nname\"): schedule: 'often' is not a cron expression")
    assert lines[2].startswith(
        "  - views[0] (public.\"bad\\nname\"): name: 'public.\"bad\\nname\"' holds the control character '\\n': "
    )
    assert len(lines) == 3


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


def test_validate_shows_descriptions_on_one_line_cut_to_40_characters(tmp_path: Path) -> None:
    config = tmp_path / "matviews.yaml"
    config.write_text(
        "views:\n  - name: public.a\n    description: Sales per shop, for the morning report of the regional managers\n"
        "  - name: public.b\n  - name: public.c\n    description: |\n      two\n      lines\n"
    )
    done = cli("validate", str(config))
    assert done.returncode == 0, done.stderr
    rows = [re.split(r"\s{2,}", line) for line in done.stdout.splitlines()[1:]]
    assert rows[0] == ["DAG ID", "VIEW", "SCHEDULE", "CONNECTION", "SETTINGS", "DESCRIPTION"]
    assert [row[-1] for row in rows[1:]] == ["Sales per shop, for the morning report\u2026", "-", "two lines"]
    assert len(rows[1][-1]) <= 40  # cli.DESCRIPTION_WIDTH


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            '{"conn_type": "postgres", "host": "127.0.0.1", "port": 1, "extra": "{\\"sslmode\\": require"}',
            "Cannot inspect the database: the extras of Airflow connection 'x' are not valid JSON (Expecting value at "
            "line 1 column 13), and Airflow would ignore them all (sslmode, options, ...). Write them as a JSON "
            'object, e.g. {"sslmode": "require"}.',
        ),
        (
            '{"conn_type": "postgres", "host": "127.0.0.1", "port": 1, "extra": "[\\"require\\"]"}',
            "Cannot inspect the database: the extras of Airflow connection 'x' are a JSON list, not an object,",
        ),
        (
            "postgresql://app:Sup3rSecret@127.0.0.1:0/db",
            "Cannot connect to PostgreSQL at 127.0.0.1:0 to inspect the database (connection 'x'): connection is "
            'bad: invalid port number: "0". The connection\'s port is not valid (use 1 to 65535, e.g. 5432): fix the '
            "Airflow connection 'x' (or the server).",
        ),
        (
            "warehouse.example",
            "Cannot inspect the database: Airflow connection 'x' has no connection type (is it a URI such as "
            "postgresql://USER:PASSWORD@HOST:5432/DB?). Give it the type 'postgres'.",
        ),
        (
            "postgresql://app:Sup3rSecret@127.0.0.1:{port}/db",
            "Connection refused Is the server running on that host and accepting TCP/IP connections? Check that the "
            "server is up and reachable from here.",
        ),
    ],
    ids=["extras-not-json", "extras-a-list", "port-zero", "no-type", "refused"],
)
def test_check_says_what_is_wrong_with_a_connection_airflow_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_X", value.replace("{port}", str(free_port())))
    config = tmp_path / "matviews.yaml"
    config.write_text("views:\n  - name: public.a\n    conn_id: x\n")
    done = cli("check", str(config))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "Sup3r" not in done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "PROBLEM public.a"
    assert expected in lines[1], lines[1]
    assert "Airflow will retry" not in lines[1] and "clear the task" not in lines[1]
    assert len(done.stderr.splitlines()) <= 1, done.stderr  # Airflow's own error about the extras: one line


@pytest.mark.parametrize("command", ["validate", "check"])
def test_an_empty_config_argument_is_a_wrong_argument_not_the_current_directory(command: str) -> None:
    done = cli(command, "")
    assert assert_one_clean_line(done, 2) == (
        f"airflow-matview {command}: the config file argument is empty (an unset shell variable?); give a path"
    )


def test_a_bad_schema_argument_is_called_a_schema_name() -> None:
    done = cli("discover", "--conn-id", "postgres_default", "--schema", "a\nb")
    assert assert_one_clean_line(done, 2).startswith(
        "airflow-matview discover: --schema: 'a\\nb' is not a valid schema name: unexpected '\\n' at position 2."
    )


def test_check_says_a_connection_variable_is_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", "")
    config = tmp_path / "matviews.yaml"
    config.write_text("views:\n  - name: public.a\n    conn_id: warehouse\n")
    done = cli("check", str(config))
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines()[1].strip() == (
        "Cannot inspect the database: Airflow connection 'warehouse' is the environment variable "
        "AIRFLOW_CONN_WAREHOUSE, which is empty (a variable set from an unset one?). Give it a URI such as "
        "postgresql://USER:PASSWORD@HOST:5432/DB."
    )


def test_a_config_path_with_a_newline_is_shown_escaped(tmp_path: Path) -> None:
    path = tmp_path / "a\nb.yaml"
    done = cli("validate", str(path))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"Invalid matview config {tmp_path}/a\\nb.yaml: 1 problem(s):",
        "  - cannot read the file: No such file or directory",
    ]
