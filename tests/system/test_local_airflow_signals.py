"""``make airflow`` (``devtools.local_airflow``) leaves nothing behind, whatever signals arrive in whatever order.

Each test starts the real thing in a session of its own, waits until it says it is ready (or, for one, until it is
starting Airflow's components), records every session it made (its own, the components', PostgreSQL's, Redis's)
and the ports it listens on, sends a burst of signals, and then checks that no process of those sessions and no
listener on those ports is left once it has exited.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from typing import IO, TYPE_CHECKING

import psutil
import pytest

from devtools.harness.airflow_stack import celery_unavailable
from devtools.harness.paths import REPO
from devtools.harness.pgcluster import free_port

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

READY = "Press Ctrl-C to stop everything."

pytestmark = pytest.mark.timeout(900)


class LocalAirflow:
    """``python -m devtools.local_airflow`` in its own session, its output in a file or a pipe."""

    def __init__(self, tmp_path: Path, executor: str, pipe: bool = False) -> None:
        self.port = free_port()
        self.output = tmp_path / "local_airflow.out"
        out: IO[bytes] | int = subprocess.PIPE if pipe else self.output.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devtools.local_airflow", "--port", str(self.port), "--executor", executor],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._seen = b""

    def text(self) -> str:
        if self.process.stdout is not None:  # a pipe: read what is there without blocking
            os.set_blocking(self.process.stdout.fileno(), False)
            self._seen += self.process.stdout.read() or b""
            return self._seen.decode(errors="replace")
        return self.output.read_text(errors="replace")

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 400) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, f"exited with {self.process.returncode} before {what}:\n{self.text()}"
            assert time.monotonic() < deadline, f"not {what} after {timeout:.0f}s:\n{self.text()}"
            time.sleep(0.2)

    def sessions_and_ports(self) -> tuple[set[int], set[int]]:
        """Every session among its descendants, plus PostgreSQL's (a daemon, found by its port)."""
        root = psutil.Process(self.process.pid)
        sessions = {self.process.pid} | {_sid(child.pid) for child in root.children(recursive=True)}
        ports = {self.port}
        if match := re.search(r"PostgreSQL \d+ on 127\.0\.0\.1:(\d+)", self.text()):
            ports.add(int(match.group(1)))
        for port in ports:
            sessions |= {_sid(pid) for pid in _listeners({port})}
        sessions.discard(0)
        for child in root.children(recursive=True):  # e.g. Redis: a component's own listening port
            ports |= {conn.laddr.port for conn in _connections(child) if conn.status == psutil.CONN_LISTEN}
        return sessions, ports

    def signal(self, target: str, signum: signal.Signals) -> None:
        if target == "group":  # as make's process group gets it from a terminal or `kill -TERM -PGID`
            os.killpg(self.process.pid, signum)
        else:
            os.kill(self.process.pid, signum)


def _sid(pid: int) -> int:
    try:
        return os.getsid(pid)
    except OSError:
        return 0


def _command_line(process: psutil.Process) -> str:
    """``process``'s command line, or ``""`` once it has ended (a zombie not yet reaped has none)."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def _connections(process: psutil.Process) -> list[psutil._common.pconn]:
    try:
        return list(process.net_connections(kind="tcp"))
    except psutil.Error:
        return []


def _listeners(ports: set[int]) -> set[int]:
    return {
        conn.pid
        for conn in psutil.net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port in ports and conn.pid
    }


def _left_behind(sessions: set[int]) -> list[str]:
    left = []
    for process in psutil.process_iter(["pid", "cmdline", "status"]):
        if process.info["status"] != psutil.STATUS_ZOMBIE and _sid(process.info["pid"]) in sessions:
            left.append(f"{process.info['pid']}: {' '.join(process.info['cmdline'] or [])[:120]}")
    return left


def _check_nothing_left(airflow: LocalAirflow, sessions: set[int], ports: set[int]) -> None:
    try:
        airflow.process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running 120 s after the signals:\n{airflow.text()}")
    deadline = time.monotonic() + 5
    while (left := _left_behind(sessions)) or _listeners(ports):
        if time.monotonic() > deadline:
            for pid in [int(entry.split(":")[0]) for entry in left] + sorted(_listeners(ports)):
                os.kill(pid, signal.SIGKILL)  # clean up after the failure
            pytest.fail(f"left behind: {left}; listening on {sorted(ports)}: {sorted(_listeners(ports))}")
        time.sleep(0.2)


SEQUENCES = {
    # The reported case: SIGTERM to make's process group, then to the Python process while it stops.
    "term-group-then-term": [("group", signal.SIGTERM, 0.0), ("process", signal.SIGTERM, 0.3)],
    # Ctrl-C twice, then SIGTERM and SIGHUP while it waits for Airflow's components to exit.
    "ctrl-c-burst": [
        ("group", signal.SIGINT, 0.0),
        ("group", signal.SIGINT, 0.05),
        ("process", signal.SIGTERM, 1.0),
        ("process", signal.SIGHUP, 3.0),
    ],
}


def _send(airflow: LocalAirflow, sequence: list[tuple[str, signal.Signals, float]]) -> None:
    started = time.monotonic()
    for target, signum, at in sequence:
        time.sleep(max(0.0, started + at - time.monotonic()))
        airflow.signal(target, signum)


@pytest.mark.parametrize("sequence", sorted(SEQUENCES))
def test_local_executor_stack_leaves_nothing_behind(tmp_path: Path, sequence: str) -> None:
    airflow = LocalAirflow(tmp_path, "local")
    try:
        airflow.wait_for(lambda: READY in airflow.text(), "ready")
        sessions, ports = airflow.sessions_and_ports()
        assert len(sessions) >= 5, "local_airflow, PostgreSQL, api-server, scheduler, dag-processor"
        _send(airflow, SEQUENCES[sequence])
        _check_nothing_left(airflow, sessions, ports)
        assert "Stopped." in airflow.text()
    finally:
        if airflow.process.poll() is None:
            airflow.signal("group", signal.SIGKILL)


def test_ctrl_c_with_the_output_pipe_gone_while_starting_airflow(tmp_path: Path) -> None:
    """`make airflow | tee log` and Ctrl-C while the components start: tee dies first, printing fails."""
    airflow = LocalAirflow(tmp_path, "local", pipe=True)
    try:
        airflow.wait_for(lambda: "Starting Airflow" in airflow.text(), "starting Airflow")
        root = psutil.Process(airflow.process.pid)
        airflow.wait_for(
            lambda: any("api_server" in _command_line(child) for child in root.children()), "spawning components"
        )
        sessions, ports = airflow.sessions_and_ports()
        assert airflow.process.stdout is not None
        airflow.process.stdout.close()
        _send(airflow, [("group", signal.SIGINT, 0.0), ("group", signal.SIGINT, 0.2)])
        _check_nothing_left(airflow, sessions, ports)
    finally:
        if airflow.process.poll() is None:
            airflow.signal("group", signal.SIGKILL)


@pytest.mark.celery
def test_celery_executor_stack_leaves_nothing_behind(tmp_path: Path) -> None:
    if reason := celery_unavailable():
        pytest.skip(reason)
    airflow = LocalAirflow(tmp_path, "celery")
    try:
        airflow.wait_for(lambda: READY in airflow.text(), "ready")
        sessions, ports = airflow.sessions_and_ports()
        assert len(sessions) >= 8, "local_airflow, PostgreSQL, Redis, api-server, scheduler, dag-processor, 2 workers"
        _send(airflow, SEQUENCES["term-group-then-term"])
        _check_nothing_left(airflow, sessions, ports)
    finally:
        if airflow.process.poll() is None:
            airflow.signal("group", signal.SIGKILL)
