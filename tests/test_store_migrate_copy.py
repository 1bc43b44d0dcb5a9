"""`namekeeper store migrate` (versioned, refuses newer) and `store copy` (identical status)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from _cli import TOKEN, run, write_config
from _fake_public import FakePublicIndex
from _postgres import PostgresServer
from namekeeper.model import NameEvent
from namekeeper.store import postgres as postgres_store
from namekeeper.store.interface import Retry
from namekeeper.store.sqlite import Store

pytestmark = pytest.mark.slow


def config_for(tmp_path: Path, store_url: str, name: str = "nk.toml") -> Path:
    path = tmp_path / name
    path.write_text(f'[store]\nurl = "{store_url}"\n')
    return path


def set_schema_version(postgres: PostgresServer, url: str, version: int) -> None:
    with postgres.connect(url.rsplit("/", 1)[1]) as conn:
        conn.execute("UPDATE settings SET value = %s WHERE key = 'schema_version'", (str(version),))


@pytest.fixture
def pg_env(postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> PostgresServer:
    monkeypatch.setenv("NAMEKEEPER_STORE_PASSWORD", postgres.password)
    return postgres


def test_migrate_creates_the_schema_of_an_empty_database(capsys: pytest.CaptureFixture[str],
                                                         tmp_path: Path,
                                                         pg_env: PostgresServer) -> None:
    url = pg_env.new_database()
    cfg = config_for(tmp_path, url)
    code, out, _ = run(capsys, "--config", str(cfg), "store", "migrate")
    assert code == 0 and f"schema version 0 -> {postgres_store.SCHEMA_VERSION}" in out
    code, out, _ = run(capsys, "--config", str(cfg), "store", "migrate")
    assert code == 0 and "nothing to do" in out
    code, rows, _ = run(capsys, "--config", str(cfg), "--format", "json", "status")
    assert code == 0 and rows == []


def test_an_older_schema_is_upgraded_only_by_migrate(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path, pg_env: PostgresServer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    url = pg_env.new_database()
    cfg = config_for(tmp_path, url)
    assert run(capsys, "--config", str(cfg), "store", "migrate")[0] == 0
    # This namekeeper "knows" a version that the database does not have yet.
    known = postgres_store.SCHEMA_VERSION
    monkeypatch.setattr(postgres_store, "SCHEMA_VERSION", known + 1)
    monkeypatch.setitem(postgres_store.MIGRATIONS, known + 1,
                        "ALTER TABLE names ADD COLUMN note TEXT")
    code, _, err = run(capsys, "--config", str(cfg), "status")
    assert code == 2 and "run `namekeeper store migrate`" in err and err.count("\n") == 1
    code, out, _ = run(capsys, "--config", str(cfg), "store", "migrate")
    assert code == 0 and f"schema version {known} -> {known + 1}" in out
    with pg_env.connect(url.rsplit("/", 1)[1]) as conn:
        assert conn.execute("SELECT note FROM names").fetchall() == []
    assert run(capsys, "--config", str(cfg), "status")[0] == 0


def test_a_newer_schema_is_refused_by_every_command(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path,
                                                   pg_env: PostgresServer) -> None:
    url = pg_env.new_database()
    cfg = config_for(tmp_path, url)
    assert run(capsys, "--config", str(cfg), "store", "migrate")[0] == 0
    set_schema_version(pg_env, url, 99)
    for command in (["status"], ["store", "migrate"], ["check", "acme-a"]):
        code, _, err = run(capsys, "--config", str(cfg), *command)
        assert code == 2 and "version 99, newer than this namekeeper knows" in err, command
        assert "Traceback" not in err
    with pg_env.connect(url.rsplit("/", 1)[1]) as conn:
        assert conn.execute("SELECT value FROM settings WHERE key='schema_version'"
                            ).fetchone() == ("99",)


def test_a_newer_sqlite_file_is_refused_too(capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT OR REPLACE INTO settings(key, value) VALUES ('schema_version', '7')")
    code, _, err = run(capsys, "--config", str(config_for(tmp_path, str(path))), "status")
    assert code == 2 and "version 7, newer" in err


def fill_a_sqlite_store(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                        fake: FakePublicIndex, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store with reservations, a taken name, history, queue states and delivery records."""
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", TOKEN)
    cfg = write_config(tmp_path, fake.config_toml())
    fake.add_project("acme-utils", owners=["mallory"])
    run(capsys, "--config", str(cfg), "reserve", "acme-billing", "acme-utils")
    store = Store(tmp_path / "state.sqlite3")
    store.accept(NameEvent(name="acme-done", display_name="acme-done", source="poll",
                           index="private", key="k-done"))
    done = store.claim("w")
    assert done is not None
    store.complete(done.name, done.claim)
    store.accept_many([NameEvent(name=n, display_name=n.upper(), source="artifactory",
                                 index="pypi-local", version="1.0", key=f"k-{n}")
                       for n in ("acme-queued", "acme-claimed", "acme-failed")])
    store.claim("w")  # one of them stays claimed
    failing = store.claim("w")
    assert failing is not None
    store.release(failing.name, failing.claim, not_before=0, error="boom", max_attempts=1)
    store.raise_condition("public-index-unreachable", "down")
    log = store.delivery_log()
    log.record_delivery("ops", "acme-utils", "fp-1", True, None)
    log.schedule_retry(Retry("ops", "acme-billing", "fp-2", "{}", 1, 123.0))
    store.take_budget("acme-billing", 20)
    store.close()
    return cfg


def test_copy_from_sqlite_into_postgresql_keeps_status_identical(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, fake: FakePublicIndex,
        pg_env: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    sqlite_cfg = fill_a_sqlite_store(capsys, tmp_path, fake, monkeypatch)
    url = pg_env.new_database()
    code, before, _ = run(capsys, "--config", str(sqlite_cfg), "--format", "json", "status")
    assert {r["queue"] for r in before} >= {"pending", "claimed", "failed", "done"}

    code, out, err = run(capsys, "store", "copy", "--from", str(tmp_path / "state.sqlite3"),
                         "--to", url)
    assert code == 0, err
    assert "copied 6 name(s)" in out and pg_env.password not in out

    pg_cfg = config_for(tmp_path, url, "pg.toml")
    _, after, _ = run(capsys, "--config", str(pg_cfg), "--format", "json", "status")
    assert after == before

    source, target = Store(tmp_path / "state.sqlite3"), postgres_store.PostgresStore(
        url, password=pg_env.password)
    try:
        for name in ("acme-billing", "acme-utils", "acme-failed"):
            assert target.history(name) == source.history(name)
        assert target.budget_spent_at() == source.budget_spent_at()
        log = target.delivery_log()
        assert log.was_delivered("ops", "acme-utils", "fp-1")
        assert log.retry_for("ops", "acme-billing") == Retry("ops", "acme-billing", "fp-2",
                                                             "{}", 1, 123.0)
        assert target.snapshot() == source.snapshot()
    finally:
        source.close()
        target.close()

    # ... and back into a new SQLite file, still the same.
    back = tmp_path / "back.sqlite3"
    assert run(capsys, "store", "copy", "--from", url, "--to", f"sqlite:///{back}")[0] == 0
    _, again, _ = run(capsys, "--config", str(config_for(tmp_path, str(back), "b.toml")),
                      "--format", "json", "status")
    assert again == before


def test_copy_refuses_a_store_that_is_not_empty(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path, fake: FakePublicIndex,
                                               pg_env: PostgresServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    fill_a_sqlite_store(capsys, tmp_path, fake, monkeypatch)
    url = pg_env.new_database()
    sqlite_path = str(tmp_path / "state.sqlite3")
    assert run(capsys, "store", "copy", "--from", sqlite_path, "--to", url)[0] == 0
    code, _, err = run(capsys, "store", "copy", "--from", sqlite_path, "--to", url)
    assert code == 2 and "is not empty" in err and err.count("\n") == 1
    code, _, err = run(capsys, "store", "copy", "--from", sqlite_path, "--to", sqlite_path)
    assert code == 2


def test_copy_from_a_store_that_does_not_exist_is_an_error_and_creates_nothing(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, pg_env: PostgresServer) -> None:
    typo, target = tmp_path / "stat.sqlite3", tmp_path / "b.sqlite3"
    code, _, err = run(capsys, "store", "copy", "--from", str(typo), "--to", str(target))
    assert code == 2 and "no such store" in err and err.count("\n") == 1
    assert not typo.exists() and not target.exists()
    empty = pg_env.new_database()  # a database namekeeper never used
    code, _, err = run(capsys, "store", "copy", "--from", empty, "--to", str(target))
    assert code == 2 and "holds no namekeeper store" in err and err.count("\n") == 1
    assert not target.exists()


def test_copy_output_as_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    src = tmp_path / "a.sqlite3"
    Store(src).accept(NameEvent(name="acme-x", display_name="acme-x", source="cli",
                                index="i", key="k"))
    code, data, _ = run(capsys, "--format", "json", "store", "copy", "--from", str(src),
                        "--to", str(tmp_path / "b.sqlite3"))
    assert code == 0 and data["rows"]["names"] == 1 and data["rows"]["queue"] == 1
    assert json.loads(json.dumps(data))["to"].endswith("b.sqlite3")


def test_a_version_1_database_gets_the_index_on_the_too_similar_key(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, pg_env: PostgresServer) -> None:
    url = pg_env.new_database()
    cfg = config_for(tmp_path, url)
    assert run(capsys, "--config", str(cfg), "store", "migrate")[0] == 0
    with pg_env.connect(url.rsplit("/", 1)[1]) as conn:  # as version 1 left it
        conn.execute("DROP INDEX names_ultra")
    set_schema_version(pg_env, url, 1)
    code, out, _ = run(capsys, "--config", str(cfg), "store", "migrate")
    assert code == 0 and "schema version 1 -> 2" in out
    with pg_env.connect(url.rsplit("/", 1)[1]) as conn:
        assert conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'names' "
                            "AND indexname = 'names_ultra'").fetchall() == [("names_ultra",)]
