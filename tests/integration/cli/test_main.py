"""The ``airflow-matview`` command's arguments and exit codes: a wrong argument is one line and exit 2, never
echoing a password, and Ctrl-C is one line and exit 130 from the very first moment."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.harness.console_script import assert_one_clean_line, cli, interruptible, write_config


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


def test_wrong_arguments_exit_2() -> None:
    done = cli("discover", "--schema", "reporting")
    assert done.returncode == 2
    assert "one of the arguments --conn-id --dsn is required" in done.stderr


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
        [str(script), "validate", "dags/matviews.yaml"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    time.sleep(0.3)  # well inside the import of Airflow, which takes over a second
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err.strip() == "airflow-matview: interrupted"
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["validate", "check"])
def test_an_empty_config_argument_is_a_wrong_argument_not_the_current_directory(command: str) -> None:
    done = cli(command, "")
    assert assert_one_clean_line(done, 2) == (
        f"airflow-matview {command}: the config file argument is empty (an unset shell variable?); give a path"
    )
