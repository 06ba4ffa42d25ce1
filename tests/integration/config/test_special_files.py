"""A config path that is not a regular file: refused at once with one problem line, never a hang (a named pipe) or a
read without end (``/dev/zero``, a file that keeps growing); a file over the size cap is refused the same way."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from airflow_matview.config import InvalidConfigFileError, load_config

CLI = Path(sys.executable).parent / "airflow-matview"
MAX_CONFIG_BYTES = 10 * 1024 * 1024  # airflow_matview.config.yaml_reader.MAX_CONFIG_BYTES
NOT_REGULAR = "not a regular file; give the path of the YAML file itself"


def problems_within(path: Path, seconds: float = 10) -> list[str]:
    """The problems ``load_config`` reports for ``path``, failing the test if it takes longer than ``seconds``."""
    outcome: list[BaseException | object] = []

    def load() -> None:
        try:
            outcome.append(load_config(path))
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"reading {path} did not end within {seconds:.0f}s"
    error = outcome[0]
    assert isinstance(error, InvalidConfigFileError), error
    return error.problems


def test_a_named_pipe_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "matviews.yaml"
    os.mkfifo(fifo)
    assert problems_within(fifo) == [f"cannot read the file: it is a named pipe (FIFO), {NOT_REGULAR}"]
    link = tmp_path / "link.yaml"
    link.symlink_to(fifo)
    assert problems_within(link) == [f"cannot read the file: it is a named pipe (FIFO), {NOT_REGULAR}"]


def test_a_socket_a_device_and_a_directory_are_refused(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(tmp_path / "sock.yaml"))
        listening.listen()
        assert problems_within(tmp_path / "sock.yaml") == [f"cannot read the file: it is a socket, {NOT_REGULAR}"]
    assert problems_within(Path("/dev/null")) == [f"cannot read the file: it is a character device, {NOT_REGULAR}"]
    assert problems_within(tmp_path) == ["cannot read the file: Is a directory"]


def test_a_regular_file_behind_a_symbolic_link_is_read(tmp_path: Path) -> None:
    (tmp_path / "real.yaml").write_text("views:\n  - name: public.a\n")
    (tmp_path / "matviews.yaml").symlink_to(tmp_path / "real.yaml")
    assert [str(view.view) for view in load_config(tmp_path / "matviews.yaml").views] == ["public.a"]


def _limited_memory() -> None:
    # A read without end fails here (as a MemoryError), not on the shared machine.
    resource.setrlimit(resource.RLIMIT_DATA, (1 << 30, 1 << 30))


def validate(path: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [str(CLI), "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limited_memory,
        stdin=subprocess.DEVNULL,
    )
    return done, time.monotonic() - started


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/urandom"])
def test_a_device_that_never_ends_is_refused_at_once(tmp_path: Path, target: str) -> None:
    link = tmp_path / "matviews.yaml"
    link.symlink_to(target)
    for path in (Path(target), link):
        done, seconds = validate(path)
        assert done.returncode == 1, done.stderr
        assert done.stderr.splitlines() == [
            f"Invalid matview config {path}: 1 problem(s):",
            f"  - cannot read the file: it is a character device, {NOT_REGULAR}",
        ]
        print(f"validate {path}: refused in {seconds:.1f}s")


def test_a_file_over_the_cap_and_a_file_that_keeps_growing_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    growing = tmp_path / "growing.yaml"
    growing.write_bytes(b"")
    stop = threading.Event()

    def grow() -> None:  # about 20 MB/s, at most 200 MB, until the command is done
        with growing.open("ab") as file:
            for _ in range(200):
                if stop.is_set():
                    return
                file.write(b"# more\n" * 150_000)
                file.flush()
                time.sleep(0.05)

    writer = threading.Thread(target=grow, daemon=True)
    writer.start()
    time.sleep(1)  # already over the cap when the command reads it
    try:
        results = [validate(big), validate(growing)]
    finally:
        stop.set()
        writer.join()
    for path, (done, seconds) in zip((big, growing), results, strict=True):
        assert done.returncode == 1, done.stderr
        assert done.stderr.splitlines() == [
            f"Invalid matview config {path}: 1 problem(s):",
            "  - cannot read the file: it is larger than 10 MB, far more than a config of thousands of views; is it "
            "the right file?",
        ]
        print(f"validate {path.name}: refused in {seconds:.1f}s")


def test_dev_stdin_is_read_from_a_file_and_refused_from_a_pipe(tmp_path: Path) -> None:
    config = tmp_path / "matviews.yaml"
    config.write_text("views:\n  - name: public.a\n")
    with config.open() as redirected:  # `validate /dev/stdin < matviews.yaml`: a regular file
        done = subprocess.run([str(CLI), "validate", "/dev/stdin"], stdin=redirected, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("/dev/stdin: OK, 1 DAG(s)")
    # `... | validate /dev/stdin` from a writer that never ends its output: refused, not waited for
    writer = subprocess.Popen(["sleep", "60"], stdout=subprocess.PIPE)
    try:
        done = subprocess.run(
            [str(CLI), "validate", "/dev/stdin"], stdin=writer.stdout, capture_output=True, text=True, timeout=60
        )
    finally:
        writer.kill()
        writer.wait()
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[1] == f"  - cannot read the file: it is a named pipe (FIFO), {NOT_REGULAR}"
