"""Every bad input or environment is one line on stderr and exit 2, never a traceback."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from _cli import TOKEN, run, write_config
from _fake_public import FakePublicIndex
from _postgres import PostgresServer
from namekeeper import errors


def one_line_error(err: str) -> None:
    assert err.startswith("namekeeper: error:"), err
    assert err.count("\n") == 1 and "Traceback" not in err, err


def postgres_config(tmp_path: Path, fake: FakePublicIndex, url: str) -> Path:
    path = write_config(tmp_path, fake.config_toml())
    path.write_text(path.read_text().replace('path = "state.sqlite3"', f'url = "{url}"'))
    return path


def test_every_namekeeper_error_shares_one_base() -> None:
    from namekeeper.config import ConfigError
    from namekeeper.errors import PlaceholderError
    from namekeeper.names import InvalidName
    from namekeeper.public.interface import PublicIndexUnavailable

    for kind in (errors.UsageError, ConfigError, InvalidName, PlaceholderError,
                 errors.StoreError, PublicIndexUnavailable):
        assert issubclass(kind, errors.NamekeeperError)
    assert issubclass(PublicIndexUnavailable, errors.IndexUnreachable)


def test_a_port_in_use_is_one_line(capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run(capsys, "--config", str(cfg), "serve", "--port", str(port))
    assert code == 2
    one_line_error(err)
    assert f"127.0.0.1:{port}" in err and "already in use" in err


def test_a_store_path_that_cannot_be_created_is_one_line(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, fake: FakePublicIndex) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cfg = write_config(tmp_path, fake.config_toml()).read_text()
    path = tmp_path / "nk.toml"
    path.write_text(cfg.replace('path = "state.sqlite3"', f'path = "{blocker}/sub/db"'))
    code, _, err = run(capsys, "--config", str(path), "status")
    assert code == 2
    one_line_error(err)
    assert "[store] path" in err


def test_a_store_that_is_not_a_database_is_one_line(
        capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    (cfg.parent / "state.sqlite3").write_bytes(b"this is not sqlite at all" * 100)
    code, _, err = run(capsys, "--config", str(cfg), "check", "acme-x")
    assert code == 2
    one_line_error(err)
    assert "not a namekeeper database" in err
    with pytest.raises(sqlite3.DatabaseError):  # and it was left as it was
        sqlite3.connect(cfg.parent / "state.sqlite3").execute("SELECT 1 FROM names")


@pytest.mark.slow
def test_a_placeholder_template_error_is_one_line(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, fake: FakePublicIndex,
        monkeypatch: pytest.MonkeyPatch) -> None:
    template = tmp_path / "tpl"
    template.mkdir()
    (template / "pyproject.toml").write_text("[build-system]\nrequires = ['setuptools']\n")
    cfg = write_config(tmp_path, fake.config_toml(), "").read_text()
    path = tmp_path / "nk.toml"
    path.write_text(cfg.replace('contact = "security@acme.example"',
                                'contact = "security@acme.example"\ntemplate = "tpl"'))
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", TOKEN)
    code, _, err = run(capsys, "--config", str(path), "reserve", "acme-x")
    assert code == 2
    one_line_error(err)
    assert "requires = []" in err
    assert sum(fake.attempts.values()) == 0


def test_a_config_value_of_the_wrong_type_says_what_it_must_be(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "nk.toml"
    path.write_text("[public]\ntimeout = 'long'\n[serve]\nport = 'x'\n")
    code, _, err = run(capsys, "--config", str(path), "check", "acme-x")
    assert code == 2
    one_line_error(err)
    assert "timeout must be a number of seconds" in err and "port must be" in err
    assert "<class" not in err


@pytest.mark.slow
def test_python_dash_m_namekeeper_runs_the_command_line() -> None:
    done = subprocess.run([sys.executable, "-m", "namekeeper", "--version"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("namekeeper ")


def test_serve_refuses_to_start_without_an_owner_for_an_index_with_owners(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, fake: FakePublicIndex) -> None:
    cfg = write_config(tmp_path, fake.config_toml(), ours="")
    code, _, err = run(capsys, "--config", str(cfg), "serve", "--port", "0")
    assert code == 2
    one_line_error(err)
    assert "[public] owners" in err


@pytest.mark.parametrize("url", ["http://[::1/simple/", "http://host:99999/simple/"])
def test_a_url_urllib_cannot_take_apart_is_one_line_exit_2(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, url: str) -> None:
    # Exit 1 would tell CI "a name is at risk"; a traceback is no answer at all.
    cfg = write_config(tmp_path, "[public]\n")
    code, _, err = run(capsys, "--config", str(cfg), "audit", "--index", url)
    assert code == 2
    one_line_error(err)
    assert "--index must be an http(s) URL" in err
    path = tmp_path / "poll.toml"
    path.write_text(f'[[poll]]\nurl = "{url}"\n')
    code, _, err = run(capsys, "--config", str(path), "check", "acme-x")
    assert code == 2
    one_line_error(err)
    assert "[[poll]] entry 1 url must be an http(s) URL" in err


def test_a_database_that_turned_read_only_is_one_line_exit_2(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, fake: FakePublicIndex,
        postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # A standby after a failover: every write is refused until the primary is back.
    from namekeeper.store.interface import StoreUnavailable
    from namekeeper.store.postgres import PostgresStore

    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", TOKEN)
    monkeypatch.setenv("NAMEKEEPER_STORE_PASSWORD", postgres.password)
    url = postgres.new_database()
    config = postgres_config(tmp_path, fake, url)
    assert run(capsys, "--config", str(config), "store", "migrate")[0] == 0
    with postgres.connect() as conn:
        conn.execute(f'ALTER DATABASE "{url.rsplit("/", 1)[1]}" '
                     "SET default_transaction_read_only = on")
    code, _, err = run(capsys, "--config", str(config), "reserve", "acme-billing")
    assert code == 2
    one_line_error(err)
    assert f"the store at {url} is unavailable: cannot execute" in err
    assert "read-only transaction" in err
    store = PostgresStore(url, password=postgres.password, create_schema=False)
    try:
        with pytest.raises(StoreUnavailable, match="read-only transaction"):
            store.raise_condition("k", "text")
        assert not store.writable()
    finally:
        store.close()


def test_a_role_without_a_permission_the_store_needs_is_one_line_exit_2(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, fake: FakePublicIndex,
        postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import secrets

    from namekeeper.store.interface import StoreUnusable
    from namekeeper.store.postgres import PostgresStore

    url = postgres.new_database()
    database = url.rsplit("/", 1)[1]
    PostgresStore(url, password=postgres.password).close()  # the schema, as its owner
    role, password = f"reader_{secrets.token_hex(4)}", f"pw-{secrets.token_hex(8)}"
    with postgres.connect() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    with postgres.connect(database) as conn:
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    reader = url.replace(f"//{postgres.user}@", f"//{role}@")
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", TOKEN)
    monkeypatch.setenv("NAMEKEEPER_STORE_PASSWORD", password)
    config = postgres_config(tmp_path, fake, reader)
    assert run(capsys, "--config", str(config), "status")[0] == 0  # reading is allowed
    code, _, err = run(capsys, "--config", str(config), "reserve", "acme-billing")
    assert code == 2
    one_line_error(err)
    assert f"the store at {reader} cannot be used: permission denied for table" in err
    assert password not in err
    store = PostgresStore(reader, password=password, create_schema=False)
    try:
        with pytest.raises(StoreUnusable, match="permission denied"):
            store.raise_condition("k", "text")
    finally:
        store.close()


@pytest.mark.parametrize(("wrong", "reason"), [
    ("password", 'password authentication failed for user "namekeeper"'),
    ("database", 'database "nosuchdb" does not exist'),
])
def test_a_wrong_store_password_or_database_is_libpqs_reason_in_one_line(
        tmp_path: Path, postgres: PostgresServer, wrong: str, reason: str) -> None:
    # The pool keeps libpq's reason to itself: all one saw was "cannot connect ... within 5 s".
    password = "wrong-pw-never-shown" if wrong == "password" else postgres.password
    url = postgres.url("nosuchdb" if wrong == "database" else "postgres")
    config = tmp_path / "namekeeper.toml"
    config.write_text(f'[store]\nurl = "{url}"\n')
    # A real process: the pool's own warnings would reach the terminal, not pytest's log capture.
    answer = subprocess.run([sys.executable, "-m", "namekeeper.cli", "--config", str(config),
                             "status"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "NAMEKEEPER_STORE_PASSWORD": password})
    assert answer.returncode == 2
    one_line_error(answer.stderr)
    assert answer.stderr == f"namekeeper: error: cannot connect to the store at {url}: {reason}\n"
    assert password not in answer.stderr


def test_a_store_copy_option_with_a_password_names_the_option_not_the_config_file(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from namekeeper.store.sqlite import Store

    Store(tmp_path / "a.sqlite3").close()
    for option, args in (("--from", ["--from", "postgresql://bot:hunter2@db.example.com/nk",
                                      "--to", str(tmp_path / "b.sqlite3")]),
                         ("--to", ["--from", str(tmp_path / "a.sqlite3"),
                                   "--to", "postgresql://bot:hunter2@db.example.com/nk"])):
        code, _, err = run(capsys, "store", "copy", *args)
        one_line_error(err)
        assert code == 2 and err.startswith(f"namekeeper: error: {option}: the store URL must "
                                            "not contain a password: set NAMEKEEPER_STORE_PASSWORD")
        assert "hunter2" not in err and "[store]" not in err


def test_ctrl_c_during_the_public_listing_download_ends_the_audit_at_once(
        capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import signal
    import threading
    import time

    from namekeeper.public import listing

    released = threading.Event()

    def slow_download(*args: object, **kwargs: object) -> None:
        released.wait(30)  # a 40 MB listing on a slow link

    monkeypatch.setattr(listing, "fetch_listing", slow_download)
    lock = tmp_path / "uv.lock"
    lock.write_text('version = 1\n[[package]]\nname = "acme-a"\n'
                    'source = { registry = "https://devpi.example.com/simple/" }\n')
    cfg = write_config(tmp_path, '[public]\nsimple-url = "http://127.0.0.1:9/simple/"\n')
    main_thread = threading.main_thread().ident
    assert main_thread is not None
    timer = threading.Timer(0.5, signal.pthread_kill, (main_thread, signal.SIGINT))  # Ctrl-C
    timer.start()
    started = time.monotonic()
    try:
        code = run(capsys, "--config", str(cfg), "audit", "--lock", str(lock))[0]
    finally:
        released.set()
        timer.cancel()
    assert code == 130 and time.monotonic() - started < 10


def test_a_password_rotated_while_the_store_is_open_says_so(postgres: PostgresServer) -> None:
    # At run time the pool kept libpq's reason to itself too: "couldn't get a connection
    # after 1.00 sec" was all a replica's log and /healthz said of a rotated password.
    import secrets

    from namekeeper.store.interface import StoreUnavailable
    from namekeeper.store.postgres import PostgresStore

    url = postgres.new_database()
    database = url.rsplit("/", 1)[1]
    role, password = f"rotated_{secrets.token_hex(4)}", f"pw-{secrets.token_hex(8)}"
    with postgres.connect() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(f"ALTER DATABASE {database} OWNER TO {role}")
    own = url.replace(f"//{postgres.user}@", f"//{role}@")
    store = PostgresStore(own, password=password, timeout=1.0)
    try:
        store.raise_condition("k", "before")
        with postgres.connect() as conn:
            conn.execute(f"ALTER ROLE {role} PASSWORD 'rotated-{secrets.token_hex(8)}'")
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE usename = %s", (role,))
        with pytest.raises(StoreUnavailable) as caught:
            store.raise_condition("k", "after")
        assert str(caught.value) == (f"the store at {own} is unavailable: password "
                                     f'authentication failed for user "{role}"')
        assert password not in str(caught.value)
    finally:
        store.close()
