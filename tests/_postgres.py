"""A real PostgreSQL server for tests: a throw-away cluster on 127.0.0.1, stopped at the end.

Debian's ``postgresql`` package ships the server binaries under
``/usr/lib/postgresql/<version>/bin``; `.ci/run` installs it when it is missing.
The server refuses to run as root, so when the tests run as root the cluster
is created and run as the unprivileged ``postgres`` user (``runuser``), in a
temporary directory handed to that user.  Password authentication
(scram-sha-256) is on, as it would be on a shared database host.

One cluster serves the whole session; each test that wants a clean slate asks
for its own database with `PostgresServer.new_database`.

Usage::

    def test_something(postgres):
        url = postgres.new_database()      # postgresql://namekeeper@127.0.0.1:<port>/<db>
        password = postgres.password       # what NAMEKEEPER_STORE_PASSWORD would hold
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from _servers import free_port

#: The superuser the tests create; the store connects as this role.
USER = "namekeeper"
#: The account the server runs as when the tests run as root (Debian's package creates it).
SERVICE_ACCOUNT = "postgres"


class PostgresError(RuntimeError):
    """The test cluster could not be created, started or stopped; carries the tool's output."""


def server_binaries() -> Path | None:
    """The newest installed PostgreSQL's bin directory, or None when none is installed."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parent.parent.name)
                        if Path(p).parent.parent.name.isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


@dataclass
class PostgresServer:
    """A running cluster: where it listens, the role's password, and start/stop for fault tests."""

    bindir: Path
    datadir: Path
    port: int
    password: str
    host: str = "127.0.0.1"
    user: str = USER
    _databases: list[str] = field(default_factory=list)

    def _run(self, tool: str, *args: str, timeout: float = 60.0) -> str:
        command = [str(self.bindir / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SERVICE_ACCOUNT, "--", *command]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, cwd=self.datadir.parent)
        if proc.returncode != 0:
            raise PostgresError(f"{tool} failed ({proc.returncode}): "
                                f"{(proc.stdout + proc.stderr).strip()[-2000:]}")
        return proc.stdout

    def url(self, database: str = "postgres") -> str:
        """A libpq URL without the password (it comes from the environment, as in production)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def start(self) -> None:
        # -k: the Unix socket goes into the private directory, not /var/run/postgresql.
        self._run("pg_ctl", "-D", str(self.datadir), "-w", "-t", "60", "-l",
                  str(self.datadir.parent / "server.log"), "start",
                  "-o", f"-h {self.host} -p {self.port} -k {self.datadir.parent} "
                        "-c max_connections=200")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate`` is the nearest thing to pulling the plug)."""
        self._run("pg_ctl", "-D", str(self.datadir), "-w", "-t", "60", "-m", mode, "stop")

    def running(self) -> bool:
        command = [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "status"]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SERVICE_ACCOUNT, "--", *command]
        return subprocess.run(command, capture_output=True, stdin=subprocess.DEVNULL,
                              cwd=self.datadir.parent).returncode == 0

    def connect(self, database: str = "postgres"):  # type: ignore[no-untyped-def]
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.user,
                               password=self.password, dbname=database, autocommit=True)

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL (no password in it)."""
        name = f"t{len(self._databases)}_{secrets.token_hex(4)}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self._databases.append(name)
        return self.url(name)


def start_postgres(workdir: Path) -> PostgresServer:
    """initdb + pg_ctl start in ``workdir`` (which the server account must be able to own)."""
    bindir = server_binaries()
    if bindir is None:
        raise PostgresError("PostgreSQL server binaries not found (install Debian's postgresql)")
    datadir = workdir / "data"
    password = secrets.token_urlsafe(18)
    pwfile = workdir / "pwfile"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(workdir, SERVICE_ACCOUNT)
        shutil.chown(pwfile, SERVICE_ACCOUNT)
    server = PostgresServer(bindir=bindir, datadir=datadir, port=free_port(), password=password)
    server._run("initdb", "-D", str(datadir), "-U", USER, "--pwfile", str(pwfile),
                "-A", "scram-sha-256", "-E", "UTF8", "--no-sync", timeout=120)
    pwfile.unlink()
    server.start()
    return server


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A cluster of its own in a temp dir, stopped and removed afterwards."""
    # Not under pytest's basetemp: that is private to the test user, and the server account
    # must be able to reach its data directory.
    workdir = Path(tempfile.mkdtemp(prefix="namekeeper-pg-"))
    try:
        server = start_postgres(workdir)
        try:
            yield server
        finally:
            if server.running():
                server.stop("immediate")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the session (skipped where none is installed, outside CI)."""
    if server_binaries() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed: .ci/run should have installed it")
        pytest.skip("PostgreSQL server binaries not installed (Debian: apt-get install postgresql)")
    with running_postgres() as server:
        yield server
