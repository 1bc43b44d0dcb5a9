"""`/healthz` tells the truth, cheaply; slow clients and a corrupt store cannot take the service down."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from _fake_public import FakePublicIndex
from _servers import Service, payload, wait_for
from namekeeper import config as cfg
from namekeeper.cli import main
from namekeeper.model import NameEvent
from namekeeper.server import Service as InProcessService
from namekeeper.store.interface import StoreUnusable
from namekeeper.store.sqlite import Store


def start_answering(svc: Service) -> Service:
    """Start ``svc`` and wait until /healthz answers at all (healthy or not)."""
    svc._log = svc.log.open("ab")
    svc.proc = subprocess.Popen(
        [sys.executable, "-m", "namekeeper.cli", "--config", str(svc.config), "serve"],
        env=svc.env, stdout=svc._log, stderr=subprocess.STDOUT)

    def answers() -> bool:
        assert svc.proc is not None
        if svc.proc.poll() is not None:
            raise AssertionError(f"serve exited early:\n{svc.log.read_text()[-3000:]}")
        try:
            requests.get(svc.url + "healthz", timeout=1)
            return True
        except requests.ConnectionError:
            return False

    wait_for(answers, 60, "namekeeper serve to answer")
    return svc


def corrupt(path: Path) -> None:
    """Overwrite every page but the schema's: the file opens, its tables do not read."""
    with sqlite3.connect(path) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        schema_pages = {page for (page,) in db.execute(
            "SELECT pageno FROM dbstat WHERE name = 'sqlite_schema'")}
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.close()
    with path.open("r+b") as f:
        for page in range(1, pages + 1):
            if page not in schema_pages:
                f.seek((page - 1) * page_size)
                f.write(os.urandom(page_size))


@pytest.mark.slow
def test_a_corrupt_store_is_reported_without_a_hot_loop(tmp_path: Path, fake_public: FakePublicIndex,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    svc = Service(tmp_path, fake_public.config_toml())
    store = Store(svc.store_path)
    for i in range(40):
        store.accept(NameEvent(name=f"acme-{i}", display_name=f"acme-{i}", source="t", index="x",
                               key=str(i)))
    store.close()
    corrupt(svc.store_path)
    start_answering(svc)
    try:
        answer = requests.get(svc.url + "healthz", timeout=5)
        assert answer.status_code == 503
        reasons = answer.json()["reasons"]
        assert any(str(svc.store_path) in r for r in reasons)
        assert requests.get(svc.url + "metrics", timeout=5).status_code == 200
        time.sleep(1.0)
        lines_before = len(svc.log.read_text().splitlines())
        time.sleep(4.0)
        assert requests.get(svc.url + "healthz", timeout=5).status_code == 503
        # No hot loop: the workers stopped with one clear error instead of logging thousands.
        assert len(svc.log.read_text().splitlines()) - lines_before <= 5
    finally:
        svc.stop()
    code = main(["--config", str(svc.config), "status"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and str(svc.store_path) in err and "Traceback" not in err


@pytest.mark.slow
def test_slow_clients_at_the_connection_limit_do_not_stop_health_or_webhooks(
        tmp_path: Path, fake_public: FakePublicIndex) -> None:
    from _cli import TOKEN

    fake_public.add_user("acme-security", TOKEN)
    svc = Service(tmp_path, fake_public.config_toml())
    # The helper writes [serve] itself: add the keys to that table.
    svc.config.write_text(svc.config.read_text().replace(
        f"port = {svc.port}\n", f'port = {svc.port}\nconnection-limit = 20\nbody-timeout = "2s"\n'))
    svc.start()
    stop = threading.Event()
    answers: list[bytes] = []

    def dribble() -> None:
        try:
            with socket.create_connection(("127.0.0.1", svc.port), timeout=30) as s:
                s.sendall(b"POST /webhooks/artifactory HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Length: 100000\r\n\r\n")
                while not stop.is_set():
                    s.sendall(b"x")
                    s.settimeout(0.5)
                    try:
                        data = s.recv(1000)
                    except TimeoutError:
                        continue
                    if data:
                        answers.append(data)
                    return
        except OSError:
            return

    clients = [threading.Thread(target=dribble, daemon=True) for _ in range(30)]
    try:
        for t in clients:
            t.start()
        time.sleep(1.0)  # every connection is taken
        assert requests.get(svc.url + "healthz", timeout=30).status_code == 200
        assert svc.post(payload("acme-while-slow")).status_code == 202
        wait_for(lambda: answers, 30, "a slow client to be answered")
        assert any(a.startswith(b"HTTP/1.1 408") for a in answers)
        wait_for(lambda: fake_public.uploads["acme-while-slow"] == 1, 60, "the placeholder")
    finally:
        stop.set()
        for t in clients:
            t.join(5)
        svc.stop()


@pytest.mark.slow
def test_serve_without_secret_or_token_is_unhealthy_and_says_why_once(
        tmp_path: Path, fake_public: FakePublicIndex) -> None:
    svc = Service(tmp_path, fake_public.config_toml())
    del svc.env["NAMEKEEPER_PUBLIC_TOKEN"]
    del svc.env["NAMEKEEPER_ARTIFACTORY_SECRET"]
    start_answering(svc)
    try:
        answer = requests.get(svc.url + "healthz", timeout=5)
        assert answer.status_code == 503
        reasons = answer.json()["reasons"]
        assert any("NAMEKEEPER_ARTIFACTORY_SECRET" in r for r in reasons)
        assert any("upload token" in r for r in reasons)
    finally:
        svc.stop()
    log = svc.log.read_text()
    assert log.count("NAMEKEEPER_ARTIFACTORY_SECRET is not set") == 1
    assert log.count("no upload token") == 1
    assert log.count("serving on http://") == 1


def _service(tmp_path: Path, fake: FakePublicIndex, monkeypatch: pytest.MonkeyPatch,
             extra: str = "") -> InProcessService:
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", "pypi-health-token")
    path = tmp_path / "nk.toml"
    path.write_text(fake.config_toml() + f'[store]\npath = "s.sqlite3"\n{extra}')
    return InProcessService(cfg.load(path))


def test_healthz_makes_no_write_per_request(tmp_path: Path, fake_public: FakePublicIndex,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    service = _service(tmp_path, fake_public, monkeypatch)
    service.start()
    try:
        writes: list[str] = []
        real = service.store._write

        def counting() -> Any:
            writes.append(threading.current_thread().name)
            return real()

        me = threading.current_thread().name
        monkeypatch.setattr(service.store, "_write", counting)
        for _ in range(300):
            ok, _detail = service.healthy()
            assert ok
        assert writes.count(me) <= 1  # the write probe runs every few seconds, cached
    finally:
        service.shutdown(5)


#: What the store is asked for /healthz's answer: probes and the reasons it holds.
HEALTH_QUERIES = ("schema_version", "probe_writable", "probe_integrity", "conditions",
                  "budget_paused_until", "stuck_leases")


def test_healthz_requests_read_only_memory_while_the_health_loop_asks_the_store(
        tmp_path: Path, fake_public: FakePublicIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    service = _service(tmp_path, fake_public, monkeypatch)
    asked: list[tuple[str, str]] = []  # (thread, store method)

    def recording(method: str) -> Any:
        real = getattr(service.store, method)

        def call(*args: Any, **kwargs: Any) -> Any:
            asked.append((threading.current_thread().name, method))
            return real(*args, **kwargs)
        return call

    for method in HEALTH_QUERIES:
        monkeypatch.setattr(service.store, method, recording(method))
    service.start()
    try:
        wait_for(lambda: ("namekeeper-health", "conditions") in asked, 10, "the health loop")
        me = threading.current_thread().name
        del asked[:]
        for _ in range(300):  # a load balancer's flood
            ok, detail = service.healthy()
            assert ok and detail["store"]
        # Not one store query (let alone the write probe or the integrity check) on a request.
        assert [method for thread, method in asked if thread == me] == []
        # ...while the loop keeps the answer true: a condition raised turns it red, cleared green.
        service.store.raise_condition("public-index-unreachable", "the index is unreachable")
        wait_for(lambda: not service.healthy()[0], 10, "/healthz to turn red")
        assert "the index is unreachable" in service.healthy()[1]["reasons"]
        service.store.clear_condition("public-index-unreachable")
        wait_for(lambda: service.healthy()[0], 10, "/healthz to turn green again")
        assert [method for thread, method in asked if thread == me] == []
    finally:
        service.shutdown(5)


def test_healthz_is_green_the_moment_a_pause_ends_not_a_refresh_later(
        tmp_path: Path, fake_public: FakePublicIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    service = _service(tmp_path, fake_public, monkeypatch)
    service.health.refresh_every = 3600.0  # the loop asks the store once, at start, and then waits
    service.start()
    try:
        until = service.store.pause_budget(1.0)
        service.store.raise_condition("budget-paused", "the public index rate-limited new projects")
        service.health.refresh()  # the loop's answer, taken during the pause
        ok, detail = service.healthy()
        assert not ok and "rate-limited" in json.dumps(detail["reasons"])
        wait_for(lambda: time.time() > until, 10, "the pause to end")
        # The names are protected again (the worker may upload now): green, with no refresh.
        assert service.healthy() == (True, {"reasons": [], "store": True, "workers": True,
                                            "sources": True})
    finally:
        service.shutdown(5)


def test_healthz_without_its_loop_still_asks_the_store(
        tmp_path: Path, fake_public: FakePublicIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    # A service that was never started (embedded, or its loop stalled) gives a true answer too.
    service = _service(tmp_path, fake_public, monkeypatch)
    service.store.raise_condition("public-index-unreachable", "the index is unreachable")
    ok, detail = service.healthy()
    assert not ok and "the index is unreachable" in detail["reasons"]


def test_health_metrics_and_status_show_a_paused_budget_conditions_and_stuck_leases(
        tmp_path: Path, fake_public: FakePublicIndex, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    service = _service(tmp_path, fake_public, monkeypatch, '[queue]\nlease = "1s"\n')
    store = service.store
    store.pause_budget(600)
    store.raise_condition("budget-paused", "the public index rate-limited new projects")
    store.raise_condition("public-index-unreachable", "the public index has been unreachable")
    store.accept(NameEvent(name="acme-stuck", display_name="acme-stuck", source="t", index="x"))
    assert store.claim("a-dead-process", lease_seconds=-60) is not None
    ok, detail = service.healthy()
    assert not ok
    text = json.dumps(detail["reasons"])
    assert "rate-limited" in text and "unreachable" in text and "expired" in text
    metrics = service.metrics_text()
    assert "namekeeper_budget_left 0" in metrics
    assert "namekeeper_healthy 0" in metrics
    assert 'namekeeper_condition{key="public-index-unreachable"} 1' in metrics
    code = main(["--config", str(tmp_path / "nk.toml"), "status"])
    err = capsys.readouterr().err
    assert code == 1 and "attention: the public index has been unreachable" in err
    assert "rate-limited" in err  # the pause lasts: shown
    store.pause_budget(-1)  # ...and once it is over, not any more
    main(["--config", str(tmp_path / "nk.toml"), "status"])
    assert "rate-limited" not in capsys.readouterr().err


def test_a_schema_migrated_past_this_code_stops_workers_and_intake(
        tmp_path: Path, fake_public: FakePublicIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    # The PostgreSQL replicas' case (tests/test_replicas.py), on one host's file.
    service = _service(tmp_path, fake_public, monkeypatch)
    service.health.probe.every = 0.1
    service.start()
    try:
        wait_for(lambda: service.healthy()[0], 10, "/healthz to be green")
        known = service.store.schema_version().known
        with sqlite3.connect(tmp_path / "s.sqlite3") as db:
            db.execute("INSERT OR REPLACE INTO settings(key, value) "
                       "VALUES ('schema_version', ?)", (str(known + 1),))
        db.close()
        def red() -> dict[str, Any] | None:
            ok, detail = service.healthy()
            return None if ok else detail

        detail = wait_for(red, 10, "/healthz to turn red")
        assert detail["reasons"] == [
            f"the store at {tmp_path / 's.sqlite3'}: its schema is version {known + 1}, newer "
            f"than this namekeeper knows ({known}): upgrade namekeeper"], detail
        wait_for(lambda: not service.workers.alive(), 10, "the workers to stop")
        with pytest.raises(StoreUnusable, match="upgrade namekeeper"):
            service.sink.accept(NameEvent(name="acme-late", display_name="acme-late",
                                          source="t", index="x"))
        assert service.store.get("acme-late") is None
    finally:
        service.shutdown(5)


@pytest.mark.slow
def test_healthz_turns_red_at_once_when_the_store_stops_answering(
        tmp_path: Path, fake_public: FakePublicIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    # A database that stops answering holds the health loop in a connect timeout; a load
    # balancer's check must hear "red" instead of waiting with it.
    service = _service(tmp_path, fake_public, monkeypatch)
    service.health.stuck_after = 2.0
    answering = threading.Event()
    answering.set()
    real_conditions = service.store.conditions

    def conditions() -> Any:
        answering.wait()
        return real_conditions()

    monkeypatch.setattr(service.store, "conditions", conditions)
    service.start()
    try:
        wait_for(lambda: service.healthy()[0], 10, "/healthz to be green")
        answering.clear()

        def asked_in_time() -> tuple[bool, dict[str, Any]] | None:
            answers: list[tuple[bool, dict[str, Any]]] = []
            check = threading.Thread(target=lambda: answers.append(service.healthy()))
            check.start()
            check.join(5)
            assert answers, "/healthz waited for a store that does not answer"
            return answers[0] if not answers[0][0] else None

        ok, detail = wait_for(asked_in_time, 30, "/healthz to turn red")
        assert any("has not answered for" in r for r in detail["reasons"]), detail
        answering.set()
        wait_for(lambda: service.healthy()[0], 10, "/healthz to turn green again")
    finally:
        answering.set()
        service.shutdown(5)


@pytest.mark.slow
@pytest.mark.parametrize(("store", "skew", "words"), [
    ("postgresql", 90.0, "90 s ahead of"), ("postgresql", -90.0, "90 s behind"),
    ("sqlite", 90.0, None),  # one host's file: every process reads the same clock
])
def test_healthz_is_red_while_this_hosts_clock_is_far_from_the_databases(
        tmp_path: Path, fake_public: FakePublicIndex, monkeypatch: pytest.MonkeyPatch,
        request: pytest.FixtureRequest, store: str, skew: float, words: str | None) -> None:
    # A replica whose clock runs ahead reclaims the others' live leases (and spends the
    # budget's hour early): it must say so rather than quietly work names twice.
    monkeypatch.setenv("NAMEKEEPER_PUBLIC_TOKEN", "pypi-health-token")
    if store == "postgresql":
        postgres = request.getfixturevalue("postgres")
        monkeypatch.setenv("NAMEKEEPER_STORE_PASSWORD", postgres.password)
        table = f'url = "{postgres.new_database()}"'
    else:
        table = 'path = "s.sqlite3"'
    path = tmp_path / "nk.toml"
    path.write_text(fake_public.config_toml() + f"[store]\n{table}\n")
    offset = [skew]
    service = InProcessService(cfg.load(path), clock=lambda: time.time() + offset[0])
    service.start()
    try:
        if words is None:
            wait_for(lambda: service.healthy()[0], 10, "/healthz to be green")
            time.sleep(2 * service.health.refresh_every)  # a few answers later, still green
            assert service.healthy()[0], service.healthy()[1]
            return
        def red() -> dict[str, Any] | None:
            ok, detail = service.healthy()
            return None if ok else detail

        detail = wait_for(red, 10, "/healthz to turn red")
        assert [r for r in detail["reasons"] if words in r and "NTP" in r], detail
        offset[0] = 0.0  # NTP put it right
        wait_for(lambda: service.healthy()[0], 10, "/healthz to turn green again")
    finally:
        service.shutdown(5)
