"""``airflow-matview check`` against real servers: each view's refresh mode, owner and problems, and every way a
connection can be wrong, told in one line without the password."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import TYPE_CHECKING

import pytest
import yaml

from devtools.harness.console_script import assert_one_clean_line, cli, interruptible, write_config
from devtools.harness.paths import AIRFLOW_BIN, CLI
from devtools.harness.pgcluster import free_port
from devtools.harness.scenario import create_reference_scenario

if TYPE_CHECKING:
    from pathlib import Path

    import psycopg

    from devtools.harness.databases import Database


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


def test_an_interrupted_check_ends_with_one_line_and_exit_130(tmp_path: Path) -> None:
    # A server that accepts the TCP connection and never answers: check waits in connect until interrupted.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        dsn = f"host=127.0.0.1 port={silent.getsockname()[1]} user=app password=Sup3rSecret connect_timeout=60"
        config = write_config(tmp_path, ["public.a"])
        with subprocess.Popen(
            [str(CLI), "check", str(config), "--dsn", dsn],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=interruptible,
        ) as proc:
            accepted, _ = silent.accept()
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=60)
            accepted.close()
    assert proc.returncode == 130, stderr
    assert stderr == "airflow-matview check: interrupted\n"
    assert "Sup3rSecret" not in stdout + stderr


def test_check_with_a_malformed_dsn_is_a_wrong_argument(tmp_path: Path) -> None:
    done = cli("check", str(write_config(tmp_path, ["public.a"])), "--dsn", "host=127.0.0.1 password=Sup3r Secret")
    message = assert_one_clean_line(done, 2, "Sup3r", "Secret")
    assert message.startswith("airflow-matview check: --dsn is not a valid libpq connection string or URI")
    assert done.stdout == ""


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
