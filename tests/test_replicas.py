"""Several `serve` replicas on one PostgreSQL: kill -9 and restarts, slow uploads, a database restart.

No load balancer: the test itself spreads the webhooks over the replicas
round-robin and, like Artifactory, sends a delivery again (to the next
replica) when it was not answered 202.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from _cli import TOKEN
from _fake_public import FakePublicIndex, FaultPlan
from _notify_servers import serving_http
from _postgres import PostgresServer, running_postgres
from _servers import Service, payload, wait_for
from namekeeper.model import NameEvent
from namekeeper.store.postgres import SCHEMA_VERSION, PooledConnection, PostgresStore

pytestmark = pytest.mark.slow


def replica(tmp_path: Path, name: str, fake: FakePublicIndex, url: str, password: str,
            extra: str) -> Service:
    """A `serve` process whose store is the shared database at ``url``."""
    home = tmp_path / name
    home.mkdir()
    svc = Service(home, fake.config_toml(), extra)
    svc.config.write_text(svc.config.read_text().replace('path = "state.sqlite3"',
                                                         f'url = "{url}"'))
    svc.env["NAMEKEEPER_STORE_PASSWORD"] = password
    return svc


def deliver(replicas: list[Service], body: bytes, start: int, *, deadline: float) -> int:
    """Post ``body`` to the replicas from ``start`` on until one answers 202; returns tries."""
    tries = 0
    while time.monotonic() < deadline:
        svc = replicas[(start + tries) % len(replicas)]
        tries += 1
        try:
            if svc.post(body).status_code == 202:
                return tries
        except requests.RequestException:
            pass  # killed, or restarting: the sender tries again elsewhere
        time.sleep(0.02)
    raise AssertionError("a delivery was never accepted")


def test_three_replicas_killed_at_random_reserve_each_name_once_within_the_budget(
        tmp_path: Path, postgres: PostgresServer) -> None:
    url = postgres.new_database()
    free = [f"acme-free-{i:02d}" for i in range(50)]
    taken = [f"acme-taken-{i}" for i in range(10)]
    limit = 40
    with FakePublicIndex(new_projects_per_hour=1000) as fake, serving_http() as alerts:
        fake.add_user("acme-security", TOKEN)
        for name in taken:
            fake.add_project(name, owners=["mallory"], versions=["1.0"])
        # Slow uploads: a third of them stall, so kills land in the middle of uploads.
        fake.faults = FaultPlan(rate=0.3, kinds=("stall",), paths=("/legacy/",),
                                stall_seconds=1.5, seed=12)
        extra = (f'[notify]\nurls = ["{alerts.url("/alerts")}"]\n'
                 f"[queue]\nnew-projects-per-hour = {limit}\n")
        replicas = [replica(tmp_path, f"r{i}", fake, url, postgres.password, extra)
                    for i in range(3)]
        for svc in replicas:
            svc.start()
        # 300 events: five files (versions) of each of 60 names, shuffled.
        events = [payload(n, version=f"1.{v}") for n in free + taken for v in range(5)]
        random.Random(7).shuffle(events)
        stop_killing = threading.Event()
        kills: Counter[int] = Counter()

        def killer() -> None:
            rng = random.Random(3)
            # Six kills at random moments, then the replicas are left to finish.
            while sum(kills.values()) < 6 and not stop_killing.wait(rng.uniform(1.0, 3.0)):
                victim = rng.randrange(len(replicas))
                replicas[victim].stop(signal.SIGKILL)
                kills[victim] += 1
                stop_killing.wait(rng.uniform(0.2, 1.5))
                replicas[victim].start()

        chaos = threading.Thread(target=killer, daemon=True)
        chaos.start()
        store = PostgresStore(url, password=postgres.password, create_schema=False)
        try:
            deadline = time.monotonic() + 300
            for i, body in enumerate(events):
                deliver(replicas, body, i, deadline=deadline)
            chaos.join(300)
            assert sum(kills.values()) == 6
            # The budget is spent once every slot is taken: by an upload, or by a process
            # killed between taking its slot and uploading (an unknown outcome keeps its slot).
            wait_for(lambda: len(store.budget_spent_at()) >= limit, 300,
                     "the budget's worth of slots spent")
            wait_for(lambda: len({_alert_name(r.body) for r in alerts.requests}) >= len(taken),
                     120, "an alert for every taken name")
            wait_for(lambda: store.queue_counts()["claimed"] == 0, 60, "no item left claimed")
            time.sleep(2)  # let any duplicate alert or upload show itself
        finally:
            stop_killing.set()
            chaos.join(30)
            for svc in replicas:
                if svc.proc is not None and svc.proc.poll() is None:
                    svc.stop()
            spent = store.budget_spent_at()
            store.close()
        created = [n for n in free if fake.project(n) is not None]
        assert len(spent) == limit
        # Never more in the window, counted on the index itself; at most one slot per worker
        # thread lost to each kill.
        assert limit - 2 * 6 <= len(created) <= limit
        assert all(fake.uploads[n] == 1 for n in created), {n: fake.uploads[n] for n in created}
        alerted = Counter(_alert_name(r.body) for r in alerts.requests)
        assert alerted == dict.fromkeys(taken, 1)  # each taken name alerted once, nothing else


def _alert_name(body: bytes) -> str:
    text = json.dumps(json.loads(body))
    found = [word for word in text.replace('"', " ").replace("/", " ").split()
             if word.startswith("acme-")]
    return found[0].rstrip(".,:;") if found else "?"


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A cluster of its own, since the test stops it (the session's one serves the others)."""
    with running_postgres() as server:
        yield server


def test_postgresql_restarted_under_load_never_acknowledges_an_unstored_event(
        tmp_path: Path, own_postgres: PostgresServer) -> None:
    url = own_postgres.new_database()
    with FakePublicIndex(new_projects_per_hour=1000) as fake:
        fake.add_user("acme-security", TOKEN)
        svc = replica(tmp_path, "r0", fake, url, own_postgres.password,
                      "[queue]\nnew-projects-per-hour = 1000\n").start()
        answers: dict[str, list[int]] = {}
        stop = threading.Event()

        def load() -> None:
            i = 0
            while not stop.is_set():
                name = f"acme-load-{i:04d}"
                try:
                    status = svc.post(payload(name)).status_code
                except requests.RequestException:
                    status = 0
                answers.setdefault(name, []).append(status)
                i += 1

        sender = threading.Thread(target=load, daemon=True)
        sender.start()
        try:
            wait_for(lambda: len(answers) >= 30, 60, "load before the restart")
            own_postgres.stop("immediate")
            wait_for(lambda: any(503 in a for a in answers.values()), 60,
                     "intake to answer 503 while the database is down")
            down_at = len(answers)
            time.sleep(1)
            own_postgres.start()
            wait_for(lambda: any(a[-1] == 202 for n, a in list(answers.items())[down_at + 1:]),
                     60, "intake to resume")
            wait_for(lambda: len(answers) >= down_at + 30, 60, "load after the restart")
        finally:
            stop.set()
            sender.join(30)
        # Every name answered 503 is sent again, as Artifactory would.
        for name, statuses in answers.items():
            if 202 not in statuses:
                assert svc.post(payload(name)).status_code == 202
        store = PostgresStore(url, password=own_postgres.password, create_schema=False)
        try:
            wait_for(lambda: all(fake.uploads[n] == 1 for n in answers), 120,
                     "every name reserved")
            journaled = {row[1] for row in store.snapshot().tables["events"]}  # key, name, ...
        finally:
            store.close()
            svc.stop()
        acknowledged = {n for n, statuses in answers.items() if 202 in statuses}
        assert acknowledged <= journaled  # never 202 for an event that was not stored
        assert set(answers) == journaled  # nothing lost once resent
        assert any(503 in statuses for statuses in answers.values())
        assert all(fake.uploads[n] == 1 for n in answers)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
@pytest.mark.parametrize("unchecked_for", [3600.0, 0.0], ids=["just-given-back", "sat-idle"])
def test_a_database_restart_between_two_requests_fails_neither(
        own_postgres: PostgresServer, mode: str, unchecked_for: float,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A restart takes a fifth of a second: the pooled connections came back moments before
    # it (too recently for a check by round trip) or long before; each is closed now, and
    # a request that draws one must neither fail nor wait for a check's backoff.
    monkeypatch.setattr(PooledConnection, "UNCHECKED_FOR", unchecked_for)
    store = PostgresStore(own_postgres.new_database(), password=own_postgres.password,
                          max_size=4)
    try:
        connections = [store._pool.getconn() for _ in range(4)]  # four in the pool, all used
        for conn in connections:
            conn.execute("SELECT 1")
            store._pool.putconn(conn)
        own_postgres.stop(mode)
        own_postgres.start()
        for i in range(8):  # each draws a connection the restart closed, or its replacement
            name = f"acme-after-{i}"
            assert store.accept(NameEvent(name=name, display_name=name, source="artifactory",
                                          index="pypi-local", key=name))
        assert store.claim("worker") is not None
    finally:
        store.close()


def test_a_lost_database_is_one_line_per_failure_a_red_healthz_and_a_resume(
        tmp_path: Path, own_postgres: PostgresServer) -> None:
    url = own_postgres.new_database()
    with FakePublicIndex(new_projects_per_hour=1000) as fake:
        fake.add_user("acme-security", TOKEN)
        svc = replica(tmp_path, "r0", fake, url, own_postgres.password, "").start()
        try:
            assert svc.post(payload("acme-before")).status_code == 202
            wait_for(lambda: fake.uploads["acme-before"] == 1, 60, "the first name reserved")
            own_postgres.stop("immediate")
            assert svc.post(payload("acme-during")).status_code == 503  # never a lost 202
            wait_for(lambda: requests.get(svc.url + "healthz", timeout=60).status_code == 503, 60,
                     "/healthz to turn red")
            healthz = requests.get(svc.url + "healthz", timeout=60).json()
            assert any("store" in reason for reason in healthz["reasons"])
            time.sleep(3)  # the workers, the heartbeat and the periodic jobs meet the lost store
            own_postgres.start()
            wait_for(lambda: requests.get(svc.url + "healthz", timeout=60).status_code == 200, 60,
                     "/healthz to turn green again")
            assert svc.post(payload("acme-after")).status_code == 202
            wait_for(lambda: fake.uploads["acme-after"] == 1, 60, "work to resume")
        finally:
            svc.stop()
        log = svc.log.read_text()
        assert "Traceback" not in log  # a lost store is one line per failure, never a traceback
        assert "unavailable" in log


def test_a_replica_stops_when_another_host_migrates_the_schema_past_it(
        tmp_path: Path, postgres: PostgresServer) -> None:
    # Checked only at start, a replica left running through an upgrade went on writing
    # to the newer schema with its old code (202s, uploads, /healthz green).
    url = postgres.new_database()
    database = url.rsplit("/", 1)[1]
    newer = SCHEMA_VERSION + 1
    with FakePublicIndex(new_projects_per_hour=1000) as fake:
        fake.add_user("acme-security", TOKEN)
        svc = replica(tmp_path, "r0", fake, url, postgres.password, "").start()
        try:
            assert svc.post(payload("acme-before")).status_code == 202
            wait_for(lambda: fake.uploads["acme-before"] == 1, 60, "the first name reserved")
            with postgres.connect(database) as conn:  # what a newer `store migrate` records
                conn.execute("UPDATE settings SET value = %s WHERE key = 'schema_version'",
                             (str(newer),))

            def red() -> dict[str, object] | None:
                answer = requests.get(svc.url + "healthz", timeout=10)
                return answer.json() if answer.status_code == 503 else None

            healthz = wait_for(red, 15, "/healthz to turn red")
            why = (f"its schema is version {newer}, newer than this namekeeper knows "
                   f"({SCHEMA_VERSION}): upgrade namekeeper")
            assert [r for r in healthz["reasons"] if why in r] == [
                f"the store at {url}: {why}"], healthz
            assert healthz["workers"] is False
            assert svc.post(payload("acme-after")).status_code == 503
            with postgres.connect(database) as conn:
                assert conn.execute("SELECT count(*) FROM events WHERE name = 'acme-after'"
                                    ).fetchone() == (0,)
        finally:
            svc.stop()
        log = svc.log.read_text()
        assert "Traceback" not in log
        assert log.count(f"{why}; the queue workers stop") == 1
