"""A throwaway PostgreSQL cluster on loopback, for tests, the demo and benchmarks.

The server binaries come from the ``pgserver`` wheel (PostgreSQL 16, no system install needed)
or from any ``/usr/lib/postgresql/<major>/bin`` found on the machine. PostgreSQL refuses to run
as root, so when we are root the cluster runs as an unprivileged system user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

RUN_AS_USER = "pgmatview"


def available_bin_dirs() -> dict[str, Path]:
    """Server binary folders by label (``"16-pgserver"``, ``"15-system"``), embedded first."""
    found: dict[str, Path] = {}
    try:
        from pgserver._commands import POSTGRES_BIN_PATH

        found[f"{_major(POSTGRES_BIN_PATH)}-pgserver"] = Path(POSTGRES_BIN_PATH)
    except ImportError:
        pass
    for bin_dir in sorted(glob.glob("/usr/lib/postgresql/*/bin")):
        path = Path(bin_dir)
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            found[f"{_major(path)}-system"] = path
    return found


def embedded_cluster(**settings: str) -> PostgresCluster:
    """A cluster from the ``pgserver`` wheel's binaries, which every environment of ours has."""
    from pgserver._commands import POSTGRES_BIN_PATH

    return PostgresCluster(Path(POSTGRES_BIN_PATH), settings=dict(settings))


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
