"""``airflow-matview validate``, run as a user runs it: the DAGs a config makes, or every problem and exit 1."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from devtools.harness.configs import ALL_KEYS
from devtools.harness.console_script import cli, write_config
from devtools.harness.paths import CLI, REPO


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


def test_a_config_path_with_a_newline_is_shown_escaped(tmp_path: Path) -> None:
    path = tmp_path / "a\nb.yaml"
    done = cli("validate", str(path))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"Invalid matview config {tmp_path}/a\\nb.yaml: 1 problem(s):",
        "  - cannot read the file: No such file or directory",
    ]


def test_validate_shows_the_settings_in_its_table(tmp_path: Path) -> None:
    path = tmp_path / "matviews.yaml"
    path.write_text(yaml.safe_dump({"views": [{"name": "public.sales", **ALL_KEYS}, {"name": "public.plain"}]}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # for devtools.harness.recording_notifier
    done = subprocess.run([str(CLI), "validate", str(path)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("DAG ID"))) :]
    header, first, second = [line for line in table if line and not line.startswith("note:")]
    assert header.split()[-2:] == ["SETTINGS", "DESCRIPTION"]
    assert first.endswith(
        "tz=Europe/Berlin pool=pg_main slots=2 priority=7 queue=refreshes stale>2h "
        "notify=failure:1,retry:1,success:1,stale:1  Nightly sales rollup"
    )
    assert re.split(r"\s{2,}", second)[-3:] == ["postgres_default", "-", "-"]
