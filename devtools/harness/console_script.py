"""The ``airflow-matview`` command as a user runs it: in a process of its own, its output and exit code kept."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import TYPE_CHECKING

import yaml

from devtools.harness.paths import CLI

if TYPE_CHECKING:
    from pathlib import Path


def interruptible() -> None:
    """A ``preexec_fn`` that lets the child take Ctrl-C (SIGINT) as a terminal's foreground command does.

    A shell that starts the suite in the background (``pytest ... &``) makes it ignore SIGINT, every child inherits
    that, and Python then installs no KeyboardInterrupt handler: a test of Ctrl-C would see no interrupt at all.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``airflow-matview *args`` in this environment; its exit code and output.

    :param args: the command's arguments.
    """
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, env=os.environ, timeout=120)


def write_config(tmp_path: Path, names: list[str]) -> Path:
    """``tmp_path / "matviews.yaml"``, listing the views ``names`` with no other key.

    :param tmp_path: the folder to write it in.
    :param names: the views' names.
    """
    path = tmp_path / "matviews.yaml"
    path.write_text(yaml.safe_dump({"views": [{"name": name} for name in names]}))
    return path


def assert_one_clean_line(done: subprocess.CompletedProcess[str], code: int, *secrets: str) -> str:
    """The command ended with ``code`` and one line on stderr, without a traceback or any of ``secrets``: that line.

    :param done: the finished command.
    :param code: the exit code it must have.
    :param secrets: text that must appear nowhere in its output.
    """
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    for secret in secrets:
        assert secret not in done.stderr + done.stdout
    assert len(done.stderr.splitlines()) == 1, done.stderr
    return done.stderr.strip()
