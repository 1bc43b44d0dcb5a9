"""The test PostgreSQL cluster: real, unprivileged, password-protected, stoppable."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from _postgres import PostgresServer, server_binaries, start_postgres

pytestmark = pytest.mark.slow


def test_the_cluster_answers_sql_on_loopback(postgres: PostgresServer) -> None:
    with postgres.connect() as conn:
        row = conn.execute("SELECT current_setting('listen_addresses'), "
                           "current_setting('port')::int, current_user").fetchone()
    assert row == ("127.0.0.1", postgres.port, "namekeeper")


def test_the_server_does_not_run_as_root(postgres: PostgresServer) -> None:
    pid = int((postgres.datadir / "postmaster.pid").read_text().split()[0])
    assert os.stat(f"/proc/{pid}").st_uid != 0


def test_a_wrong_password_is_refused(postgres: PostgresServer) -> None:
    import psycopg

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host=postgres.host, port=postgres.port, user=postgres.user,
                        password="not-" + postgres.password, dbname="postgres")


def test_each_new_database_is_empty_and_separate(postgres: PostgresServer) -> None:
    first, second = postgres.new_database(), postgres.new_database()
    assert first != second and "@" in first and postgres.password not in first
    db = first.rsplit("/", 1)[1]
    with postgres.connect(db) as conn:
        conn.execute("CREATE TABLE t (x int)")
    with postgres.connect(second.rsplit("/", 1)[1]) as conn:
        assert conn.execute("SELECT to_regclass('t')").fetchone() == (None,)


@pytest.mark.skipif(server_binaries() is None, reason="PostgreSQL not installed")
def test_a_cluster_stops_and_starts_again_keeping_its_data() -> None:
    # Its own cluster: the session's one must stay up for the other tests.
    workdir = Path(tempfile.mkdtemp(prefix="namekeeper-pg-"))
    server = start_postgres(workdir)
    try:
        with server.connect() as conn:
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (42)")
        server.stop("immediate")
        assert not server.running()
        server.start()
        with server.connect() as conn:
            assert conn.execute("SELECT x FROM kept").fetchone() == (42,)
    finally:
        if server.running():
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
