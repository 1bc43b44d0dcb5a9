"""Choosing the store: ``[store] url`` → the backend that serves it, through the namekeeper_store hook."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from _cli import TOKEN, run, write_config
from _fake_public import FakePublicIndex
from _postgres import PostgresServer
from _servers import free_port
from namekeeper import config as cfg
from namekeeper.app import open_store
from namekeeper.errors import ConfigError
from namekeeper.store.sqlite import Store
from test_plugins import install_fake_distribution


def store_config(tmp_path: Path, body: str) -> cfg.Config:
    path = tmp_path / "namekeeper.toml"
    path.write_text("[store]\n" + body + "\n")
    return cfg.load(path)


def test_a_plain_path_and_a_sqlite_url_are_the_sqlite_store(tmp_path: Path) -> None:
    assert store_config(tmp_path, 'url = "state/a.sqlite3"').store.path == \
        (tmp_path / "state/a.sqlite3").resolve()
    c = store_config(tmp_path, f'url = "sqlite:///{tmp_path}/b.sqlite3"')
    assert c.store.url is None and c.store.path == tmp_path / "b.sqlite3"
    store = open_store(c)
    assert isinstance(store, Store) and store.path == tmp_path / "b.sqlite3"


def test_a_postgresql_url_keeps_its_password_out_of_the_file(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    monkeypatch.setenv("NAMEKEEPER_STORE_PASSWORD", "s3cret-from-env")
    c = store_config(tmp_path, 'url = "postgresql://nk@db.internal:5432/namekeeper"')
    assert c.store.url == "postgresql://nk@db.internal:5432/namekeeper"
    assert c.store.password is not None and c.store.password.reveal() == "s3cret-from-env"
    assert "s3cret" not in repr(c)


@pytest.mark.parametrize("body, message", [
    ('url = "postgresql://nk:hunter2@db/nk"', "must not contain a password"),
    ('url = "postgresql://nk@db/nk?password=hunter2"', "must not contain a password"),
    ('url = "sqlite://relative"', "sqlite:///path/to/file"),
    ('path = "a.sqlite3"\nurl = "postgresql://db/nk"', "either path or url"),
])
def test_bad_store_settings_are_one_clear_error(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        store_config(tmp_path, body)
    assert "hunter2" not in str(err.value)


def test_an_unknown_scheme_names_the_missing_plugin(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no installed plugin provides a 'mongodb' store"):
        open_store(store_config(tmp_path, 'url = "mongodb://db/nk"'))


def test_a_third_party_plugin_serves_its_own_scheme(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_distribution(
        tmp_path / "site", "nk_memstore", {"memstore": "nk_memstore_mod"},
        {"nk_memstore_mod": (
            "from namekeeper.hookspecs import hookimpl\n"
            "from namekeeper.store.sqlite import Store\n"
            "@hookimpl\ndef namekeeper_store(config):\n"
            "    if (config.store.url or '').startswith('mem:'):\n"
            "        return Store(':memory:')\n")})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert open_store(store_config(tmp_path, 'url = "mem://x"')).location == ":memory:"
    # ... and leaves every other URL to the built-ins.
    assert isinstance(open_store(store_config(tmp_path, 'url = "x.sqlite3"')), Store)


@pytest.mark.slow
def test_reserve_and_status_on_a_postgresql_store(capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path, fake: FakePublicIndex,
                                                  postgres: PostgresServer,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", TOKEN)
    monkeypatch.setenv("NAMEKEEPER_STORE_PASSWORD", postgres.password)
    config = write_config(tmp_path, fake.config_toml())
    config.write_text(config.read_text().replace('path = "state.sqlite3"',
                                                 f'url = "{postgres.new_database()}"'))
    fake.add_project("acme-utils", owners=["mallory"])
    run(capsys, "--config", str(config), "reserve", "acme-billing", "acme-utils")
    code, rows, _ = run(capsys, "--config", str(config), "--format", "json", "status")
    by_name = {r["name"]: r for r in rows}
    assert by_name["acme-billing"]["verdict"] == "ours" and by_name["acme-billing"]["reserved_at"]
    assert by_name["acme-utils"]["verdict"] == "taken"
    assert code == 1 and not (tmp_path / "state.sqlite3").exists()


@pytest.mark.slow
def test_an_unreachable_database_is_one_line_exit_2(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    config = tmp_path / "namekeeper.toml"
    config.write_text(f'[store]\nurl = "postgresql://nk@127.0.0.1:{free_port()}/nk'
                      '?connect_timeout=1"\n')
    # A real process: the pool's own warnings would reach the terminal, not pytest's log capture.
    answer = subprocess.run([sys.executable, "-m", "namekeeper.cli", "--config", str(config),
                             "status"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "NAMEKEEPER_STORE_PASSWORD": "never-shown-pw"})
    assert answer.returncode == 2
    assert answer.stderr.count("\n") == 1, answer.stderr
    assert "cannot connect to the store at postgresql://nk@127.0.0.1" in answer.stderr
    assert "never-shown-pw" not in answer.stderr and "Traceback" not in answer.stderr


def test_nothing_outside_the_store_package_speaks_to_a_database_driver() -> None:
    # Callers see the store's interface (its exception types included), never sqlite3/psycopg.
    src = Path(cfg.__file__).parent
    drivers = re.compile(r"^\s*(import|from)\s+(sqlite3|psycopg)\b", re.M)
    offenders = [str(p.relative_to(src)) for p in src.rglob("*.py")
                 if p.relative_to(src).parts[0] != "store" and drivers.search(p.read_text())]
    assert offenders == []


@pytest.mark.slow
def test_every_command_gives_its_database_connections_back(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, fake: FakePublicIndex,
        postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # A pool left to the garbage collector is closed from one of its own threads, which
    # prints "Exception ignored ... cannot join current thread" and a traceback into the log.
    from namekeeper import server
    from namekeeper.store import postgres as pg

    pools: list[pg.ConnectionPool] = []

    class TrackedPool(pg.ConnectionPool):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            pools.append(self)

    monkeypatch.setattr(pg, "ConnectionPool", TrackedPool)
    monkeypatch.setattr(server, "serve", lambda config: 0)  # the command's own checks run
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", TOKEN)
    monkeypatch.setenv("NAMEKEEPER_STORE_PASSWORD", postgres.password)
    config = write_config(tmp_path, fake.config_toml())
    config.write_text(config.read_text().replace('path = "state.sqlite3"',
                                                 f'url = "{postgres.new_database()}"'))
    lock = tmp_path / "pylock.toml"
    lock.write_text('lock-version = "1.0"\n[[packages]]\nname = "acme-ledger"\nversion = "1.0"\n'
                    'index = "https://devpi.example.com/acme/prod/+simple/"\n')
    for command in (["reserve", "acme-billing"], ["check", "acme-billing"], ["status"],
                    ["audit", "--lock", str(lock)], ["watch", "--once"],
                    ["forget", "acme-billing"], ["serve", "--port", "0"]):
        run(capsys, "--config", str(config), *command)
        assert all(pool.closed for pool in pools), command
    assert len(pools) >= 6  # every command but serve (whose service opens its own) used it


def test_every_psycopg_error_is_one_of_the_stores_two_in_one_line_without_a_secret() -> None:
    psycopg = pytest.importorskip("psycopg")
    from psycopg import errors as pg
    from psycopg_pool import PoolTimeout

    from namekeeper.store.interface import StoreUnavailable, StoreUnusable
    from namekeeper.store.postgres import store_error

    where = "postgresql://nk@db.internal/nk"
    later = [psycopg.OperationalError("server closed the connection unexpectedly\n\tThis ..."),
             psycopg.InterfaceError("the connection is closed"), PoolTimeout("timed out"),
             pg.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"),
             pg.DeadlockDetected("deadlock detected"), pg.SerializationFailure("could not "
             "serialize access due to concurrent update"), pg.AdminShutdown("terminating "
             "connection due to administrator command"), pg.IdleInTransactionSessionTimeout(
             "terminating connection due to idle-in-transaction timeout")]
    for exc in later:
        assert type(store_error(where, exc)) is StoreUnavailable, exc
    never = [pg.InsufficientPrivilege("permission denied for table names"),
             pg.UndefinedTable('relation "names" does not exist\nLINE 1: SELECT * FROM names'),
             pg.UndefinedColumn("column names.note does not exist"),
             psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")]
    for exc in never:
        assert type(store_error(where, exc)) is StoreUnusable, exc
    assert str(store_error(where, never[1])) == (
        f'the store at {where} cannot be used: relation "names" does not exist')
    echoed = psycopg.ProgrammingError('invalid connection option "passwd=hunter2"\nmore')
    assert str(store_error(where, echoed, [None, "hunter2"])) == (
        f'the store at {where} cannot be used: invalid connection option "passwd=***"')


@pytest.mark.slow
def test_a_deadlock_lost_on_every_retry_is_the_store_unavailable(postgres: PostgresServer) -> None:
    from psycopg import errors as pg

    from namekeeper.store.interface import StoreUnavailable
    from namekeeper.store.postgres import PostgresStore

    store = PostgresStore(postgres.new_database(), password=postgres.password)
    tries = []

    def work(tx: object) -> None:
        tries.append(1)
        raise pg.DeadlockDetected("deadlock detected")

    try:
        with pytest.raises(StoreUnavailable, match="is unavailable: deadlock detected"):
            store._transaction(work)
        assert len(tries) == 5
    finally:
        store.close()


@pytest.mark.slow
def test_no_statement_is_prepared_on_the_server_so_a_transaction_pooler_can_sit_between(
        postgres: PostgresServer) -> None:
    # PgBouncer in transaction mode hands each transaction to any server connection: a
    # statement psycopg prepared on one (after 5 uses) is unknown to the next, and every
    # error but a lost connection stops the workers.
    from namekeeper.store.postgres import PostgresStore

    store = PostgresStore(postgres.new_database(), password=postgres.password, max_size=1)
    try:
        for _ in range(20):
            store.get("acme-a")
            store.claim("holder")
        with store._pool.connection() as conn:  # the one connection all of that went through
            assert conn.execute("SELECT count(*) AS n FROM pg_prepared_statements"
                                ).fetchone()["n"] == 0
    finally:
        store.close()
