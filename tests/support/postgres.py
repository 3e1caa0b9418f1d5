"""A throwaway PostgreSQL cluster for tests and benchmarks, and the pytest fixtures that use it.

`PostgresCluster` runs Debian's server binaries (`/usr/lib/postgresql/<version>/bin/initdb`, `pg_ctl`) in a
fresh temporary directory: the data directory, the Unix socket and the server log all live there. The server
listens on a free port of 127.0.0.1 only, with password (SCRAM) authentication for TCP and trust on its own
socket. `initdb` and `pg_ctl` refuse to run as root, so when the tests run as root the directory is handed
to the `postgres` user and both run as that user (`runuser -u postgres --`).

Fixtures (import them into a conftest.py):

- `postgres_cluster` (session): started once per test session, stopped at its end; under pytest-xdist once
  per worker process (each in its own temporary directory on its own free port, so workers never share
  one). Missing binaries FAIL the test with the install command: CI installs them
  (`.ci/install-postgres.sh`), nothing skips.
- `postgres_url` (session): the superuser's URL on the cluster's default database.
- `pg_url` (function): a URL to a fresh, empty database `t_<n>` for one test, dropped afterwards.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import itertools
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

SUPERUSER: Final = "postgres"
CONNECT_TIMEOUT: Final = 30
"""Seconds to reach the cluster: a hang guard (a cluster that died must fail the test, not hang the suite)."""
INSTALL_HINT: Final = "run `bash .ci/install-postgres.sh` (apt-get install postgresql) to install them"


class PostgresUnavailable(RuntimeError):
    """The server binaries are missing or the cluster could not start."""


def find_bin_dir() -> Path:
    """The newest installed `/usr/lib/postgresql/<version>/bin` that has `initdb` and `pg_ctl`."""
    candidates = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        bin_dir = Path(initdb).parent
        if (bin_dir / "pg_ctl").is_file():
            version = bin_dir.parent.name
            candidates.append((int(version) if version.isdigit() else 0, bin_dir))
    if not candidates:
        raise PostgresUnavailable(
            f"PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): {INSTALL_HINT}"
        )
    return max(candidates)[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """One throwaway server. `start()` then `stop()`, or use it as a context manager."""

    def __init__(self) -> None:
        self.bin_dir = find_bin_dir()
        self.password = "pw-" + secrets.token_hex(12)
        self.port = 0
        self.root: Path | None = None
        self._as_postgres = os.geteuid() == 0
        self._databases = itertools.count(1)
        self._options = ""

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.root is not None
        return self.root / "socket"

    @property
    def log_file(self) -> Path:
        assert self.root is not None
        return self.root / "server.log"

    def url(self, database: str = "postgres", *, user: str = SUPERUSER, password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{user}:{secret}@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, cwd="/")

    def start(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="codex-limits-pg-"))
        atexit.register(self.stop)  # a session ended without its fixture teardown leaves no server behind
        self.socket_dir.mkdir()
        password_file = self.root / "password"
        password_file.write_text(self.password + "\n")
        if self._as_postgres:
            for path in (self.root, self.socket_dir, password_file):
                shutil.chown(path, user="postgres", group="postgres")
        initdb = self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            f"--pwfile={password_file}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        password_file.unlink()
        if initdb.returncode != 0:
            raise PostgresUnavailable(f"initdb failed ({initdb.returncode}):\n{initdb.stdout}\n{initdb.stderr}")
        # A free port can be taken between the probe and the server's bind: try a few.
        last = ""
        for _ in range(5):
            self.port = free_port()
            options = " ".join(
                (
                    "-c listen_addresses=127.0.0.1",
                    f"-p {self.port}",
                    f"-k {self.socket_dir}",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                    "-c max_connections=200",
                )
            )
            self._options = options
            started = self._pg_ctl_start()
            if started.returncode == 0:
                return
            last = f"{started.stdout}\n{started.stderr}\n{self._log_tail()}"
        raise PostgresUnavailable(f"pg_ctl start failed:\n{last}")

    def _pg_ctl_start(self) -> subprocess.CompletedProcess[str]:
        return self._run(
            str(self.bin_dir / "pg_ctl"),
            "start",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            "60",
            "-o",
            self._options,
        )

    def stop_server(self) -> None:
        """Stop the server, ending every session (`fast`: this cluster runs without fsync or synchronous
        commits, so an `immediate` stop would lose committed rows); `start_server` brings it back."""
        stopped = self._run(str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w")
        if stopped.returncode != 0:
            raise PostgresUnavailable(f"pg_ctl stop failed:\n{stopped.stdout}\n{stopped.stderr}")

    def start_server(self) -> None:
        """Start the stopped server again, on the same port, with the same data."""
        started = self._pg_ctl_start()
        if started.returncode != 0:
            raise PostgresUnavailable(f"pg_ctl start failed:\n{started.stdout}\n{started.stderr}\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.root is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            self._run(str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "immediate", "-w")
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def create_database(self) -> str:
        """A fresh empty database; returns its name."""
        import psycopg

        name = f"t_{next(self._databases)}"
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def __enter__(self) -> PostgresCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    try:
        cluster = PostgresCluster()
        cluster.start()
    except PostgresUnavailable as error:
        pytest.fail(str(error), pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    return postgres_cluster.url()


@pytest.fixture
def pg_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    name = postgres_cluster.create_database()
    yield postgres_cluster.url(name)
    with contextlib.suppress(Exception):
        postgres_cluster.drop_database(name)
